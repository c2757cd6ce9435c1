"""`download` and the data it brings, through the command line: a file that is not even IDX is an error at
download time, every error about your own data names the fix, an automatic download says what it fetches
and from where in one line, and `download --json` names its fields by what they measure."""

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from mnist_cli.data.idx import encode_idx

pytestmark = pytest.mark.usefixtures("download_env")


def test_a_mirror_that_is_a_file_is_called_a_file(cli, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a directory")
    r = cli("download", "--mirror", notes, data_dir=tmp_path / "d", quiet=False)
    assert r.exit_code == 1 and "is a file, not a directory" in r.output and "--mirror" in r.output


def _replaced(tmp_path, tiny, name: str, content: bytes) -> Path:
    d = tiny.write(tmp_path / "data")
    (d / name).write_bytes(content)
    return d


@pytest.mark.parametrize("content, problem", [
    (gzip.compress(b"garbage, not an IDX file at all"), "not an IDX file"),
    ("truncated", "the gzip stream ends early"),
], ids=["garbage", "truncated"])
def test_download_refuses_a_file_that_is_not_idx_with_the_fix(cli, tmp_path, tiny_mnist, content, problem):
    name = tiny_mnist.spec.files[3].name
    if content == "truncated":
        own = encode_idx(np.arange(100, dtype=np.uint8) % 10)  # a valid IDX, cut short
        content = gzip.compress(own)[:-12]
    d = _replaced(tmp_path, tiny_mnist, name, content)
    r = cli("download", data_dir=d, quiet=False)
    assert r.exit_code == 1 and "kept as your own data" not in r.output
    assert problem in r.output and "mnist-softmax download --force" in r.output and "remove the file" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_a_valid_idx_file_of_your_own_is_still_kept(cli, tmp_path, tiny_mnist):
    name = tiny_mnist.spec.files[3].name
    d = _replaced(tmp_path, tiny_mnist, name, gzip.compress(encode_idx(np.zeros(10, np.uint8))))
    r = cli("download", data_dir=d, quiet=False)
    assert r.exit_code == 0 and "kept as your own data" in r.output


def test_every_error_about_your_own_data_names_the_fix(cli, tmp_path, tiny_mnist):
    name = tiny_mnist.spec.files[0].name  # images of the wrong shape: valid IDX, not MNIST's layout
    d = _replaced(tmp_path, tiny_mnist, name, gzip.compress(encode_idx(np.zeros((20, 32, 32), np.uint8))))
    r = cli("train", "--steps", "1", data_dir=d)
    assert r.exit_code == 1 and "(n, 28, 28)" in r.output
    assert "mnist-softmax download --force" in r.output and "remove the file" in r.output


def test_an_automatic_download_says_what_and_from_where_in_one_line(cli, tmp_path, tiny_mnist):
    mirror = tiny_mnist.write(tmp_path / "mirror")
    data = tmp_path / "data"
    r = cli("train", "--mirror", mirror, "--steps", "1", "--batch-size", "5", data_dir=data, offline=False, quiet=False)
    assert r.exit_code == 0, r.output
    lines = [x for x in r.stderr.splitlines() if x.startswith("Downloading")]
    assert len(lines) == 1 and f"into {data}" in lines[0] and str(mirror) in lines[0] and "4 files" in lines[0]
    again = cli("train", "--mirror", mirror, "--steps", "1", "--batch-size", "5", data_dir=data, offline=False,
                quiet=False)
    assert "Downloading" not in again.stderr  # nothing to fetch, nothing said
    quiet = cli("download", "--mirror", mirror, data_dir=tmp_path / "q", offline=False)
    assert quiet.exit_code == 0 and "Downloading" not in quiet.stderr


def test_download_json_names_sizes_and_hashes_by_what_they_measure(cli, tmp_path, tiny_mnist, monkeypatch):
    d = tiny_mnist.write(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    r = cli("download", "--json", data_dir="./data/../data/", quiet=False)
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["data_dir"] == str(d)
    for spec, f in zip(tiny_mnist.spec.files, report["files"]):
        on_disk = (d / spec.name).read_bytes()
        assert f["path"] == str(d / spec.name)
        assert f["file_size"] == len(on_disk) and f["file_sha256"] == hashlib.sha256(on_disk).hexdigest()
        assert f["content_size"] == len(gzip.decompress(on_disk))
        assert f["content_sha256"] == hashlib.sha256(gzip.decompress(on_disk)).hexdigest()
        assert "size" not in f and "sha256" not in f
