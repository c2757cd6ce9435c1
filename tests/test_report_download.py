"""The report of `mnist-softmax download` (:mod:`mnist_cli.report.download`), built from the document it reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _download import download

from mnist_cli.data.download import DownloadReport, FileReport, size_text
from mnist_cli.report.download import format_download

pytestmark = pytest.mark.usefixtures("download_env")

ROOT = Path("/data/tiny")


def _present(name: str, size: int) -> FileReport:
    return FileReport(name, "present", str(ROOT / name), file_size=size, content_size=size * 2)


def test_everything_present_is_one_head_line_a_line_per_file_and_the_data_line():
    doc = DownloadReport("tiny", ROOT, [_present("a.gz", 9_719_438), _present("b.gz", 28_881)]).to_dict()
    assert format_download(doc) == (
        "TINY in /data/tiny: all 2 files present and verified; nothing downloaded.\n"
        "  a.gz                            9.7 MB  verified, already present\n"
        "  b.gz                           28.9 kB  verified, already present\n"
        "data: /data/tiny (verified MNIST)"
    )


def test_downloads_foreign_files_notes_and_notices_each_say_what_happened():
    fetched = FileReport("a.gz", "downloaded", str(ROOT / "a.gz"), file_size=4542, source="http://m.example/\x1b[2J",
                         bytes_fetched=4542, notes=["http://bad.example/: HTTP 500 \x1b[H"])
    foreign = FileReport("b.gz", "foreign", str(ROOT / "b.gz"), file_size=1_648_877)
    doc = DownloadReport("tiny", ROOT, [fetched, foreign, _present("c.gz", 100_000)],
                         notices=["cache c.npy failed its check: removed"]).to_dict()
    assert format_download(doc).splitlines() == [
        "TINY in /data/tiny: 2 of 3 files verified, 1 downloaded (4.5 kB fetched).",
        "  a.gz                            4.5 kB  verified, downloaded from http://m.example/\\x1b[2J",
        "    note: http://bad.example/: HTTP 500 \\x1b[H",
        "  b.gz                            1.6 MB  NOT TINY: kept as your own data (checked for IDX structure when "
        "loaded; a forced download replaces it)",
        "  c.gz                            0.1 MB  verified, already present",
        "  note: cache c.npy failed its check: removed",
        "data: /data/tiny (your own files, NOT verified MNIST)",
    ]


def test_nothing_downloaded_but_not_all_verified_says_how_many_are():
    doc = DownloadReport("tiny", ROOT, [FileReport("a.gz", "foreign", str(ROOT / "a.gz"), file_size=10)]).to_dict()
    head = format_download(doc).splitlines()[0]
    assert head == "TINY in /data/tiny: 0 of 1 files verified, 0 downloaded (0.0 kB fetched)."


@pytest.mark.parametrize("n, text", [(0, "0.0 kB"), (4542, "4.5 kB"), (99_999, "100.0 kB"), (100_000, "0.1 MB"),
                                     (9_719_438, "9.7 MB")])
def test_sizes_are_kilobytes_below_100_kb_then_megabytes(n, text):
    assert size_text(n) == text


def test_the_cli_prints_the_report_of_the_document_it_prints_with_json(tmp_path, tiny_mnist):
    mirror = tiny_mnist.write(tmp_path / "mirror")
    data_dir = tmp_path / "data"
    for flags in (["--force"], []):  # every file downloaded, then every file present
        text = download("--data-dir", data_dir, "--mirror", mirror, *flags)
        doc = download("--data-dir", data_dir, "--mirror", mirror, "--json", *flags)
        assert text.exit_code == 0 and doc.exit_code == 0, (text.output, doc.output)
        assert text.output == format_download(json.loads(doc.output)) + "\n"
        assert ("4 downloaded" in text.output) is bool(flags)
