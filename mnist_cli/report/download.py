"""The report of ``mnist-softmax download``, worded from the document ``download --json`` prints.

    from mnist_cli.data.download import ensure_mnist
    from mnist_cli.report.download import format_download
    print(format_download(ensure_mnist(mirrors=["../shared/datasets/mnist"]).to_dict()))
    # MNIST in ...: all 4 files present and verified; nothing downloaded.
    #   train-images-idx3-ubyte.gz      9.7 MB  verified, already present
    #   ...
    # data: ... (verified MNIST)

A head line (what was verified and fetched), a line per file (its size and what happened to it, with
its notes: mirrors that failed first, a corrupt copy replaced), the notices of the cache check, and
the ``data:`` line every report ends with. Server text in notes is shown with its control characters
escaped.
"""

from __future__ import annotations

from mnist_cli.data.directory import printable
from mnist_cli.data.download import VERIFIED, size_text
from mnist_cli.data.load import describe_data
from mnist_cli.report.text import fitted

__all__ = ["format_download"]


@fitted
def format_download(doc: dict) -> str:
    """The text of ``mnist-softmax download`` from :meth:`mnist_cli.data.download.DownloadReport.to_dict`."""
    name, files = doc.get("title") or doc["dataset"].upper(), doc["files"]
    n = len(files)
    if not doc["downloaded"] and doc["verified"]:
        head = f"{name} in {doc['data_dir']}: all {n} files present and verified; nothing downloaded."
    else:
        verified = sum(f["status"] in VERIFIED for f in files)
        head = (f"{name} in {doc['data_dir']}: {verified} of {n} files verified, {doc['downloaded']} downloaded "
                f"({size_text(doc['bytes_fetched'])} fetched).")
    lines = [head]
    for f in files:
        what = {
            "present": "verified, already present",
            "downloaded": f"verified, downloaded from {printable(f['source'])}",
            "foreign": f"NOT {name}: kept as your own data "
            "(checked for IDX structure when loaded; a forced download replaces it)",
        }[f["status"]]
        lines.append(f"  {f['name']:<28} {size_text(f['file_size'] or 0):>9}  {what}")
        lines += [f"    note: {printable(note)}" for note in f["notes"]]
    lines += [f"  note: {printable(note)}" for note in doc["notices"]]
    lines.append(describe_data(doc["data_dir"], doc["verified"], doc.get("title") or "MNIST"))
    return "\n".join(lines)
