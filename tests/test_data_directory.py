"""The data directory (:mod:`mnist_cli.data.directory`): where it is, one-line errors when it cannot be
used, the sweep of what killed runs left, and the lock that makes other processes wait."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _download import TRAIN, download, routes
from _server import FaultServer
from click.testing import CliRunner
from conftest import as_the_cli_says

from mnist_cli.cli import main
from mnist_cli.data import load_mnist
from mnist_cli.data.directory import STATE_DIR, resolve_data_dir
from mnist_cli.data.download import ensure_mnist
from mnist_cli.errors import ConfigError, DataDirError
from mnist_cli.options import DATA_DIR_ENV

pytestmark = pytest.mark.usefixtures("download_env")


# Where it is --------------------------------------------------------------------------------------


def test_resolve_data_dir_order(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv(DATA_DIR_ENV)
    default = resolve_data_dir()
    assert default.parts[-2:] == ("mnist-softmax", "mnist") and default.is_absolute()


def test_unknown_users_home_in_the_data_dir_is_one_line(tmp_path, tiny_mnist, monkeypatch):
    bad = "~nosuchuser-mnist/data"
    want = (f"Cannot find the home directory of '~nosuchuser-mnist' in {bad!r}; "
            f"give a full path with --data-dir or {DATA_DIR_ENV}.")
    with pytest.raises(ConfigError) as err:
        load_mnist(bad, offline=True)
    assert as_the_cli_says(err.value) == want
    mirror = str(tiny_mnist.write(tmp_path / "mirror"))
    flag = CliRunner().invoke(main, ["download", "--quiet", "--data-dir", bad, "--mirror", mirror])
    monkeypatch.setenv(DATA_DIR_ENV, bad)
    env = CliRunner().invoke(main, ["download", "--quiet", "--mirror", mirror])
    for result in (flag, env):
        assert result.exit_code == 1 and not isinstance(result.exception, RuntimeError), result.output
        assert result.output == f"Error: {want}\n"


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


# Leftovers of killed runs -------------------------------------------------------------------------


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


# The lock -----------------------------------------------------------------------------------------


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
