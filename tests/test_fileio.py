"""Output files are all-or-nothing: a failure mid-write leaves the old file (or none), never a partial one."""

from pathlib import Path

import pytest

from mnist_cli.errors import OutputError
from mnist_cli.fileio import atomic_write, check_writable, output_target


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
    with pytest.raises(error), atomic_write(target, "--x path") as fh:
        fh.write(b"half")
        raise error()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_unwritable_place_is_a_one_line_error_naming_the_option(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with (pytest.raises(OutputError, match=r"cannot write .*/file/out.txt: .*; choose a writable --metrics-out path"),
          atomic_write(blocker / "out.txt", "--metrics-out path")):
        pass


# Full disks (issue 10) ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [10, 100_000], ids=["buffered, fails on close", "fails on write"])
def test_full_disk_leaves_no_temp_file_and_names_path_and_option(tmp_path, full_disk, size):
    full_disk("out.bin")
    target = tmp_path / "out.bin"
    with pytest.raises(OutputError) as info, atomic_write(target, "--x path") as fh:
        fh.write(b"x" * size)
    assert str(info.value) == f"cannot write {target}: No space left on device (free some space); choose a writable --x path"
    assert list(tmp_path.iterdir()) == []


def test_temp_file_is_removed_even_when_closing_it_fails_again(tmp_path, full_disk):
    from mnist_cli.fileio import PartFile

    full_disk("f")
    with pytest.raises(RuntimeError), PartFile(tmp_path, "f", RuntimeError) as part:
        part.file.write(b"unflushed")  # close() flushes this, and fails with ENOSPC once more
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


# Output targets are written, never replaced (issue 10) --------------------------------------------


def test_symlink_is_written_through_and_stays_a_link(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real.name)
    with atomic_write(link, "--x path") as fh:
        fh.write(b"new")
    assert link.is_symlink() and real.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.txt", "real.txt"]


def test_character_device_and_fifo_are_written_in_place(tmp_path):
    import os
    import stat
    import threading

    device = tmp_path / "null"
    os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # what /dev/null is
    with atomic_write(device, "--x path") as fh:
        fh.write(b"gone")
    assert stat.S_ISCHR(os.lstat(device).st_mode)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    check_writable(fifo, "--x path")
    with atomic_write(fifo, "--x path") as fh:
        fh.write(b"through the pipe")
    reader.join(timeout=30)
    assert got == [b"through the pipe"] and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "null"]


def test_link_to_a_descriptor_writes_to_the_descriptor(tmp_path):
    import os

    read_end, write_end = os.pipe()
    link = tmp_path / "stdout"
    link.symlink_to(f"/proc/self/fd/{write_end}")  # what /dev/stdout is
    try:
        check_writable(link, "--x path")
        with atomic_write(link, "--x path") as fh:
            fh.write(b"to the pipe\n")
        assert os.read(read_end, 100) == b"to the pipe\n"
    finally:
        os.close(read_end)
        os.close(write_end)
    assert link.is_symlink() and [p.name for p in tmp_path.iterdir()] == ["stdout"]


def test_output_target():
    assert output_target("/dev/stdout") == (Path("/dev/stdout"), True)
    assert output_target("/dev/null") == (Path("/dev/null"), True)
    assert output_target("/proc/self/fd/1")[1] is True
