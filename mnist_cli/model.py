"""Softmax-regression parameters: ``logits = x @ W + b``, with safe ``.npz`` save and load.

    >>> m = Model.init(784, 10, "zeros", np.float32, np.random.default_rng(0))
    >>> m.logits(np.zeros((2, 784), np.float32)).shape
    (2, 10)
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnist_cli.errors import ModelFileError
from mnist_cli.fileio import atomic_write

N_FEATURES = 784  # 28 x 28 pixels
N_CLASSES = 10
DTYPES = {"float32": np.float32, "float64": np.float64}
INITS = ("zeros", "normal")
#: A saved model is ~31 KB (float32) or ~63 KB (float64) plus metadata; refuse anything far larger.
MAX_MODEL_BYTES = 4 * 1024 * 1024
_KEYS = {"W", "b", "meta"}


@dataclass
class Model:
    """Weights ``W`` (d, k), bias ``b`` (k,) and free-form JSON metadata."""

    W: np.ndarray
    b: np.ndarray
    meta: dict = field(default_factory=dict)

    @classmethod
    def init(cls, d: int, k: int, how: str, dtype, rng: np.random.Generator, std: float = 0.01) -> "Model":
        """``zeros`` (the tutorial's ``tf.zeros``) or ``normal``: ``W ~ N(0, std^2)``, ``b = 0``."""
        if how == "zeros":
            W = np.zeros((d, k), dtype=dtype)
        elif how == "normal":
            W = (rng.standard_normal((d, k)) * std).astype(dtype)
        else:
            raise ValueError(f"unknown init {how!r}; choose one of {', '.join(INITS)}")
        return cls(W, np.zeros(k, dtype=dtype))

    def logits(self, x: np.ndarray) -> np.ndarray:
        """``z = x @ W + b``, shape (n, k)."""
        with np.errstate(over="ignore", invalid="ignore"):
            return x @ self.W + self.b

    @property
    def finite(self) -> bool:
        """True when every parameter is finite."""
        return bool(np.isfinite(self.W).all() and np.isfinite(self.b).all())

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``W``, ``b`` and ``meta`` (JSON text) to an ``.npz``, atomically (temp file + rename);
        raises :class:`~mnist_cli.errors.OutputError` when the path cannot be written."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")  # what np.savez would do, made explicit
        meta = np.array(json.dumps(self.meta, sort_keys=True, allow_nan=True, default=str))
        with atomic_write(path, "--save path") as fh:
            np.savez(fh, W=self.W, b=self.b, meta=meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Model":
        """Read a model saved by :meth:`save`, refusing anything else.

        ``allow_pickle=False`` (a pickle payload raises instead of executing), a size cap, exactly the
        keys ``W``, ``b``, ``meta``, ``W`` of shape (784, 10) and ``b`` of shape (10,) in one float
        dtype, and ``meta`` a JSON object.
        """
        path = Path(path)
        fix = "pass a model written by `mnist-softmax train --save`"
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ModelFileError(f"cannot read model {path}: {exc.strerror}; {fix}") from None
        if not path.is_file():
            raise ModelFileError(f"model {path} is not a file; {fix}")
        if size > MAX_MODEL_BYTES:
            raise ModelFileError(f"model {path} is {size} bytes, over the {MAX_MODEL_BYTES}-byte cap; {fix}")
        try:
            with open(path, "rb") as fh:
                is_zip = fh.read(4) == b"PK\x03\x04"
        except OSError as exc:
            raise ModelFileError(f"cannot read model {path}: {exc.strerror}; {fix}") from None
        if not is_zip:
            raise ModelFileError(f"cannot load model {path}: it is not a valid .npz (zip) archive; {fix}")
        try:
            with np.load(path, allow_pickle=False) as npz:
                keys = set(npz.files)
                if keys != _KEYS:
                    raise ModelFileError(
                        f"model {path} has arrays {sorted(keys)}, expected {sorted(_KEYS)}; {fix}"
                    )
                W, b, meta_arr = npz["W"], npz["b"], npz["meta"]
        except ModelFileError:
            raise
        except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
            reason = "it holds pickled objects" if "pickle" in str(exc) else "it is not a valid .npz"
            raise ModelFileError(f"cannot load model {path}: {reason}; {fix}") from None
        if W.shape != (N_FEATURES, N_CLASSES) or b.shape != (N_CLASSES,):
            raise ModelFileError(
                f"model {path} has W{W.shape} and b{b.shape}, expected W(784, 10) and b(10,); {fix}"
            )
        if W.dtype not in (np.float32, np.float64) or b.dtype != W.dtype:
            raise ModelFileError(f"model {path} has dtypes W {W.dtype}, b {b.dtype}; expected float32 or float64; {fix}")
        if meta_arr.shape != () or meta_arr.dtype.kind != "U":
            raise ModelFileError(f"model {path} has malformed metadata; {fix}")
        try:
            meta = json.loads(str(meta_arr))
        except ValueError:
            meta = None
        if not isinstance(meta, dict):
            raise ModelFileError(f"model {path} has metadata that is not a JSON object; {fix}")
        return cls(W, b, meta)
