"""Fetching a dataset into the data directory (:mod:`mnist_cli.data.download`, `mnist-softmax download`):
failing over between mirrors, files already present, offline mode, progress, and real processes
(concurrency, signals, leftovers of killed runs)."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _download import TRAIN, assert_clean, download, routes
from _server import FaultServer, Reply
from conftest import make_tiny

from mnist_cli.data.download import ensure_mnist
from mnist_cli.errors import DataNotFoundError
from mnist_cli.options import OFFLINE_ENV

pytestmark = pytest.mark.usefixtures("download_env")


# Failing over between mirrors ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


# Files already present ----------------------------------------------------------------------------


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


def test_missing_files_with_foreign_ones_name_both(tmp_path, tiny):
    make_tiny(seed=3).write(tmp_path)
    (tmp_path / TRAIN).unlink()
    with pytest.raises(DataNotFoundError, match=f"lacks {TRAIN}"):
        ensure_mnist(tmp_path, spec=tiny.spec)


# Offline ------------------------------------------------------------------------------------------


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


# Progress -----------------------------------------------------------------------------------------


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


# Real processes: concurrency and Ctrl-C -----------------------------------------------------------


LAUNCHER = Path(__file__).with_name("_cli.py")


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
