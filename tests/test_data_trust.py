"""Data you can trust after the first day (issue 10), on real MNIST in temporary directories: bit rot that
keeps a file's stat facts, tampered .npy caches, damaged stamps, and reports that say which data they used."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_tiny

from mnist_cli.cli import main
from mnist_cli.data import load_mnist
from mnist_cli.data.datasets import MNIST_SPEC
from mnist_cli.data.directory import STATE_DIR, verify_file
from mnist_cli.data.idx import read_idx

pytestmark = pytest.mark.usefixtures("download_env")

RAW_LABELS = ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def fill(data_dir: Path, shared: Path) -> Path:
    """A verified, stamped and cached copy of real MNIST: images as .gz, labels decompressed (raw)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for f in MNIST_SPEC.files:
        if f.name in RAW_LABELS:
            (data_dir / f.raw_name).write_bytes(gzip.decompress((shared / f.name).read_bytes()))
        else:
            shutil.copyfile(shared / f.name, data_dir / f.name)
    assert load_mnist(data_dir, offline=True).verified
    return data_dir


def cache_file(data_dir: Path, prefix: str) -> Path:
    (path,) = (data_dir / STATE_DIR / "cache").glob(f"{prefix}*.npy")
    return path


def change_in_place(path: Path, offset: int, data: bytes) -> None:
    """Overwrite bytes of ``path`` as bit rot would: same size, same mtime, same inode."""
    before = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)


def download(data_dir: Path, shared: Path, *flags: str):
    return CliRunner().invoke(main, ["download", "--quiet", "--data-dir", str(data_dir), "--mirror", str(shared),
                                     "--offline", *flags])


@pytest.fixture(scope="module")
def genuine(shared_mnist_dir) -> dict:
    return {name: read_idx(shared_mnist_dir / name) for name in RAW_LABELS}


