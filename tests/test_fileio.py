"""Output files are all-or-nothing: a failure mid-write leaves the old file (or none), never a partial one."""

import pytest

from mnist_cli.errors import OutputError
from mnist_cli.fileio import atomic_write


def test_success_replaces_the_target(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_write(target, "--x path") as fh:
        fh.write(b"new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failure_mid_write_keeps_the_old_file_and_no_temp(tmp_path, error):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(error):
        with atomic_write(target, "--x path") as fh:
            fh.write(b"half")
            raise error()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_unwritable_place_is_a_one_line_error_naming_the_option(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=r"cannot write .*/file/out.txt: .*; choose a writable --metrics-out path"):
        with atomic_write(blocker / "out.txt", "--metrics-out path"):
            pass
