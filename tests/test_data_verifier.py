"""The data directory's Verifier as bytes stream past (issue 23's mutants): the early refusal of a body larger
than any genuine copy starts one byte past the limit, and only the first content byte is sniffed for HTML."""

import gzip
import hashlib

import pytest

from mnist_cli.data.datasets import FileSpec
from mnist_cli.data.directory import Verifier, verify_file
from mnist_cli.errors import ChecksumError


def _spec(content: bytes) -> FileSpec:
    return FileSpec("x-idx1-ubyte.gz", "test_labels", len(content), hashlib.sha256(content).hexdigest())


class _SmallWire(FileSpec):
    """A spec whose wire limit is below its content size, so that the wire limit is what a body meets first."""

    @property
    def max_download(self) -> int:
        return 100


def test_a_body_is_refused_one_byte_past_max_download_not_at_it():
    spec = _SmallWire("x-idx1-ubyte.gz", "test_labels", 10**6, "0" * 64)
    limit = spec.max_download
    at = Verifier(spec)
    at.update(b"\1" * (limit - 1))
    at.update(b"\1")  # exactly the limit: still read
    over = Verifier(spec)
    over.update(b"\1" * (limit - 3))
    with pytest.raises(ChecksumError) as info:
        over.update(b"\1" * 5)  # jumps past the limit without landing on it
    assert str(info.value) == f"x-idx1-ubyte.gz: more than {limit} bytes, larger than any genuine copy."


def test_only_the_first_content_byte_is_sniffed_for_html():
    content = b"  abc<def"
    v = Verifier(_spec(content))
    for piece in (b"  ", b"abc", b"<def"):  # a later piece may start with "<"
        v.update(piece)
    digest = v.finish()
    assert (digest.size, digest.sha256, digest.compressed) == (9, hashlib.sha256(content).hexdigest(), False)
    html = Verifier(_spec(content))
    with pytest.raises(ChecksumError, match="got an HTML page, not the file"):
        for piece in (b"  ", b"\n<html>"):
            html.update(piece)
        html.finish()


def test_verify_file_reports_both_sizes_and_hashes(tmp_path):
    content = b"\0\0\x08\x01\0\0\0\x02\x01\x02"
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(content[:-1]))
    with pytest.raises(ChecksumError) as info:
        verify_file(path, _spec(content))
    got = hashlib.sha256(content[:-1]).hexdigest()
    assert str(info.value) == (f"{path}: wrong content (9 bytes, SHA-256 {got[:16]}...; expected 10 bytes, "
                               f"{hashlib.sha256(content).hexdigest()[:16]}...).")
    path.write_bytes(gzip.compress(content))
    digest = verify_file(path, _spec(content))
    assert digest.compressed and digest.size == 10 and digest.file_size == path.stat().st_size
    assert digest.file_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