@pytest.mark.slow
def test_download_rehashes_and_replaces_bit_rot_that_keeps_the_stat_facts(tmp_path, shared_mnist_dir, genuine):
    data_dir = fill(tmp_path / "data", shared_mnist_dir)
    labels = data_dir / "train-labels-idx1-ubyte"
    change_in_place(labels, 8, b"\x06")  # the first label, a 5, becomes a 6
    result = download(data_dir, shared_mnist_dir, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    entry = next(f for f in doc["files"] if f["name"] == "train-labels-idx1-ubyte.gz")
    assert doc["verified"] and entry["status"] == "downloaded", entry
    assert entry["notes"][0].startswith("replaced a corrupt file:")
    verify_file(Path(entry["path"]), MNIST_SPEC.file("train_labels"))  # a genuine file is in place again
    assert not labels.exists()  # the corrupt spelling is gone, not left to shadow the new file
    data = load_mnist(data_dir, offline=True)
    assert data.verified and data.train_labels[0] == 5
    np.testing.assert_array_equal(data.train_labels, genuine["train-labels-idx1-ubyte.gz"])


@pytest.mark.slow
@pytest.mark.parametrize("tamper", ["labels shifted by one", "images cut to 1000"])
def test_a_cache_that_fails_its_check_is_rebuilt_with_a_notice(tamper, tmp_path, shared_mnist_dir, genuine, caplog):
    data_dir = fill(tmp_path / "data", shared_mnist_dir)
    prefix = "train-labels" if "labels" in tamper else "train-images"
    cached = cache_file(data_dir, prefix)
    good = np.load(cached)
    np.save(cached, np.roll(good, 1) if "labels" in tamper else good[:1000])
    with caplog.at_level(logging.WARNING, logger="mnist_cli"):
        data = load_mnist(data_dir, offline=True)
    source = "train-labels-idx1-ubyte" if "labels" in tamper else "train-images-idx3-ubyte.gz"
    assert [r.getMessage() for r in caplog.records] == [
        f"cache {cached} failed its check (its content changed since it was written): rebuilding it from {source}."
    ]
    assert data.verified and data.train_images.shape == (60000, 784)
    np.testing.assert_array_equal(data.train_labels, genuine["train-labels-idx1-ubyte.gz"])
    np.testing.assert_array_equal(np.load(cached), good)  # rebuilt on disk too
    caplog.clear()
    load_mnist(data_dir, offline=True)
    assert caplog.records == []  # and trusted again


@pytest.mark.slow
def test_download_checks_caches_by_hash_and_force_clears_them(tmp_path, shared_mnist_dir, genuine):
    data_dir = fill(tmp_path / "data", shared_mnist_dir)
    cached = cache_file(data_dir, "train-labels")
    change_in_place(cached, cached.stat().st_size - 1, b"\x09")  # the last label, an 8, becomes a 9
    result = download(data_dir, shared_mnist_dir, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["verified"] and doc["notices"] == [
        f"cache {cached.name} failed its check (its content changed since it was written): removed; "
        "the next load rebuilds it."
    ]
    assert not cached.exists()
    data = load_mnist(data_dir, offline=True)
    np.testing.assert_array_equal(data.train_labels, genuine["train-labels-idx1-ubyte.gz"])
    assert download(data_dir, shared_mnist_dir, "--json").exit_code == 0  # the rebuilt cache passes
    assert cached.exists()
    forced = download(data_dir, shared_mnist_dir, "--force")
    assert forced.exit_code == 0, forced.output
    assert list((data_dir / STATE_DIR / "cache").glob("*.npy")) == []


@pytest.mark.slow
def test_damaged_stamps_are_rebuilt_not_a_traceback(tmp_path, shared_mnist_dir):
    data_dir = fill(tmp_path / "data", shared_mnist_dir)
    stamps = data_dir / STATE_DIR / "stamps.json"
    doc = json.loads(stamps.read_text())
    for damage in ("a string", [1, 2], {"pinned": True, "sha256": 5, "size": "big"}, "nested"):
        if damage == "nested":
            stamps.write_text("[" * 100_000 + "]" * 100_000)
        else:
            doc["files"]["train-images-idx3-ubyte.gz"] = damage
            doc["files"]["t10k-labels-idx1-ubyte"] = damage
            stamps.write_text(json.dumps(doc))
        data = load_mnist(data_dir, offline=True)
        assert data.verified and len(data.train_labels) == 60000
        stamps.write_text(json.dumps(doc))
        result = download(data_dir, shared_mnist_dir)
        assert result.exit_code == 0 and "all 4 files present and verified" in result.output, (damage, result.output)
        rebuilt = json.loads(stamps.read_text())["files"]["train-images-idx3-ubyte.gz"]
        assert rebuilt["pinned"] is True and rebuilt["sha256"] == MNIST_SPEC.file("train_images").sha256


# Reports name the data and whether it is verified -----------------------------------------------------


def test_every_readable_report_names_the_data_and_whether_it_is_verified(tmp_path, tiny_mnist):
    runner = CliRunner()
    genuine_dir = tiny_mnist.write(tmp_path / "genuine")
    own_dir = make_tiny(n_train=20, n_test=10, seed=9).write(tmp_path / "own")  # right shape, not the pinned data
    for data_dir, what in ((genuine_dir, "verified MNIST"), (own_dir, "your own files, NOT verified MNIST")):
        line = f"data: {data_dir} ({what})"
        common = ["--data-dir", str(data_dir), "--offline", "--quiet"]
        model = tmp_path / f"{data_dir.name}.npz"
        outputs = {
            "download": runner.invoke(main, ["download", *common]),
            "train": runner.invoke(main, ["train", "--steps", "2", "--batch-size", "5", "--save", str(model), *common]),
            "evaluate": runner.invoke(main, ["evaluate", str(model), *common]),
            "compare": runner.invoke(main, ["compare", "--losses", "fused", "--lr", "0.5", "--steps", "2",
                                            "--batch-size", "5", *common]),
        }
        for command, result in outputs.items():
            assert result.exit_code == 0, (command, result.output)
            assert line in result.output.splitlines(), (command, result.output)
