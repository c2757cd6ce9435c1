"""A redirect whose ``Location`` holds bytes that are not UTF-8 fails that mirror, not the download (issue 21, 12)."""

import json

from _download import assert_clean, download, routes
from _server import FaultServer, Reply


def test_a_redirect_to_a_non_utf8_location_moves_on_to_the_next_mirror(tmp_path, tiny_mnist):
    bad = {f"/{name}": Reply(status=302, headers={"Location": "/\xff\xfe-elsewhere.gz"}) for name in tiny_mnist.gz}
    with FaultServer(bad) as broken, FaultServer(routes(tiny_mnist)) as good:
        result = download("--data-dir", tmp_path, "--mirror", broken.url, "--mirror", good.url, "--json")
    assert result.exit_code == 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    report = json.loads(result.output)
    assert report["verified"] and {f["source"] for f in report["files"]} == {good.url}
    assert all(any(note.startswith(f"{broken.url}: ") for note in f["notes"]) for f in report["files"])
    assert_clean(tmp_path, tiny_mnist.spec)
