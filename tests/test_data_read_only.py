"""A data directory made read-only on purpose (mode without write bits, as CI's ``../shared`` copy) is used as it
is: nothing is written there, not even by root (whom the kernel lets write anyway), and a download into it is
refused with the fix."""

import os
import shutil
import stat

import pytest


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _read_only_copy(src, dst):
    shutil.copytree(src, dst)
    for p in [dst, *dst.iterdir()]:
        p.chmod(p.stat().st_mode & ~0o222)
    return dst


@pytest.fixture()
def locked_dir(tmp_path, tiny):
    root = _read_only_copy(tiny.write(tmp_path / "src"), tmp_path / "ro")
    yield root
    for p in [root, *root.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


def test_a_read_only_data_directory_is_read_and_left_as_it_was(cli, tiny_mnist, locked_dir):
    before = _tree(locked_dir)
    result = cli("train", "--steps", "3", "--batch-size", "5", data_dir=locked_dir)
    assert result.exit_code == 0, result.output
    assert _tree(locked_dir) == before  # no .mnist-softmax/, no stamps, no cache, no temporary file


def test_a_download_into_a_read_only_data_directory_is_refused_with_the_fix(cli, tiny_mnist, tiny, tmp_path):
    mirror = tiny.write(tmp_path / "mirror")
    root = tmp_path / "empty"
    root.mkdir()
    root.chmod(0o555)
    try:
        result = cli("download", "--mirror", str(mirror), data_dir=root, offline=False)
    finally:
        root.chmod(0o755)
    assert result.exit_code != 0
    line = result.output.strip().splitlines()[-1]
    assert "Cannot write to the data directory" in line and "--data-dir" in line, result.output
    assert os.listdir(root) == []
