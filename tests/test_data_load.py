"""Loading (:mod:`mnist_cli.data.load`): real MNIST, the .npy cache and its stamps, users' own MNIST-format
data and its validation."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import as_the_cli_says, make_tiny

import mnist_cli.data.download
import mnist_cli.data.load
from mnist_cli.data import MNIST, load_mnist
from mnist_cli.data.datasets import MNIST_SPEC, MNIST_TEST_CLASS_COUNTS, MNIST_TRAIN_CLASS_COUNTS
from mnist_cli.data.directory import STATE_DIR
from mnist_cli.data.idx import encode_idx
from mnist_cli.errors import DataNotFoundError, FormatError

pytestmark = pytest.mark.usefixtures("download_env")


def forbid(monkeypatch, module, name: str) -> None:
    """Make ``module.name`` fail the test if called."""

    def fail(*args, **kwargs):
        pytest.fail(f"{name} was called")

    monkeypatch.setattr(module, name, fail)


def expected(tiny, role: str) -> np.ndarray:
    array = tiny.arrays[role]
    return array.reshape(len(array), -1) if array.ndim == 3 else array


# Real MNIST ----------------------------------------------------------------------------------------


def test_real_mnist(mnist):
    assert isinstance(mnist, MNIST) and mnist.verified
    assert mnist.train_images.shape == (60000, 784) and mnist.test_images.shape == (10000, 784)
    for array in (mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels):
        assert array.dtype == np.uint8 and array.flags.c_contiguous and not array.flags.writeable
    assert tuple(np.bincount(mnist.train_labels, minlength=10)) == MNIST_TRAIN_CLASS_COUNTS
    assert tuple(np.bincount(mnist.test_labels, minlength=10)) == MNIST_TEST_CLASS_COUNTS
    assert mnist.checksums == {f.name: f.sha256 for f in MNIST_SPEC.files}
    assert mnist.train_images.max() == 255 and mnist.train_images.min() == 0


def test_cached_load_leaves_the_network_stack_alone(mnist_data_dir):
    """A cached load never imports requests, tqdm or the downloader (how fast it is: scripts/bench_data.py)."""
    code = (
        "import json, sys\n"
        "from mnist_cli.data import load_mnist\n"
        f"m = load_mnist({str(mnist_data_dir)!r})\n"
        "print(json.dumps({'n': len(m.train_labels),\n"
        "    'imported': [x for x in ('requests', 'tqdm', 'mnist_cli.data.download', 'mnist_cli.data.fetch')\n"
        "                 if x in sys.modules]}))\n"
    )
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout)
    assert out["n"] == 60000 and out["imported"] == []


# The tiny dataset: cache, stamps, repair ----------------------------------------------------------


def test_load_fetches_verifies_and_decodes(tmp_path, tiny_mnist):
    mirror = tiny_mnist.write(tmp_path / "mirror")
    data = load_mnist(tmp_path / "data", mirrors=[mirror], offline=True)
    assert data.verified and data.data_dir == tmp_path / "data"
    for role in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(data, role), expected(tiny_mnist, role))
    assert data.checksums == {f.name: f.sha256 for f in tiny_mnist.spec.files}
    assert len(list((tmp_path / "data" / STATE_DIR / "cache").glob("*.npy"))) == 4


def test_second_load_neither_hashes_nor_decodes(tmp_path, tiny_mnist, monkeypatch):
    first = load_mnist(tmp_path, mirrors=[tiny_mnist.write(tmp_path / "mirror")])
    forbid(monkeypatch, mnist_cli.data.load, "read_idx")
    forbid(monkeypatch, mnist_cli.data.download, "ensure_mnist")
    second = load_mnist(tmp_path)
    np.testing.assert_array_equal(second.train_images, first.train_images)
    assert second.verified


def test_touched_file_is_verified_again_not_downloaded(tmp_path, tiny_mnist, monkeypatch):
    tiny_mnist.write(tmp_path)
    load_mnist(tmp_path, offline=True)
    os.utime(tmp_path / "train-labels-idx1-ubyte.gz", ns=(0, 0))
    calls = []
    real = mnist_cli.data.download.ensure_mnist
    monkeypatch.setattr(mnist_cli.data.download, "ensure_mnist", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert load_mnist(tmp_path, offline=True).verified and calls == [1]
    assert load_mnist(tmp_path, offline=True).verified and calls == [1]  # stamped again


def test_corrupt_file_is_replaced_on_load(tmp_path, tiny_mnist):
    mirror = tiny_mnist.write(tmp_path / "mirror")
    data_dir = tmp_path / "data"
    load_mnist(data_dir, mirrors=[mirror])
    labels = data_dir / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(encode_idx(np.zeros(10, np.uint8))))
    data = load_mnist(data_dir, mirrors=[mirror])
    assert data.verified and labels.read_bytes() == tiny_mnist.gz[labels.name]
    np.testing.assert_array_equal(data.test_labels, tiny_mnist.arrays["test_labels"])


def test_damaged_cache_is_ignored_and_rewritten(tmp_path, tiny_mnist):
    tiny_mnist.write(tmp_path)
    load_mnist(tmp_path)
    (cached,) = (tmp_path / STATE_DIR / "cache").glob("train-images*.npy")
    cached.write_bytes(cached.read_bytes()[:100])
    np.testing.assert_array_equal(load_mnist(tmp_path).train_images, expected(tiny_mnist, "train_images"))
    assert np.load(cached).shape == (20, 784)


def test_decompressed_files_are_accepted(tmp_path, tiny_mnist):
    tiny_mnist.write(tmp_path, compressed=False)
    data = load_mnist(tmp_path, offline=True)
    assert data.verified
    np.testing.assert_array_equal(data.test_images, expected(tiny_mnist, "test_images"))


def test_read_only_state_still_loads(tmp_path, tiny_mnist):
    tiny_mnist.write(tmp_path)
    (tmp_path / STATE_DIR).write_text("a file where the state directory would go: no stamps, no cache")
    for _ in range(2):
        data = load_mnist(tmp_path, offline=True)
        assert data.verified and data.train_labels.shape == (20,)


def test_missing_files_offline(tmp_path, tiny_mnist):
    with pytest.raises(DataNotFoundError, match="forbids downloading"):
        load_mnist(tmp_path, offline=True)


def test_mnist_is_frozen_and_read_only(tmp_path, tiny_mnist):
    data = load_mnist(tiny_mnist.write(tmp_path))
    with pytest.raises(ValueError, match="read-only"):
        data.train_images[0, 0] = 1
    with pytest.raises(AttributeError):
        data.verified = False


# A user's own MNIST-format data -------------------------------------------------------------------


def test_own_dataset_is_validated_structurally(tmp_path, tiny_mnist, monkeypatch):
    own = make_tiny(n_train=32, n_test=16, seed=7)
    own.write(tmp_path, compressed=False)
    data = load_mnist(tmp_path, offline=True)
    assert not data.verified and data.train_images.shape == (32, 784)
    np.testing.assert_array_equal(data.test_labels, own.arrays["test_labels"])
    assert data.checksums == {f.name: f.sha256 for f in own.spec.files}
    forbid(monkeypatch, mnist_cli.data.load, "read_idx")
    forbid(monkeypatch, mnist_cli.data.download, "ensure_mnist")
    assert not load_mnist(tmp_path, offline=True).verified  # from the stamps and the cache


def _own(tmp_path: Path, **replace) -> Path:
    """A user's dataset (gzip files) with some files' IDX content replaced."""
    own = make_tiny(seed=5).write(tmp_path)
    for name, data in replace.items():
        (tmp_path / name).write_bytes(gzip.compress(data))
    return own


BAD_OWN = {
    "label out of range": (
        {"train-labels-idx1-ubyte.gz": encode_idx(np.array([3] * 19 + [10], np.uint8))},
        "train-labels-idx1-ubyte.gz: label 10 at index 19 is outside 0-9",
    ),
    "count mismatch": (
        {"t10k-labels-idx1-ubyte.gz": encode_idx(np.zeros(9, np.uint8))},
        "t10k-labels-idx1-ubyte.gz: 9 labels but t10k-images-idx3-ubyte.gz holds 10 images",
    ),
    "32x32 images": (
        {"train-images-idx3-ubyte.gz": encode_idx(np.zeros((20, 32, 32), np.uint8))},
        "images must be an IDX ubyte array of shape (n, 28, 28) with n >= 1, got uint8 of shape (20, 32, 32)",
    ),
    "int32 labels": (
        {"train-labels-idx1-ubyte.gz": encode_idx(np.zeros(20, np.int32))},
        "labels must be an IDX ubyte array of shape (n,) with n >= 1, got int32",
    ),
    "empty": ({"t10k-images-idx3-ubyte.gz": encode_idx(np.zeros((0, 28, 28), np.uint8))}, "with n >= 1"),
    "not IDX": ({"train-images-idx3-ubyte.gz": b"PK\x03\x04 a zip file"}, "not an IDX file"),
    "trailing bytes": (
        {"train-labels-idx1-ubyte.gz": encode_idx(np.zeros(20, np.uint8)) + b"\0"},
        "trailing bytes after the IDX data",
    ),
}


@pytest.mark.parametrize("case", BAD_OWN)
def test_invalid_own_dataset_is_refused_naming_the_file(case, tmp_path, tiny_mnist):
    replace, message = BAD_OWN[case]
    _own(tmp_path, **replace)
    with pytest.raises(FormatError) as info:
        load_mnist(tmp_path, offline=True)
    assert message in str(info.value) and str(tmp_path) in str(info.value)
    assert "\n" not in str(info.value)
    _own(tmp_path)  # fixed by the user: loads, nothing bad was cached or stamped
    assert load_mnist(tmp_path, offline=True).train_labels.shape == (20,)


def test_truncated_own_file_is_refused(tmp_path, tiny_mnist):
    _own(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(FormatError, match=f"{path}: the gzip stream ends early"):
        load_mnist(tmp_path, offline=True)


# Headers are checked before anything is decoded or cached (issue 10) -------------------------------


def test_lying_image_count_fails_before_decoding_or_caching(tmp_path, tiny_mnist):
    import tracemalloc

    _own(tmp_path)
    n = 100_000  # 78 MB of images in a 76 kB gzip file; the labels say 20
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(encode_idx(np.zeros((n, 28, 28), np.uint8))))
    tracemalloc.start()
    with pytest.raises(FormatError, match=f"20 labels but train-images-idx3-ubyte.gz holds {n} images"):
        load_mnist(tmp_path, offline=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * 2**20
    assert not list(tmp_path.rglob("*.npy"))


def test_header_declaring_more_than_the_gzip_file_can_hold_fails_fast(tmp_path, tiny_mnist):
    _own(tmp_path)
    n = 2_700_000  # 2.1 GB declared, in a 100 kB file: more than deflate can expand it to
    header = encode_idx(np.zeros((0, 28, 28), np.uint8))[:4] + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + os.urandom(100_000)))
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(encode_idx(np.zeros(n, np.uint8))))
    size = path.stat().st_size
    with pytest.raises(FormatError, match=f"{path}: the IDX header declares shape \\({n}, 28, 28\\) "
                                          f"\\({16 + n * 784} bytes\\), more than a {size}-byte gzip file can hold"):
        load_mnist(tmp_path, offline=True)
    assert not list(tmp_path.rglob("*.npy"))


# Missing is not corrupt (issue 10) -----------------------------------------------------------------


def test_corrupt_file_offline_is_called_corrupt_with_the_fix_not_missing(tmp_path, tiny_mnist):
    tiny_mnist.write(tmp_path)
    load_mnist(tmp_path, offline=True)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(encode_idx(np.zeros(10, np.uint8))))
    with pytest.raises(DataNotFoundError) as info:
        load_mnist(tmp_path, offline=True)
    message = as_the_cli_says(info.value).splitlines()[0]
    assert "missing" not in message
    assert message == (
        f"{tmp_path} holds corrupt copies of t10k-labels-idx1-ubyte.gz (no longer the TINY files verified there "
        "earlier; fix: `mnist-softmax download` without --offline, or remove them and supply the files with "
        "--mirror DIR), and offline mode (--offline or MNIST_SOFTMAX_OFFLINE) forbids downloading."
    )
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError, match=r"^TINY is missing from .* \(train-images-idx3-ubyte.gz\) and "
                                                r".* holds corrupt copies of t10k-labels-idx1-ubyte.gz"):
        load_mnist(tmp_path, offline=True)


@pytest.mark.parametrize("damage", ["gzip trailer (CRC)", "a label, same gzip size"])
def test_file_that_rots_behind_its_stamp_is_never_cached_but_repaired(tmp_path, tiny_mnist, damage):
    mirror = tiny_mnist.write(tmp_path / "mirror")
    data_dir = tmp_path / "data"
    load_mnist(data_dir, mirrors=[mirror])
    for cached in (data_dir / STATE_DIR / "cache").glob("*.npy"):
        cached.unlink()  # so that the next load decodes the files it trusts by their stamps
    path = data_dir / "train-labels-idx1-ubyte.gz"
    before = path.stat()
    if damage.startswith("gzip"):
        data = bytearray(path.read_bytes())
        data[-5] ^= 0xFF  # the decoder's CRC check fails
    else:
        labels = tiny_mnist.arrays["train_labels"].copy()
        labels[0] = (labels[0] + 1) % 10
        data = gzip.compress(encode_idx(labels), mtime=0)
        assert len(data) == before.st_size
    with open(path, "r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(DataNotFoundError, match="holds corrupt copies of train-labels-idx1-ubyte.gz"):
        load_mnist(data_dir, offline=True)  # offline, without a mirror: called corrupt, with the fix
    assert not list((data_dir / STATE_DIR / "cache").glob("train-labels*.npy"))
    data = load_mnist(data_dir, mirrors=[mirror])
    assert data.verified and path.read_bytes() == tiny_mnist.gz[path.name]
    np.testing.assert_array_equal(data.train_labels, tiny_mnist.arrays["train_labels"])
