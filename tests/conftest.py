"""Shared fixtures: the real MNIST (read-only, never written), a populated data directory, real Fashion-MNIST's,
a tiny dataset.

The real files live in ``../shared/datasets/mnist`` beside the repository (CI clones the repo next to
``shared/``); ``MNIST_SOFTMAX_TEST_DATA`` points elsewhere. Tests copy them into temporary
directories and never write to the shared copy.
"""

from __future__ import annotations

import gzip
import hashlib
import json
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

# Every readable report is laid out to $COLUMNS (mnist_cli.report.text.known_width): a width from the caller's
# environment (a terminal's, or the 80x24 that pytest-xdist's workers are started with) must not reach tests that
# read a report's lines; a test of a width sets COLUMNS itself.
for _var in ("COLUMNS", "LINES"):
    os.environ.pop(_var, None)

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


_REAL = object()


@pytest.fixture()
def cli(request, monkeypatch):
    """``cli(*args, data_dir=<real MNIST>, offline=True, quiet=True, env=None)``: ``mnist-softmax *args`` through
    click's CliRunner with ``--data-dir DIR --offline --quiet`` after them, and no ``MNIST_SOFTMAX_THREADS`` from
    the caller's environment. The one way the tests run the command line in-process: ``data_dir=`` another
    directory (``None``: no ``--data-dir``), ``offline=False`` / ``quiet=False`` to leave that flag out, ``env``
    for variables of the run."""
    from click.testing import CliRunner

    from mnist_cli.cli import main

    monkeypatch.delenv("MNIST_SOFTMAX_THREADS", raising=False)
    runner = CliRunner()

    def invoke(*args, data_dir=_REAL, offline=True, quiet=True, env=None):
        if data_dir is _REAL:
            data_dir = request.getfixturevalue("mnist_data_dir")  # built only for a test that reads it
        flags = ["--data-dir", str(data_dir)] if data_dir is not None else []
        flags += ["--offline"] * offline + ["--quiet"] * quiet
        return runner.invoke(main, [*map(str, args), *flags], env=env)

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


def _real_fashion(scratch: Path) -> Path:
    """Where the tests read real Fashion-MNIST: ``$MNIST_SOFTMAX_TEST_FASHION``, else
    ``../shared/datasets/fashion-mnist`` beside the checkout, else Debian's installed ``dataset-fashion-mnist``
    (``/usr/share/datasets/fashion-mnist``), else that package fetched from the package registry into
    ``scratch`` (``apt-get download``, ~31 MB, then ``dpkg -x``). Its files verify by their pinned content."""
    from mnist_cli.data.datasets import FASHION_MNIST_SPEC

    named = os.environ.get("MNIST_SOFTMAX_TEST_FASHION")
    for place in ([Path(named)] if named else [Path(__file__).resolve().parents[2] / "shared/datasets/fashion-mnist",
                                               Path("/usr/share/datasets/fashion-mnist")]):
        if named or all((place / f.name).is_file() for f in FASHION_MNIST_SPEC.files):
            return place
    import shutil
    import subprocess

    if not (shutil.which("apt-get") and shutil.which("dpkg")):
        pytest.fail("Real Fashion-MNIST not found: set MNIST_SOFTMAX_TEST_FASHION to a directory of its four .gz "
                    "files, or install Debian's dataset-fashion-mnist.", pytrace=False)
    got = subprocess.run(["apt-get", "download", "dataset-fashion-mnist"], cwd=scratch, capture_output=True, text=True,
                         timeout=600)
    debs = sorted(scratch.glob("dataset-fashion-mnist_*.deb"))
    if got.returncode or not debs:
        pytest.fail(f"apt-get download dataset-fashion-mnist failed ({got.stderr.strip()[-300:]}): set "
                    "MNIST_SOFTMAX_TEST_FASHION to a directory of Fashion-MNIST's four .gz files.", pytrace=False)
    subprocess.run(["dpkg", "-x", str(debs[0]), str(scratch / "deb")], check=True, timeout=600)
    return scratch / "deb/usr/share/datasets/fashion-mnist"


