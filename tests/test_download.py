"""`mnist-softmax download` against loopback servers: real MNIST through the real code path, then the
fault matrix of issue 2 on a tiny dataset. Every case checks the exit code, the message and that no
bad or partial file is left at a final path."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _server import FaultServer, Reply
from click.testing import CliRunner
from conftest import as_the_cli_says, make_tiny

from mnist_cli import __version__
from mnist_cli.cli import main
from mnist_cli.data import load_mnist
from mnist_cli.data.datasets import MNIST_TEST_CLASS_COUNTS, MNIST_TRAIN_CLASS_COUNTS
from mnist_cli.data.directory import STATE_DIR, verify_file
from mnist_cli.data.download import ensure_mnist
from mnist_cli.data.mirrors import FetchSettings, offline_from_env, resolve_mirrors
from mnist_cli.errors import ConfigError, DataDirError, DataNotFoundError
from mnist_cli.options import DATA_DIR_ENV, MIRRORS_ENV, OFFLINE_ENV

pytestmark = pytest.mark.usefixtures("download_env")

TRAIN = "train-images-idx3-ubyte.gz"
LAUNCHER = Path(__file__).with_name("_cli.py")


def download(*args: str):
    return CliRunner().invoke(main, ["download", "--quiet", *map(str, args)])


def routes(tiny, **replies) -> dict:
    """Good replies for every file of ``tiny``, except those given (keyed by file name)."""
    good = {f"/{name}": Reply(body=body) for name, body in tiny.gz.items()}
    return good | {f"/{name}": reply for name, reply in replies.items()}


def assert_clean(data_dir: Path, spec) -> None:
    """No temporary file anywhere, and every file at a final path is genuine."""
    assert not [p for p in data_dir.rglob("*") if p.name.endswith(".part")]
    for f in spec.files:
        for path in (data_dir / f.name, data_dir / f.raw_name):
            if path.exists():
                verify_file(path, f)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Real MNIST ----------------------------------------------------------------------------------------


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


# Fault matrix: one mirror, the file never arrives --------------------------------------------------


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


# Fault matrix: the total deadline bounds what comes before the body too ------------------------------

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


@pytest.mark.slow
def test_silent_mirror_is_skipped_for_later_files_after_a_timeout(tmp_path, tiny_mnist):
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        with FaultServer(routes(tiny_mnist)) as good:
            report = ensure_mnist(tmp_path, mirrors=[url, good.url])
    notes = [note for f in report.files for note in f.notes]
    assert len(notes) == 1, notes  # only the first file waited for it
    assert notes[0] == f"{url}: no response within 0.5 s (read timeout); gave up after 2 attempts"
    assert report.verified


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


# Fault matrix: transient faults that are retried ---------------------------------------------------

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


def test_fail_over_from_a_bad_mirror_to_a_good_one(tmp_path, tiny_mnist):
    wrong = {f"/{name}": Reply(body=gzip.compress(b"not mnist")) for name in tiny_mnist.gz}
    with FaultServer(wrong) as bad, FaultServer(routes(tiny_mnist)) as good:
        result = download("--data-dir", tmp_path, "--mirror", bad.url, "--mirror", good.url, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["verified"] and {f["source"] for f in report["files"]} == {good.url}
    assert all(any(note.startswith(f"{bad.url}: ") and "wrong content" in note for note in f["notes"])
               for f in report["files"])
    assert_clean(tmp_path, tiny_mnist.spec)


def test_unreachable_mirror_is_tried_once_then_skipped(tmp_path, tiny_mnist):
    dead = f"http://127.0.0.1:{free_port()}/"
    with FaultServer(routes(tiny_mnist)) as good:
        report = ensure_mnist(tmp_path, mirrors=[dead, good.url])
    notes = [note for f in report.files for note in f.notes]
    assert notes[0].startswith(dead) and "Connection refused" in notes[0]
    assert len(notes) == 1  # the later files did not wait for the dead mirror again
    assert report.verified


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


# Files already present -----------------------------------------------------------------------------


def test_second_run_does_nothing_and_force_fetches_again(tmp_path, tiny_mnist):
    with FaultServer(routes(tiny_mnist)) as server:
        assert download("--data-dir", tmp_path, "--mirror", server.url).exit_code == 0
        again = download("--data-dir", tmp_path, "--mirror", server.url)
        assert "nothing downloaded" in again.output and sum(server.hits.values()) == 4
        forced = download("--data-dir", tmp_path, "--mirror", server.url, "--force")
        assert forced.exit_code == 0 and "4 downloaded" in forced.output
        assert sum(server.hits.values()) == 8


def test_corrupted_cached_file_is_detected_and_replaced(tmp_path, tiny_mnist):
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    with FaultServer(routes(tiny_mnist)) as server:
        assert download("--data-dir", tmp_path, "--mirror", server.url).exit_code == 0
        labels.write_bytes(gzip.compress(tiny_mnist.raw[labels.name][:-1] + b"\x09"))
        result = download("--data-dir", tmp_path, "--mirror", server.url, "--json")
        assert server.hits[f"/{labels.name}"] == 2
    assert result.exit_code == 0, result.output
    entry = next(f for f in json.loads(result.output)["files"] if f["name"] == labels.name)
    assert entry["status"] == "downloaded" and "replaced a corrupt file" in entry["notes"][0]
    assert labels.read_bytes() == tiny_mnist.gz[labels.name]


def test_users_own_dataset_is_never_overwritten(tmp_path, tiny_mnist):
    other = make_tiny(seed=1).write(tmp_path)
    before = {p.name: p.read_bytes() for p in other.iterdir()}
    with FaultServer(routes(tiny_mnist)) as server:
        result = download("--data-dir", tmp_path, "--mirror", server.url)
        assert result.exit_code == 0, result.output
        assert sum(server.hits.values()) == 0
        assert result.output.count("NOT TINY: kept as your own data") == 4
        (tmp_path / TRAIN).unlink()
        partial = download("--data-dir", tmp_path, "--mirror", server.url)
        assert sum(server.hits.values()) == 0
    assert partial.exit_code == 1 and "holds files that are not TINY" in partial.output
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == {
        k: v for k, v in before.items() if k != TRAIN
    }


# Configuration and environment ---------------------------------------------------------------------


def test_offline_without_files_fails_at_once_with_the_manual_fix(tmp_path, tiny_mnist, monkeypatch):
    with FaultServer(routes(tiny_mnist)) as server:
        flag = download("--data-dir", tmp_path, "--mirror", server.url, "--offline")
        monkeypatch.setenv(OFFLINE_ENV, "1")
        env = download("--data-dir", tmp_path, "--mirror", server.url)
        assert sum(server.hits.values()) == 0
    for result in (flag, env):
        assert result.exit_code == 1
        assert result.output.startswith("Error: TINY is missing from") and "forbids downloading" in result.output
        for f in tiny_mnist.spec.files:
            assert f"{f.name:<28} {f.size:>9} bytes  sha256 {f.sha256}" in result.output
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]


def test_offline_with_files_succeeds(tmp_path, tiny_mnist):
    tiny_mnist.write(tmp_path)
    result = download("--data-dir", tmp_path, "--offline")
    assert result.exit_code == 0 and "nothing downloaded" in result.output


def test_bad_scheme_is_refused_before_any_request(tmp_path, tiny_mnist, monkeypatch):
    with FaultServer(routes(tiny_mnist)) as server:
        result = download("--data-dir", tmp_path, "--mirror", "ftp://example.com/mnist/", "--mirror", server.url)
        monkeypatch.setenv(MIRRORS_ENV, "gopher://x/")
        from_env = download("--data-dir", tmp_path, "--mirror", server.url)
        assert sum(server.hits.values()) == 0
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: Mirror 'ftp://example.com/mnist/' uses the unsupported scheme 'ftp': give an http(s) URL "
        f"or a local directory (--mirror or {MIRRORS_ENV})."
    )
    assert from_env.exit_code == 1 and "'gopher'" in from_env.output


@pytest.mark.parametrize("url, reason", [("http://[bad/", "Invalid IPv6 URL"),
                                         ("https://host:99999/", "Port out of range 0-65535")])
def test_malformed_mirror_url_is_one_line_naming_the_mirror(url, reason, tmp_path, tiny_mnist, monkeypatch):
    flag = download("--data-dir", tmp_path, "--mirror", url)
    monkeypatch.setenv(MIRRORS_ENV, url)
    from_env = download("--data-dir", tmp_path)
    for result in (flag, from_env):
        assert result.exit_code == 1 and not isinstance(result.exception, ValueError), result.output
        assert result.output == f"Error: Mirror {url!r} is not a valid URL ({reason}); fix --mirror or {MIRRORS_ENV}.\n"


def test_unknown_users_home_in_a_mirror_is_one_line(tmp_path, tiny_mnist, monkeypatch):
    bad = "~nosuchuser-mnist/mirror"
    flag = download("--data-dir", tmp_path, "--mirror", bad)
    monkeypatch.setenv(MIRRORS_ENV, bad)
    from_env = download("--data-dir", tmp_path)
    for result in (flag, from_env):
        assert result.exit_code == 1 and not isinstance(result.exception, RuntimeError), result.output
        assert result.output == (f"Error: Cannot find the home directory of '~nosuchuser-mnist' in {bad!r}; "
                                 f"give a full path with --mirror or {MIRRORS_ENV}.\n")


def test_unwritable_data_dir_names_the_option_and_variable(tmp_path, tiny_mnist):
    # Tests run as root, for whom permissions do not block writing: a path below a regular file does.
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with FaultServer(routes(tiny_mnist)) as server:
        result = download("--data-dir", blocker / "data", "--mirror", server.url)
        with pytest.raises(DataDirError) as err:
            ensure_mnist(blocker, mirrors=[server.url])
        assert f"is not a directory; choose another with --data-dir or {DATA_DIR_ENV}" in as_the_cli_says(err.value)
        assert download("--data-dir", blocker).exit_code == 2  # click refuses a file for --data-dir
        assert sum(server.hits.values()) == 0
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: Cannot write to the data directory {blocker / 'data'} (Not a directory); "
        f"choose another with --data-dir or {DATA_DIR_ENV}."
    )


def test_mirror_order_and_validation(tmp_path):
    env = {MIRRORS_ENV: f"https://env.example/a  {tmp_path}"}
    mirrors = [str(m) for m in resolve_mirrors(["http://mine.example/x"], environ=env)]
    assert mirrors == [
        "http://mine.example/x/",
        "https://env.example/a/",
        str(tmp_path),
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ]
    assert len(resolve_mirrors(["https://ossci-datasets.s3.amazonaws.com/mnist/"], environ={})) == 2
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_mirrors([str(tmp_path / "nope")], environ={})
    with pytest.raises(ConfigError, match="has no host"):
        resolve_mirrors(["http:///x"], environ={})


def test_library_and_cli_agree_on_variable_names():
    from mnist_cli.data import directory as store
    from mnist_cli.data import download

    assert (store.DATA_DIR_ENV, download.MIRRORS_ENV, download.OFFLINE_ENV) == (DATA_DIR_ENV, MIRRORS_ENV, OFFLINE_ENV)


def test_fetch_settings_from_env():
    assert FetchSettings.from_env({"MNIST_SOFTMAX_RETRIES": "5", "MNIST_SOFTMAX_DEADLINE": "2.5"}) == FetchSettings(
        retries=5, deadline=2.5
    )
    for bad in ("-1", "soon", "nan"):
        with pytest.raises(ConfigError, match=f"MNIST_SOFTMAX_READ_TIMEOUT='{bad}'"):
            FetchSettings.from_env({"MNIST_SOFTMAX_READ_TIMEOUT": bad})


@pytest.mark.parametrize("var, text", [
    ("MNIST_SOFTMAX_READ_TIMEOUT", "0"), ("MNIST_SOFTMAX_CONNECT_TIMEOUT", "0"), ("MNIST_SOFTMAX_CONNECT_TIMEOUT", "inf"),
    ("MNIST_SOFTMAX_READ_TIMEOUT", "1e300"), ("MNIST_SOFTMAX_DEADLINE", "0"), ("MNIST_SOFTMAX_DEADLINE", "inf"),
    ("MNIST_SOFTMAX_BACKOFF", "-0.1"), ("MNIST_SOFTMAX_BACKOFF", "inf"), ("MNIST_SOFTMAX_BACKOFF_MAX", "1e300"),
    ("MNIST_SOFTMAX_RETRIES", "-1"), ("MNIST_SOFTMAX_RETRIES", "1e9"), ("MNIST_SOFTMAX_RETRIES", "1000000"),
])
def test_unusable_fetch_setting_is_one_line_naming_the_variable(var, text, tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setenv(var, text)
    with FaultServer(routes(tiny_mnist)) as server:
        result = download("--data-dir", tmp_path, "--mirror", server.url)
        assert sum(server.hits.values()) == 0
    assert result.exit_code == 1 and not isinstance(result.exception, (ValueError, OverflowError)), result.output
    assert result.output.startswith(f"Error: {var}={text!r}: must be ") and result.output.endswith("; fix or unset it.\n")
    assert len(result.output.splitlines()) == 1


def test_fetch_settings_bounds():
    assert FetchSettings.from_env({"MNIST_SOFTMAX_BACKOFF": "0", "MNIST_SOFTMAX_RETRIES": "0"}).backoff == 0
    assert FetchSettings.from_env({"MNIST_SOFTMAX_DEADLINE": "86400"}).deadline == 86400
    with pytest.raises(ConfigError, match=r"FetchSettings\(read_timeout=0\): must be a number of seconds, more than 0"):
        FetchSettings(read_timeout=0)
    with pytest.raises(ConfigError, match="retries"):
        FetchSettings(retries=2.5)


def test_bad_offline_variable_is_a_config_error(tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setenv(OFFLINE_ENV, "maybe")
    with pytest.raises(ConfigError, match=OFFLINE_ENV):
        ensure_mnist(tmp_path)


OFFLINE_TEXTS = {"1": True, "0": False, "true": True, "FALSE": False, "Yes": True, "no": False, "y": True, "N": False,
                 "t": True, "F": False, "on": True, "OFF": False, " yes ": True, "": False}


@pytest.mark.parametrize("text", [*OFFLINE_TEXTS, "maybe", "2"])
def test_offline_variable_means_the_same_to_the_library_and_the_cli(text, tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setenv(OFFLINE_ENV, text)
    with FaultServer(routes(tiny_mnist)) as server:
        result = download("--data-dir", tmp_path, "--mirror", server.url)
    if text not in OFFLINE_TEXTS:
        with pytest.raises(ConfigError, match=f"{OFFLINE_ENV}={text!r} is not a boolean; use 1 or 0"):
            offline_from_env()
        assert result.exit_code == 2 and f"env var: '{OFFLINE_ENV}'" in result.output, result.output
    elif OFFLINE_TEXTS[text]:
        assert offline_from_env() is True
        assert result.exit_code == 1 and "forbids downloading" in result.output, result.output
    else:
        assert offline_from_env() is False
        assert result.exit_code == 0 and "4 downloaded" in result.output, result.output


def test_progress_bar_only_when_stderr_is_a_terminal(tmp_path, tiny, monkeypatch, capsys):
    with FaultServer(routes(tiny)) as server:
        monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # the bar is drawn on stderr: stdout does not count
        ensure_mnist(tmp_path / "a", mirrors=[server.url], spec=tiny.spec, progress=True)
        assert TRAIN not in capsys.readouterr().err
        monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
        ensure_mnist(tmp_path / "b", mirrors=[server.url], spec=tiny.spec, progress=False)
        assert TRAIN not in capsys.readouterr().err
        ensure_mnist(tmp_path / "c", mirrors=[server.url], spec=tiny.spec, progress=True)
        assert TRAIN in capsys.readouterr().err


def test_missing_files_with_foreign_ones_name_both(tmp_path, tiny):
    make_tiny(seed=3).write(tmp_path)
    (tmp_path / TRAIN).unlink()
    with pytest.raises(DataNotFoundError, match=f"lacks {TRAIN}"):
        ensure_mnist(tmp_path, spec=tiny.spec)


# Real processes: concurrency and Ctrl-C -------------------------------------------------------------


def _spec_file(tmp_path: Path, tiny) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(dataclasses.asdict(tiny.spec)))
    return path


def _env(**extra) -> dict:
    from conftest import FAST_FETCH_ENV

    env = {k: v for k, v in os.environ.items() if not k.startswith("MNIST_SOFTMAX_")}
    return env | FAST_FETCH_ENV | extra


@pytest.mark.slow
@pytest.mark.parametrize("lock", [True, False], ids=["with lock", "without lock"])
def test_four_processes_download_into_one_directory(tmp_path, tiny, lock):
    data_dir = tmp_path / "data"
    slow = {f"/{name}": Reply(body=body, delay=0.15) for name, body in tiny.gz.items()}
    env = _env() if lock else _env(TEST_NO_LOCK="1")
    with FaultServer(slow) as server:
        cmd = [sys.executable, str(LAUNCHER), str(_spec_file(tmp_path, tiny)), "download", "--quiet",
               "--data-dir", str(data_dir), "--mirror", server.url]
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
        outcomes = [(p.wait(timeout=60), p.stderr.read().decode()) for p in procs]
        for p in procs:
            p.stdout.close()
            p.stderr.close()
    assert outcomes == [(0, "")] * 4
    assert_clean(data_dir, tiny.spec)
    assert all((data_dir / f.name).exists() for f in tiny.spec.files)
    if lock:  # the others waited for the first and found the files there
        assert set(server.hits.values()) == {1}


def _on_terminals(cmd: list[str], env: dict) -> tuple[int, str, str]:
    """Run ``cmd`` with stdout and stderr on two pseudo-terminals; its exit code, stdout and stderr."""
    import fcntl
    import pty
    import struct
    import termios
    import threading

    ends = [pty.openpty() for _ in range(2)]
    for _, slave in ends:  # a new pty is 0 columns wide, and tqdm draws nothing in 0 columns
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=ends[0][1], stderr=ends[1][1])
    texts = [b"", b""]

    def drain(i: int) -> None:
        while True:
            try:
                chunk = os.read(ends[i][0], 4096)
            except OSError:  # EIO: the child closed its side
                return
            if not chunk:
                return
            texts[i] += chunk

    for _, slave in ends:
        os.close(slave)
    readers = [threading.Thread(target=drain, args=(i,)) for i in range(2)]
    for r in readers:
        r.start()
    code = proc.wait(timeout=60)
    for r in readers:
        r.join(timeout=10)
    for master, _ in ends:
        os.close(master)
    return code, texts[0].decode(), texts[1].decode()


@pytest.mark.parametrize("flags, bar", [([], True), (["--json"], False), (["--quiet"], False)])
def test_cli_progress_bar_on_a_terminal_stderr_unless_json_or_quiet(flags, bar, tmp_path, tiny):
    with FaultServer(routes(tiny)) as server:
        cmd = [sys.executable, str(LAUNCHER), str(_spec_file(tmp_path, tiny)), "download", *flags,
               "--data-dir", str(tmp_path / "data"), "--mirror", server.url]
        code, out, err = _on_terminals(cmd, _env())
    assert code == 0, err
    assert (TRAIN in err) is bar, err
    if "--json" in flags:
        assert json.loads(out)["downloaded"] == 4


@contextlib.contextmanager
def _stuck_download(tmp_path: Path, tiny, data_dir: Path, *flags: str):
    """A `download` subprocess halfway through the training images, its .part file on disk; and the server."""
    body = tiny.gz[TRAIN]
    stuck = Reply(body=body, send=len(body) // 2, then="stall")
    with FaultServer(routes(tiny, **{TRAIN: stuck})) as server:
        cmd = [sys.executable, str(LAUNCHER), str(_spec_file(tmp_path, tiny)), "download", "--quiet", *flags,
               "--data-dir", str(data_dir), "--mirror", server.url]
        proc = subprocess.Popen(cmd, env=_env(MNIST_SOFTMAX_READ_TIMEOUT="30"), stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while not (server.bytes_sent and list(data_dir.glob(".*.part"))):
            assert time.monotonic() < deadline and proc.poll() is None, "the download never started"
            time.sleep(0.02)
        yield proc, server


@pytest.mark.parametrize("sig, code, message", [(signal.SIGINT, 130, "Interrupted."), (signal.SIGTERM, 143, "Terminated.")],
                         ids=["Ctrl-C", "SIGTERM"])
def test_signal_mid_download_exits_without_a_partial_file(tmp_path, tiny, sig, code, message):
    data_dir = tmp_path / "data"
    with _stuck_download(tmp_path, tiny, data_dir) as (proc, server):
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == code
    assert err.decode().strip() == message
    assert not list(data_dir.glob(".*.part")) and not (data_dir / TRAIN).exists()


def test_leftover_of_a_killed_download_force_is_swept_by_the_next_download(tmp_path, tiny):
    data_dir = tmp_path / "data"
    with FaultServer(routes(tiny)) as server:
        ensure_mnist(data_dir, mirrors=[server.url], spec=tiny.spec)
    with _stuck_download(tmp_path, tiny, data_dir, "--force") as (proc, server):
        proc.kill()  # SIGKILL: no clean-up can run
        proc.communicate(timeout=15)
    assert list(data_dir.glob(".*.part"))
    report = ensure_mnist(data_dir, spec=tiny.spec, offline=True, rehash=True)  # every file present: nothing to fetch
    assert report.verified and not report.downloaded
    assert not [p for p in data_dir.rglob("*") if p.name.endswith(".part")]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_sweep_removes_only_the_tools_leftovers_in_every_directory_it_writes(tmp_path, tiny_mnist):
    state, cache = tmp_path / STATE_DIR, tmp_path / STATE_DIR / "cache"
    with FaultServer(routes(tiny_mnist)) as server:
        assert download("--data-dir", tmp_path, "--mirror", server.url).exit_code == 0
        (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()  # so that this run fetches, under the lock
        cache.mkdir(parents=True, exist_ok=True)
        dead = _dead_pid()
        leftovers = [tmp_path / f".{TRAIN}.mnist-softmax-{dead}-abcd1234.part",
                     state / f".stamps.json.mnist-softmax-{dead}-_x_y_z_w.part",
                     cache / f".train-images-idx3-ubyte.0123.npy.mnist-softmax-{dead}-zzzzzzzz.part"]
        kept = [tmp_path / ".thesis.part", state / ".thesis.part", cache / "notes.part",
                tmp_path / f".{TRAIN}.mnist-softmax-{os.getpid()}-abcd1234.part"]  # a live process's file
        for path in leftovers + kept:
            path.write_text("x")
        result = download("--data-dir", tmp_path, "--mirror", server.url)
    assert result.exit_code == 0, result.output
    assert [p for p in leftovers if p.exists()] == []
    assert [p for p in kept if not p.exists()] == []


HOLD_LOCK = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from mnist_cli.data.directory import locked\n"
    "with locked(Path(sys.argv[1])):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(float(sys.argv[2]))\n"
)


def _hold_lock(data_dir: Path, seconds: float) -> subprocess.Popen:
    """Another process holding the data directory's lock for ``seconds`` (a stopped download, say)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(data_dir), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    return proc


