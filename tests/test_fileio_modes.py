"""What fileio leaves on disk besides the content (issue 23's mutants): a normal file's mode under the
user's umask (which it puts back), a killed save's leftovers swept but a running writer's file kept, a
symlink loop refused with ELOOP, and NumPy values in JSON as numbers."""

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_cli.errors import OutputError
from mnist_cli.fileio import atomic_write, check_writable, jsonable, output_target, sweep


@pytest.fixture
def umask():
    """Set the process umask for one test (``umask(0o027)``) and put the caller's back after it."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield os.umask
    os.umask(saved)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077, 0o002])
def test_a_written_file_has_a_normal_files_mode_and_the_umask_is_kept(tmp_path, umask, mask):
    umask(mask)
    target = tmp_path / "model.npz"
    with atomic_write(target, "{save} path") as fh:
        fh.write(b"x")
    assert _mode(target) == 0o666 & ~mask  # as open(..., "w") would give, not mkstemp's 0600
    assert os.umask(mask) == mask  # reading the umask did not change it


def test_a_replaced_file_gets_the_normal_mode_not_the_old_one(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "metrics.json"
    target.write_text("old")
    target.chmod(0o4777)  # setuid, world-writable: nothing of it survives the replacement
    with atomic_write(target, "{x} path") as fh:
        fh.write(b"new")
    assert _mode(target) == 0o644


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_saves_leftovers_are_swept_when_the_target_is_written_again(tmp_path):
    target = tmp_path / "model.npz"
    mine = tmp_path / f".model.npz.mnist-softmax-{_dead_pid()}-abcd_123.part"
    other = tmp_path / f".other.npz.mnist-softmax-{_dead_pid()}-abcd_123.part"  # another target's: kept
    stranger = tmp_path / ".model.npz.something-else.part"  # not named by this tool: kept
    for p in (mine, other, stranger):
        p.write_bytes(b"half a model")
    with atomic_write(target, "{save} path") as fh:
        fh.write(b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.npz", other.name, stranger.name])


def test_sweep_keeps_the_file_of_a_running_writer(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".model.npz.mnist-softmax-{proc.pid}-abcd_123.part"
        ours = tmp_path / f".model.npz.mnist-softmax-{os.getpid()}-abcd_123.part"
        dead = tmp_path / f".model.npz.mnist-softmax-{_dead_pid()}-abcd_123.part"
        for p in (live, ours, dead):
            p.write_bytes(b"being written")
        sweep(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, ours.name])
        sweep(tmp_path, "model.npz")
        assert live.exists() and ours.exists()
    finally:
        proc.kill()
        proc.wait()


def test_sweep_never_removes_a_directory_of_that_name(tmp_path):
    d = tmp_path / f".model.npz.mnist-softmax-{_dead_pid()}-abcd_123.part"
    d.mkdir()
    sweep(tmp_path)
    assert d.is_dir()


@pytest.mark.parametrize("loop", ["self", "pair"])
def test_a_symlink_loop_at_an_output_path_fails_with_eloop_and_stays(tmp_path, loop):
    path = tmp_path / "out.json"
    if loop == "self":
        path.symlink_to("out.json")
    else:
        (tmp_path / "b").symlink_to("out.json")
        path.symlink_to("b")
    reason = os.strerror(errno.ELOOP)
    with pytest.raises(OSError) as info:
        output_target(path)
    assert info.value.errno == errno.ELOOP
    with pytest.raises(OutputError) as info:
        check_writable(path, "{json_out} path")
    assert str(info.value).startswith(f"cannot write {path}: {reason}; choose a writable ")
    with pytest.raises(OutputError) as info, atomic_write(path, "{json_out} path") as fh:
        fh.write(b"{}")
    assert str(info.value).startswith(f"cannot write {path}: {reason}; choose a writable ")
    assert path.is_symlink() and os.readlink(path) == ("out.json" if loop == "self" else "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out.json"] if loop == "self" else ["b", "out.json"])


def test_the_cli_refuses_a_symlink_loop_as_save_path_before_any_work(cli, tmp_path):
    path = tmp_path / "model.npz"
    path.symlink_to("model.npz")
    r = cli("train", "--save", path, data_dir=tmp_path / "none")
    assert r.exit_code == 1, r.output
    assert r.output == f"Error: cannot write {path}: {os.strerror(errno.ELOOP)}; choose a writable --save path\n"
    assert path.is_symlink()


def test_jsonable_turns_numpy_values_into_json_numbers():
    doc = {"f32": np.float32(0.5), "f64": np.float64(-2.25), "i64": np.int64(3), "b": np.bool_(True),
           "arr": np.array([[1.0, np.nan], [np.inf, -np.inf]]), "t": (np.int8(-1), 2), 7: [np.uint8(255)]}
    text = json.dumps(jsonable(doc), allow_nan=False)
    assert json.loads(text) == {"f32": 0.5, "f64": -2.25, "i64": 3, "b": True,
                                "arr": [[1.0, "NaN"], ["Infinity", "-Infinity"]], "t": [-1, 2], "7": [255]}
    assert jsonable(float("nan")) == "NaN" and jsonable(np.float32(np.inf)) == "Infinity"
    assert jsonable(None) is None and jsonable("x") == "x"


def test_a_leftover_that_cannot_be_removed_does_not_stop_the_save(tmp_path, monkeypatch):
    leftover = tmp_path / f".model.npz.mnist-softmax-{_dead_pid()}-abcd_123.part"
    leftover.write_bytes(b"half")
    unlink = os.unlink

    def refuse(path, *a, **kw):
        if str(path) == str(leftover):
            raise PermissionError(1, "Operation not permitted", str(path))
        return unlink(path, *a, **kw)

    monkeypatch.setattr(os, "unlink", refuse)
    with atomic_write(tmp_path / "model.npz", "{save} path") as fh:
        fh.write(b"whole")
    assert (tmp_path / "model.npz").read_bytes() == b"whole" and leftover.exists()