@pytest.fixture(scope="session")
def fashion_data_dir(tmp_path_factory) -> Path:
    """A Fashion-MNIST data directory filled from the real files (:func:`_real_fashion`) through the real code
    path (verified against the pinned SHA-256, stamped, cached)."""
    from mnist_cli.data import load_mnist

    source = _real_fashion(tmp_path_factory.mktemp("fashion-deb"))
    data_dir = tmp_path_factory.mktemp("fashion-data")
    load_mnist(data_dir, mirrors=[str(source)], offline=True, dataset="fashion-mnist")
    return data_dir


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


# --- the documented shape of `compare --json` (docs/json.md, "compare --json"), stated once for every test -----------
# NUM may also be "NaN"/"Infinity"/"-Infinity"; "per-loss": an object keyed by exactly the compared losses
NUM, OPT_INT, OPT_STR = "num", "int|null", "str|null"
NAN_REPORT = {
    "steps_nan_loss": int, "steps_inf_loss": int, "steps_nonfinite_grad": int, "first_nan_loss_step": OPT_INT,
    "first_inf_loss_step": OPT_INT, "first_nonfinite_grad_step": OPT_INT, "params_nonfinite": bool,
    "first_nonfinite_params_step": OPT_INT, "underflow_probs": int, "steps_with_underflow": int,
    "first_underflow_step": OPT_INT, "max_logit_gap": NUM, "any_nonfinite": bool, "first_nonfinite_step": OPT_INT,
    "overflow_logits": int, "first_overflow_step": OPT_INT, "steps_skipped": int, "first_skipped_step": OPT_INT,
    "loss_scale": (None, NUM),
}
RUN = {
    "loss": str, "test_accuracy": NUM, "test_accuracy_softmax": NUM, "accuracy_meaningful": bool, "final_loss": NUM,
    "steps": int,
    "first_nonfinite_step": OPT_INT, "weights_finite": bool, "nan": NAN_REPORT,
    "argmax": {"differ": int, "ties_in_probs": int, "zero_probs": int, "nonfinite_logits": int},
    "seconds": NUM, "init_digest": str, "order_digest": str, "loss_curve": [NUM],
}
CHAIN = {"loss": str, "gradient": str}
CULPRIT = {
    "batch_row": int, "index": int, "label": int, "predicted": OPT_INT, "classes": int, "logit_max": NUM,
    "logit_target": NUM, "logit_min": NUM, "gap_max_minus_target": NUM, "gap_max_minus_min": NUM,
    "zero_prob_classes": [int], "target_prob_zero": bool, "underflowed_class": int, "underflowed_gap": NUM,
    "underflowed_p": NUM, "underflowed_log_p": NUM, "underflowed_log10_p": NUM, "row_loss": NUM,
    "row_loss_kind": str, "row_grad_finite": bool, "logits_finite": bool, "chain": CHAIN,
}
FORENSICS = {
    "scenario": str, "step": int, "loss": str, "dtype": str, "underflow_limit": NUM, "smallest_subnormal": NUM,
    "framework": str, "flushes": bool, "smallest_normal": NUM,  # the profile the run computed as (issue 19)
    "batch_size": int, "batch_loss": NUM, "batch_loss_kind": str, "batch_grad_finite": bool, "logits_finite": bool,
    "params_finite": (bool, None), "rows_with_zero_prob": int, "zero_probs": int, "rows_above_limit": int,
    "rows_nan_loss": int, "rows_inf_loss": int, "rows_nonfinite_grad": int, "max_gap_max_minus_min": NUM,
    "max_gap_max_minus_target": NUM,
    "n_culprits": int, "culprits": [CULPRIT], "chain": (CHAIN, None), "summary": str,
    "half_backward": (None, {"loss_scale": (None, NUM), "dtype": str, "dtype_max": NUM, "text": str}),
}
SCENARIO = {
    "label": str, "name": OPT_STR, "about": OPT_STR, "lr": NUM, "input_scale": NUM, "dtype": str, "precision": str,
    "loss_scale": str, "seed": int,
    "same_init": bool, "same_batches": bool, "expect": "per-loss", "runs": "per-loss",
}
PROVENANCE = {
    "threads": int, "blas_threads": int,
    "blas": [{"library": str, "version": OPT_STR, "kernel": OPT_STR, "threading": OPT_STR}],
    "numpy": str, "python": str, "cpu": str, "cpus": OPT_INT, "mnist_softmax": str,
}
DOCUMENT = {
    "schema": str,
    "settings": {"losses": [str], "steps": int, "batch_size": int, "train_limit": OPT_INT, "init": str,
                 "seeds": [int], "grid": str, "threads": int, "expectations_of": str},
    "provenance": PROVENANCE,
    "data": {"n_train": int, "n_test": int, "dir": str, "verified": bool, "dataset": str, "title": str, "classes": list},
    "scenarios": [SCENARIO],
    "stability_map": {
        "grid_axes": [str], "axes": [str],
        "values": {"dtype": [str], "precision": [str], "lr": [NUM], "input_scale": [NUM], "seed": [int], "loss": [str]},
        "losses": [str],
        "cells": [{"label": str, "dtype": str, "precision": str, "lr": NUM, "input_scale": NUM, "seed": int,
                   "first_nonfinite": "per-loss"}],
        "points": [{"dtype": str, "precision": str, "lr": NUM, "input_scale": NUM, "seed": int, "loss": str,
                    "first_nonfinite_step": OPT_INT, "label": str}],
    },
    "forensics": [FORENSICS],
    "checks": [{"scenario": str, "loss": str, "expect": str, "observed": str, "ok": bool}],
    "ok": bool,
    "seconds": NUM,
    "conclusion": str,
}
OPTIONAL = {"metrics_files": [str], "plot": str, "plot_seconds": NUM}