@pytest.mark.slow
def test_lock_wait_names_the_holder_then_gives_up_in_one_line(tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setenv("MNIST_SOFTMAX_LOCK_TIMEOUT", "2")
    holder = _hold_lock(tmp_path, 60)
    try:
        with FaultServer(routes(tiny_mnist)) as server:
            started = time.monotonic()
            result = download("--data-dir", tmp_path, "--mirror", server.url)
            elapsed = time.monotonic() - started
            assert sum(server.hits.values()) == 0
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert result.exit_code == 1 and elapsed < 2 + 30, (result.output, elapsed)  # the holder would hold 60 s
    lines = result.output.splitlines()
    assert lines[0] == (f"Waiting for {tmp_path}: process {holder.pid} holds its lock; giving up after 2 s "
                        "(MNIST_SOFTMAX_LOCK_TIMEOUT).")
    assert lines[1].startswith(f"Error: Gave up after 2 s waiting for {tmp_path}: process {holder.pid} holds its lock")
    assert lines[1].endswith("set MNIST_SOFTMAX_LOCK_TIMEOUT to wait longer, or choose another --data-dir.")
    assert len(lines) == 2


@pytest.mark.slow
def test_lock_wait_ends_when_the_holder_is_done(tmp_path, tiny_mnist):
    holder = _hold_lock(tmp_path, 1.5)
    try:
        with FaultServer(routes(tiny_mnist)) as server:
            result = download("--data-dir", tmp_path, "--mirror", server.url)
    finally:
        holder.wait(timeout=30)
        holder.stdout.close()
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Waiting for {tmp_path}: process {holder.pid} holds its lock")
    assert "4 downloaded" in result.output


def test_lock_timeout_is_a_patience_setting():
    assert FetchSettings().lock_timeout == 600
    assert FetchSettings.from_env({"MNIST_SOFTMAX_LOCK_TIMEOUT": "5"}).lock_timeout == 5
    with pytest.raises(ConfigError, match="MNIST_SOFTMAX_LOCK_TIMEOUT='forever'"):
        FetchSettings.from_env({"MNIST_SOFTMAX_LOCK_TIMEOUT": "forever"})
