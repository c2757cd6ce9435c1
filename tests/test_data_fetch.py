"""The transport (:mod:`mnist_cli.data.fetch`) against loopback servers: real MNIST through the real code
path, then the fault matrix of issue 2 on a tiny dataset, one mirror at a time. Every case checks the exit
code, the message and that no bad or partial file is left at a final path."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import os
import time

import numpy as np
import pytest
from _download import TRAIN, assert_clean, download, routes
from _server import FaultServer, Reply

from mnist_cli import __version__
from mnist_cli.data import load_mnist
from mnist_cli.data.datasets import MNIST_TEST_CLASS_COUNTS, MNIST_TRAIN_CLASS_COUNTS
from mnist_cli.data.download import ensure_mnist

pytestmark = pytest.mark.usefixtures("download_env")


# Real MNIST ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_mnist_from_a_loopback_server(tmp_path, shared_mnist_dir):
    with FaultServer(directory=shared_mnist_dir) as server:
        first = download("--data-dir", tmp_path, "--mirror", server.url, "--json")
        assert first.exit_code == 0, first.output
        report = json.loads(first.output)
        assert report["verified"] is True and report["downloaded"] == 4
        assert report["bytes_fetched"] == sum(p.stat().st_size for p in shared_mnist_dir.iterdir())
        assert {f["source"] for f in report["files"]} == {server.url}
        assert set(server.user_agents) == {f"mnist-softmax/{__version__}"}

        second = download("--data-dir", tmp_path, "--mirror", server.url)
        assert second.exit_code == 0, second.output
        assert "all 4 files present and verified; nothing downloaded" in second.output
        assert sum(server.hits.values()) == 4

    mnist = load_mnist(tmp_path, offline=True)
    assert mnist.verified and mnist.train_images.shape == (60000, 784) and mnist.test_images.shape == (10000, 784)
    assert tuple(np.bincount(mnist.train_labels)) == MNIST_TRAIN_CLASS_COUNTS
    assert tuple(np.bincount(mnist.test_labels)) == MNIST_TEST_CLASS_COUNTS
    assert (mnist.train_labels[0], mnist.test_labels[0]) == (5, 7)


# Fault matrix: one mirror, the file never arrives -------------------------------------------------


@functools.cache
def _bomb() -> bytes:
    """64 MiB of zeros in 64 kB of gzip: small enough on the wire to reach the decompressor."""
    return gzip.compress(bytes(64 * 2**20), compresslevel=9)


def _half(reply_kwargs):
    return lambda body: Reply(body=body, send=len(body) // 2, **reply_kwargs)


FAILURES = {
    # case: (reply for the training images, given their gzip bytes; expected reason; requests made; extra env)
    "404": (lambda body: Reply(status=404), "HTTP 404 Not Found", 1, {}),
    "403": (lambda body: Reply(status=403), "HTTP 403 Forbidden", 1, {}),
    "500 every time": (lambda body: Reply(status=500), "HTTP 500 Internal Server Error; gave up after 2 attempts", 2, {}),
    "reset mid-body": (_half({"then": "reset"}), "(Connection reset by peer); gave up after 2 attempts", 2, {}),
    "stall": (_half({"then": "stall"}), "stalled: no data for 0.5 s (read timeout, MNIST_SOFTMAX_READ_TIMEOUT)", 2,
              {"MNIST_SOFTMAX_DEADLINE": "30"}),  # the read timeout must fire first, even on a busy machine
    "drip": (lambda body: Reply(body=body, drip=0.02), "too slow:", 1, {"MNIST_SOFTMAX_DEADLINE": "0.6"}),
    "truncated, Content-Length": (_half({}), "(the server closed the connection early)", 2, {}),
    "truncated, no Content-Length": (_half({"content_length": False}), "the gzip stream ends early", 1, {}),
    "wrong bytes": (lambda body: Reply(body=gzip.compress(b"\0\0\x08\x01" + bytes(50))), "wrong content", 1, {}),
    "HTML with 200": (
        lambda body: Reply(body=b"\n<!DOCTYPE html><html>Sign in</html>", headers={"Content-Type": "text/html"}),
        "got an HTML page, not the file",
        1,
        {},
    ),
    "gzip bomb": (
        lambda body: Reply(body=_bomb()),
        "content exceeds 15696 bytes (a gzip bomb",
        1,
        {},
    ),
    "oversized body": (lambda body: Reply(body=os.urandom(200_000)), "larger than any genuine copy", 1, {}),
    "oversized, no Content-Length": (
        lambda body: Reply(body=os.urandom(200_000), content_length=False),
        "content exceeds 15696 bytes",
        1,
        {},
    ),
    "undecodable Content-Encoding (not retried)": (
        lambda body: Reply(body=b"this is not gzip data", headers={"Content-Encoding": "gzip"}),
        "cannot decode the body (Content-Encoding: gzip;",
        1,
        {},
    ),
    "429, Retry-After beyond the deadline": (
        lambda body: Reply(status=429, headers={"Retry-After": "3600"}),
        "HTTP 429 Too Many Requests; retry in 3600 s would pass the deadline",
        1,
        {},
    ),
}


@pytest.mark.parametrize("case", FAILURES)
def test_fault_fails_cleanly_with_the_reason_and_the_manual_fix(case, tmp_path, tiny_mnist, monkeypatch):
    make_reply, reason, n_requests, env = FAILURES[case]
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with FaultServer(routes(tiny_mnist, **{TRAIN: make_reply(tiny_mnist.gz[TRAIN])})) as server:
        result = download("--data-dir", tmp_path, "--mirror", server.url)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == f"Error: Could not download {TRAIN}: every mirror failed."
    assert lines[1].startswith(f"  {server.url}: ") and reason in lines[1], lines[1]
    assert "--mirror DIR" in result.output and tiny_mnist.spec.file("train_images").sha256 in result.output
    assert "Traceback" not in result.output
    assert server.hits[f"/{TRAIN}"] == n_requests
    assert not (tmp_path / TRAIN).exists() and not (tmp_path / TRAIN.removesuffix(".gz")).exists()
    assert_clean(tmp_path, tiny_mnist.spec)


def test_gzip_bomb_never_fills_memory(tmp_path, tiny):
    import tracemalloc

    with FaultServer(routes(tiny, **{TRAIN: Reply(body=_bomb())})) as server:
        tracemalloc.start()
        with pytest.raises(Exception, match="every mirror failed"):
            ensure_mnist(tmp_path, mirrors=[server.url], spec=tiny.spec)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 16 * 2**20


# Fault matrix: the total deadline bounds what comes before the body too ---------------------------


PAD = "." * 400  # at 10 bytes/s, a head that would take 40 s to arrive


SLOW_HEADS = {
    "status line one byte at a time": Reply(slow_head="status", reason="OK" + PAD),
    "headers one byte at a time": Reply(slow_head="headers", headers={"X-Pad": PAD}),
    "endless 100 Continue": Reply(continues=True),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW_HEADS)
def test_deadline_bounds_status_line_headers_and_1xx(case, tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setenv("MNIST_SOFTMAX_DEADLINE", "1.5")  # the read timeout (0.5 s) never fires: bytes keep coming
    with FaultServer(routes(tiny_mnist, **{TRAIN: SLOW_HEADS[case]}), max_hold=60) as server:
        started = time.monotonic()
        result = download("--data-dir", tmp_path, "--mirror", server.url)
        elapsed = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert elapsed < 1.5 + 30, elapsed  # not until the server gives up (60 s); 30 s of slack for a loaded machine
    lines = result.output.splitlines()
    assert lines[1] == (f"  {server.url}: no complete response (status line and headers) within 1.5 s "
                        "(total deadline, MNIST_SOFTMAX_DEADLINE)")
    assert server.hits[f"/{TRAIN}"] == 1  # the deadline is spent: no retry
    assert_clean(tmp_path, tiny_mnist.spec)


# What a server says is escaped; a mirror's password never shown -----------------------------------


def test_server_text_is_escaped_and_mirror_passwords_redacted(tmp_path, tiny_mnist):
    fake = "\x1b[2J\x1b[HALL FILES VERIFIED OK\x9b2J"  # \x9b: the one-byte CSI of some terminals
    with FaultServer(routes(tiny_mnist, **{TRAIN: Reply(status=403, reason=fake)})) as server:
        url = server.url.replace("http://", "http://reader:s3cret@")
        result = download("--data-dir", tmp_path, "--mirror", url)
    assert result.exit_code == 1
    assert "\x1b" not in result.output and "\x9b" not in result.output and "s3cret" not in result.output
    assert result.output.splitlines()[1] == (
        f"  {server.url.replace('http://', 'http://reader:***@')}: HTTP 403 \\x1b[2J\\x1b[HALL FILES VERIFIED OK\\x9b2J"
    )
    bad_scheme = download("--data-dir", tmp_path, "--mirror", "ftp://reader:s3cret@example.com/")
    assert bad_scheme.exit_code == 1 and "s3cret" not in bad_scheme.output and "reader:***@" in bad_scheme.output


# Fault matrix: transient faults that are retried --------------------------------------------------


RECOVERIES = {
    "500 then success": [Reply(status=500)],
    "503 then success": [Reply(status=503)],
    "reset then success": [Reply(send=100, then="reset")],
    "truncated then success": [Reply(send=100, then="close")],
    "429 with Retry-After: 1": [Reply(status=429, headers={"Retry-After": "1"})],
}


@pytest.mark.parametrize("case", RECOVERIES)
def test_transient_fault_is_retried(case, tmp_path, tiny_mnist):
    body = tiny_mnist.gz[TRAIN]
    first = [dataclasses.replace(r, body=body) if r.status == 200 else r for r in RECOVERIES[case]]
    started = time.monotonic()
    with FaultServer(routes(tiny_mnist, **{TRAIN: [*first, Reply(body=body)]})) as server:
        result = download("--data-dir", tmp_path, "--mirror", server.url)
    assert result.exit_code == 0, result.output
    assert server.hits[f"/{TRAIN}"] == 2
    if "Retry-After" in case:
        assert time.monotonic() - started >= 1.0
    assert_clean(tmp_path, tiny_mnist.spec)
    assert (tmp_path / TRAIN).read_bytes() == body


# A local directory, a body encoded twice ----------------------------------------------------------


def test_local_directory_mirror_and_decompressed_files(tmp_path, tiny_mnist):
    mirror = tiny_mnist.write(tmp_path / "mirror", compressed=False)
    data_dir = tmp_path / "data"
    result = download("--data-dir", data_dir, "--mirror", mirror, "--offline")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in data_dir.iterdir() if not p.name.startswith(".")) == sorted(
        f.raw_name for f in tiny_mnist.spec.files
    )
    assert_clean(data_dir, tiny_mnist.spec)


def test_server_that_gzip_encodes_the_gz_again(tmp_path, tiny_mnist):
    body = tiny_mnist.gz[TRAIN]
    encoded = Reply(body=gzip.compress(body), headers={"Content-Encoding": "gzip"})
    with FaultServer(routes(tiny_mnist, **{TRAIN: encoded})) as server:
        result = download("--data-dir", tmp_path, "--mirror", server.url)
    assert result.exit_code == 0, result.output
    assert (tmp_path / TRAIN).read_bytes() == body