def validate(value, shape, losses, path="$"):
    """Raise AssertionError at the first place ``value`` departs from ``shape``."""
    if shape == "per-loss":  # an object keyed by exactly the compared losses
        assert isinstance(value, dict), path
        if path.endswith(".expect"):
            assert set(value) <= set(losses), path
            for k, v in value.items():
                validate(v, {"nonfinite": bool, "by_step": OPT_INT}, losses, f"{path}.{k}")
        else:
            assert list(value) == losses, path
            for k, v in value.items():
                validate(v, RUN if path.endswith(".runs") else OPT_INT, losses, f"{path}.{k}")
    elif isinstance(shape, dict):
        assert isinstance(value, dict), f"{path}: {value!r} is not an object"
        extra = set(value) - set(shape) - (set(OPTIONAL) if path == "$" else set())
        assert set(shape) <= set(value) and not extra, f"{path}: keys {sorted(value)} vs {sorted(shape)}"
        for k, v in value.items():
            validate(v, shape.get(k, OPTIONAL.get(k)), losses, f"{path}.{k}")
    elif isinstance(shape, list):
        assert isinstance(value, list), path
        for i, v in enumerate(value):
            validate(v, shape[0], losses, f"{path}[{i}]")
    elif isinstance(shape, tuple):
        errors = []
        for option in shape:
            try:
                return validate(value, option, losses, path)
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"{path}: {errors}")
    elif shape is None:
        assert value is None, path
    elif shape == NUM:
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)) or value in ("NaN", "Infinity", "-Infinity")
        assert ok, f"{path}: {value!r} is not a number"
    elif shape == OPT_INT:
        assert value is None or (isinstance(value, int) and not isinstance(value, bool)), f"{path}: {value!r}"
    elif shape == OPT_STR:
        assert value is None or isinstance(value, str), path
    elif shape is int:
        assert isinstance(value, int) and not isinstance(value, bool), f"{path}: {value!r} is not an int"
    else:
        assert isinstance(value, shape), f"{path}: {value!r} is not {shape.__name__}"


def compare_document(text: str, losses=None) -> dict:
    """``compare --json``'s output: strict JSON (NaN spelt ``"NaN"``, never a bare constant) of the documented
    shape, its runs keyed by exactly ``losses`` (default: the losses it says it compared); returned parsed."""
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    validate(doc, DOCUMENT, list(losses or doc["settings"]["losses"]))
    return doc
