"""Shared fixtures: the real MNIST (read-only, never written), a populated data directory, a tiny dataset.

The real files live in ``../shared/datasets/mnist`` beside the repository (CI clones the repo next to
``shared/``); ``MNIST_SOFTMAX_TEST_DATA`` points elsewhere. Tests copy them into temporary
directories and never write to the shared copy.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mnist_cli.data.datasets import MNIST_SPEC, ROLES, DatasetSpec, FileSpec
from mnist_cli.data.idx import encode_idx


def _real_mnist() -> Path:
    """Where the tests read real MNIST: ``$MNIST_SOFTMAX_TEST_DATA``, else ``../shared/datasets/mnist``
    beside the checkout, else the user's data directory (where ``make demo`` put it), if it holds the files."""
    if os.environ.get("MNIST_SOFTMAX_TEST_DATA"):
        return Path(os.environ["MNIST_SOFTMAX_TEST_DATA"])
    shared = Path(__file__).resolve().parents[2] / "shared/datasets/mnist"
    if shared.is_dir():
        return shared
    from mnist_cli.data.directory import resolve_data_dir
    from mnist_cli.errors import MnistError

    try:
        mine = resolve_data_dir()
    except MnistError:  # no usable default: the fixture below says what to do
        return shared
    return mine if all((mine / f.name).is_file() for f in MNIST_SPEC.files) else shared


SHARED_MNIST = _real_mnist()

# Loopback test servers must never be reached through a proxy from the environment.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(
    filter(None, [os.environ.get("NO_PROXY", ""), "127.0.0.1", "localhost"])
)

# Fast, hermetic download settings for tests that fetch (see `download_env`).
FAST_FETCH_ENV = {
    "MNIST_SOFTMAX_CONNECT_TIMEOUT": "2",
    "MNIST_SOFTMAX_READ_TIMEOUT": "0.5",
    "MNIST_SOFTMAX_DEADLINE": "3",
    "MNIST_SOFTMAX_RETRIES": "1",
    "MNIST_SOFTMAX_BACKOFF": "0.01",
}


def as_the_cli_says(exc) -> str:
    """A library error's message with the settings it names spelt as the CLI's flags (``--data-dir``)."""
    from mnist_cli.shell import flag as _flag

    return exc.text(_flag)


@pytest.fixture()
def cli(mnist_data_dir, monkeypatch):
    """``cli(*args, env=None)``: ``mnist-softmax *args`` through click's CliRunner on the real data, offline,
    quiet, with no ``MNIST_SOFTMAX_THREADS`` from the caller's environment."""
    from click.testing import CliRunner

    from mnist_cli.cli import main

    monkeypatch.delenv("MNIST_SOFTMAX_THREADS", raising=False)
    runner = CliRunner()

    def invoke(*args, env=None):
        return runner.invoke(main, [*args, "--data-dir", str(mnist_data_dir), "--offline", "--quiet"], env=env)

    return invoke


@pytest.fixture(scope="session")
def shared_mnist_dir() -> Path:
    """The read-only real MNIST files; a missing copy fails the test (it is required, not optional)."""
    missing = [f.name for f in MNIST_SPEC.files if not (SHARED_MNIST / f.name).is_file()]
    if missing:
        pytest.fail(
            f"Real MNIST not found in {SHARED_MNIST} (missing {', '.join(missing)}): put the four .gz files "
            "there, set MNIST_SOFTMAX_TEST_DATA to their directory, or run `make demo` (it downloads them).",
            pytrace=False,
        )
    return SHARED_MNIST


@pytest.fixture(scope="session")
def mnist_data_dir(tmp_path_factory, shared_mnist_dir) -> Path:
    """A data directory filled from the shared copy through the real code path (verified, stamped, cached)."""
    from mnist_cli.data import load_mnist

    data_dir = tmp_path_factory.mktemp("mnist-data")
    load_mnist(data_dir, mirrors=[str(shared_mnist_dir)], offline=True)
    return data_dir


@pytest.fixture(scope="session")
def mnist(mnist_data_dir):
    """The real MNIST arrays (read-only), loaded from `mnist_data_dir`."""
    from mnist_cli.data import load_mnist

    return load_mnist(mnist_data_dir, offline=True)


@dataclass(frozen=True)
class Tiny:
    """A small MNIST-format dataset with its own pinned spec (no built-in mirrors): for fault tests."""

    spec: DatasetSpec
    raw: dict  # file name -> IDX bytes
    gz: dict  # file name -> gzip bytes
    arrays: dict  # role -> array as the files hold it

    def write(self, directory: Path, *, compressed: bool = True) -> Path:
        """Put the four files in ``directory`` (gzip or decompressed names); return it."""
        directory.mkdir(parents=True, exist_ok=True)
        for f in self.spec.files:
            if compressed:
                (directory / f.name).write_bytes(self.gz[f.name])
            else:
                (directory / f.raw_name).write_bytes(self.raw[f.name])
        return directory


def make_tiny(n_train: int = 20, n_test: int = 10, seed: int = 0, name: str = "tiny") -> Tiny:
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    files, raw, gz = [], {}, {}
    for role, real in zip(ROLES, MNIST_SPEC.files):
        data = encode_idx(arrays[role])
        packed = gzip.compress(data, mtime=0)
        files.append(
            FileSpec(
                real.name,
                role,
                len(data),
                hashlib.sha256(data).hexdigest(),
                gz_size=len(packed),
                gz_sha256=hashlib.sha256(packed).hexdigest(),
            )
        )
        raw[real.name], gz[real.name] = data, packed
    return Tiny(DatasetSpec(name, tuple(files), mirrors=()), raw, gz, arrays)


@pytest.fixture(scope="session")
def tiny() -> Tiny:
    return make_tiny()


@pytest.fixture()
def tiny_mnist(tiny, monkeypatch) -> Tiny:
    """Make the tiny dataset *the* dataset (for the CLI and load_mnist), without built-in mirrors."""
    import mnist_cli.data.datasets

    monkeypatch.setattr(mnist_cli.data.datasets, "MNIST_SPEC", tiny.spec)
    return tiny


@pytest.fixture()
def download_env(monkeypatch):
    """No MNIST_SOFTMAX_* settings from the caller's environment; short timeouts and back-off."""
    for var in list(os.environ):
        if var.startswith("MNIST_SOFTMAX_") and var != "MNIST_SOFTMAX_TEST_DATA":
            monkeypatch.delenv(var)
    for var, value in FAST_FETCH_ENV.items():
        monkeypatch.setenv(var, value)


@pytest.fixture()
def full_disk(monkeypatch):
    """``full_disk("NAME")``: from now on, temporary files written for a target called NAME (or whose name
    contains it) are real files whose writes fail with ENOSPC, like a full disk (their descriptor is
    /dev/full's), including the flush that closing them does."""
    import tempfile
    import types

    import mnist_cli.fileio

    names = []
    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        fd, path = real(*args, **kwargs)
        if any(os.path.basename(path).startswith(f".{name}") for name in names):
            full = os.open("/dev/full", os.O_RDWR)
            os.dup2(full, fd)
            os.close(full)
        return fd, path

    monkeypatch.setattr(mnist_cli.fileio, "tempfile", types.SimpleNamespace(mkstemp=mkstemp))
    return names.append
