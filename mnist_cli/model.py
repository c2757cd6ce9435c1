"""Softmax-regression parameters: ``logits = x @ W + b``, with safe ``.npz`` save and load.

    >>> m = Model.init(784, 10, "zeros", np.float32, np.random.default_rng(0))
    >>> m.logits(np.zeros((2, 784), np.uint8), input_scale=1.0).shape
    (2, 10)
"""

from __future__ import annotations

import json
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mnist_cli.errors import ModelFileError, SettingsError
from mnist_cli.fileio import atomic_write, jsonable
from mnist_cli.rounding import Inputs, as_dtype, is_half, linear, round_to
from mnist_cli.settings import DTYPE_NAMES, FRAMEWORK_NAMES, HALF_NAMES, PRECISION_NAMES

if TYPE_CHECKING:  # imported where a model is loaded: a training run need not import it
    import zipfile

N_FEATURES = 784  # 28 x 28 pixels
N_CLASSES = 10


INITS = ("zeros", "normal")
#: A saved model is ~31 KB (float32) or ~63 KB (float64) plus metadata; refuse anything far larger.
MAX_MODEL_BYTES = 4 * 1024 * 1024
_KEYS = {"W", "b", "meta"}


@dataclass
class Model:
    """Weights ``W`` (d, k), bias ``b`` (k,), the form the model computes its logits in, and free-form JSON
    metadata (its training settings, NaN report, provenance: never read to compute anything).

    ``compute_dtype`` is the dtype of its products (default: the weights'); ``precision`` is ``pure`` (every
    array in that dtype) or ``mixed`` (float16/bfloat16 products of float32 master weights, the softmax in
    float32, as autocast computes). Both are saved with the model and loaded back.
    """

    W: np.ndarray
    b: np.ndarray
    meta: dict = field(default_factory=dict)
    compute_dtype: str = ""
    precision: str = "pure"

    def __post_init__(self):
        self.compute_dtype = self.compute_dtype or self.W.dtype.name
        problem = _form_problem(self.W.dtype.name, self.compute_dtype, self.precision)
        if problem:
            raise ValueError(problem)

    @classmethod
    def init(cls, d: int, k: int, how: str, dtype, rng: np.random.Generator, std: float = 0.01) -> Model:
        """``zeros`` (the tutorial's ``tf.zeros``) or ``normal``: ``W ~ N(0, std^2)``, ``b = 0``."""
        if how == "zeros":
            W = np.zeros((d, k), dtype=dtype)
        elif how == "normal":
            W = (rng.standard_normal((d, k)) * std).astype(dtype)
        else:
            raise ValueError(f"unknown init {how!r}; choose one of {', '.join(INITS)}")
        return cls(W, np.zeros(k, dtype=dtype))

    @property
    def form(self) -> tuple[str, str]:
        """``(compute_dtype, precision)``."""
        return self.compute_dtype, self.precision

    def logits(self, images: np.ndarray, input_scale: float, block: int = 2048, lanes: int = 1,
               map_blocks=map, bias_after: bool = False) -> np.ndarray:
        """Logits ``z = (images * input_scale / 255) @ W + b`` of uint8 ``images`` (n, d), shape (n, k), in the
        model's compute form (:func:`logits_of`)."""
        return logits_of([self], [input_scale], images, block, lanes, map_blocks, bias_after)[0]

    def as_dtype(self, dtype: str, precision: str | None = None) -> Model:
        """The same weights computing in ``dtype``: float32/float64 weights cast to it; float16/bfloat16 ``pure``
        (the weights rounded to it) or ``mixed`` (float32 weights, half products, float32 softmax). The
        metadata, what is known of the model's training, is kept as it is."""
        from mnist_cli.settings import check_precision

        precision = precision or "pure"
        check_precision(dtype, precision, "none")
        stored = as_dtype("float32" if precision == "mixed" else dtype)
        return Model(self.W.astype(stored), self.b.astype(stored), dict(self.meta), dtype, precision)  # one rounding

    @property
    def finite(self) -> bool:
        """True when every parameter is finite."""
        return bool(np.isfinite(self.W).all() and np.isfinite(self.b).all())

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``W``, ``b`` and ``meta`` (JSON text) to an ``.npz``, atomically (temp file + rename);
        raises :class:`~mnist_cli.errors.OutputError` when the path cannot be written."""
        path = Path(path)  # written exactly as named (np.savez would append .npz to a file object's name: none here)
        info, W, b = dict(self.meta), self.W, self.b
        info[_FORM_KEY] = {"dtype": self.compute_dtype, "precision": self.precision}
        if W.dtype.name in _AS_BITS:  # .npy cannot name ml_dtypes' bfloat16 without pickle: its bits, and the dtype
            info[_BITS_KEY] = W.dtype.name
            W, b = W.view(np.uint16), b.view(np.uint16)
        meta = np.array(json.dumps(jsonable(info), sort_keys=True, allow_nan=False, default=str))
        with atomic_write(path, "{save} path") as fh:
            np.savez(fh, W=W, b=b, meta=meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, foreign: bool = False) -> Model:
        """Read a model saved by :meth:`save`, refusing anything else; with ``foreign``, also an archive
        of just ``W`` (784, 10) and ``b`` (10,) in float16/float32/float64 from elsewhere (``np.savez(path,
        W=W, b=b)``), under every check below but the metadata's; its ``meta`` is then ``{"foreign": True}``
        (nothing is known of its training; input scale 1 unless the caller gives one).

        Before any array is read: a size cap on the file and on its decompressed members, exactly
        the members ``W``, ``b``, ``meta``, and their ``.npy`` headers (shape, dtype, no objects), so
        neither a pickle payload nor a decompression bomb gets further. Then ``allow_pickle=False``
        loading, and ``meta`` must be a JSON object whose ``config.input_scale``, if present, is a
        positive number.
        """
        path = Path(path)
        try:
            size = path.stat().st_size
            if not path.is_file():
                raise ModelFileError(f"model {path} is not a file; {_FIX}")
            with open(path, "rb") as fh:
                is_zip = fh.read(4) == b"PK\x03\x04"
        except OSError as exc:
            raise ModelFileError(f"cannot read model {path}: {exc.strerror}; {_FIX}") from None
        if size > MAX_MODEL_BYTES:
            raise ModelFileError(f"model {path} is {size} bytes, over the {MAX_MODEL_BYTES}-byte cap; {_FIX}")
        if not is_zip:
            raise ModelFileError(f"cannot load model {path}: it is not a valid .npz (zip) archive; {_FIX}")
        import zipfile  # here: only loading a model reads a zip (a training run need not import it)

        try:
            with zipfile.ZipFile(path) as zf:
                has_meta = _check_members(zf, path, foreign)
            with np.load(path, allow_pickle=False) as npz:
                W, b = npz["W"], npz["b"]
                meta_arr = npz["meta"] if has_meta else np.array(json.dumps({"foreign": True}))
        except ModelFileError:
            raise
        except (ValueError, OSError, EOFError, KeyError, NotImplementedError, RuntimeError, zipfile.BadZipFile,
                zlib.error) as exc:
            reason = "it holds pickled objects" if "pickle" in str(exc) else f"it is not a valid .npz ({exc})"
            raise ModelFileError(f"cannot load model {path}: {reason}; {_FIX}") from None
        try:
            meta = json.loads(str(meta_arr))
        except (ValueError, RecursionError):  # RecursionError: nested deeper than any real metadata
            meta = None
        if not isinstance(meta, dict):
            raise ModelFileError(f"model {path} has metadata that is not a JSON object; {_FIX}")
        W, b = _from_bits(W, b, meta.pop(_BITS_KEY, None), path)
        config = meta.get("config", {})
        scale = config.get("input_scale", 1.0) if isinstance(config, dict) else None
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not _finite_positive(scale):
            raise ModelFileError(f"model {path} has metadata without a valid config.input_scale; {_FIX} "
                                 "(or give {input_scale})")
        dtype, precision = _saved_form(meta, W, path)
        return cls(W, b, meta, dtype, precision)

    @property
    def input_scale(self) -> float:
        """The pixel scale the model was trained with (validated by :meth:`load`; 1 if unknown)."""
        config = self.meta.get("config", {})
        return float(config.get("input_scale", 1.0)) if isinstance(config, dict) else 1.0

    @property
    def framework(self) -> str:
        """The profile the model was trained under (:mod:`mnist_cli.frameworks`), what ``evaluate`` and ``predict``
        compute as by default: its metadata's, ``numpy`` where that names none this version knows."""
        config = self.meta.get("config", {})
        name = config.get("framework") if isinstance(config, dict) else None
        return name if name in FRAMEWORK_NAMES else "numpy"


_FIX = "pass a model written by `mnist-softmax train {save}`"


def load_parent(path, dtype: str, precision: str, input_scale: float) -> Model:
    """A saved model to continue training from (``train --init-from``): :meth:`Model.load` with every one
    of its checks, then :class:`SettingsError` naming why unless it computes as the run will (``dtype``,
    ``precision``: the same parameter dtype and compute form), at the run's ``input_scale``, with finite
    parameters. Its ``meta`` becomes ``{"parent": {path, params_sha256 (of W and b as loaded), steps_total,
    test_accuracy}}``, the record the new model keeps."""
    import hashlib

    parent = Model.load(path)
    if parent.form != (dtype, precision):
        raise SettingsError(("init_from", "dtype", "precision"),
                            f"{path} computes in {parent.compute_dtype} {parent.precision}, the run in {dtype} "
                            f"{precision}: give {{dtype}} {parent.compute_dtype} {{precision}} {parent.precision} "
                            "to continue it (its parameters are not converted)")
    if parent.input_scale != input_scale:
        raise SettingsError(("init_from", "input_scale"),
                            f"{path} was trained at input scale {parent.input_scale:g}, the run uses "
                            f"{input_scale:g}: give {{input_scale}} {parent.input_scale:g} to continue it")
    if not parent.finite:
        raise SettingsError("init_from", f"{path} has non-finite parameters: there is nothing to continue; "
                            "start afresh without {init_from}")
    meta = parent.meta
    steps = meta.get("steps_total", meta.get("steps"))
    parent.meta = {"parent": {"path": str(path),
                              "params_sha256": hashlib.sha256(parent.W.tobytes() + parent.b.tobytes()).hexdigest(),
                              "steps_total": steps if type(steps) is int and steps >= 0 else None,
                              "test_accuracy": meta.get("test_accuracy")}}
    return parent


#: The metadata key a model's compute form is saved under (``{"dtype": ..., "precision": ...}``).
_FORM_KEY = "compute"


def _form_problem(weights: str, dtype: str, precision: str) -> str | None:
    """What is wrong with computing in ``dtype`` at ``precision`` from ``weights``-typed parameters, or None:
    pure computes in the weights' own dtype; mixed in float16/bfloat16 from float32 masters."""
    if dtype not in DTYPE_NAMES or precision not in PRECISION_NAMES:
        return f"unknown compute form {dtype!r}, {precision!r}"
    if precision == "mixed" and not (dtype in HALF_NAMES and weights == "float32"):
        return f"mixed precision computes in float16 or bfloat16 from float32 weights, not {dtype} from {weights}"
    if precision == "pure" and dtype != weights:
        return f"a pure {dtype} model holds {dtype} weights, not {weights}"
    return None


def _saved_form(meta: dict, W: np.ndarray, path: Path) -> tuple[str, str]:
    """The compute form a loaded model was saved with (``meta[_FORM_KEY]``, removed from ``meta``); a model
    saved before the form had a key of its own computes as its training config says (float16/bfloat16 and its
    precision), else in its weights' dtype."""
    form = meta.pop(_FORM_KEY, None)
    if form is None:  # a model from before 0.2: its config named the form
        config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        dtype = config.get("dtype") if config.get("dtype") in HALF_NAMES else W.dtype.name
        form = {"dtype": dtype, "precision": "mixed" if config.get("precision") == "mixed" and dtype != W.dtype.name
                else "pure"}
    problem = _form_problem(W.dtype.name, *(form.get(key) for key in ("dtype", "precision"))) if isinstance(
        form, dict) else "not a dict"
    if problem:
        raise ModelFileError(f"model {path} has a malformed compute form ({problem}); {_FIX}")
    return form["dtype"], form["precision"]


def logits_of(models: list[Model], scales: list[float], images: np.ndarray, block: int = 2048, lanes: int = 1,
              map_blocks=map, bias_after: bool = False) -> list[np.ndarray]:
    """The logits ``z = (images * s / 255) @ W + b`` (n, k) of each model at its scale ``s``, in its compute
    form; uint8 ``images`` (n, d) are read ``block`` rows at a time for all the models (which must share one
    compute form and weight dtype).

    float32/float64: each block is converted (not scaled) once into a reused buffer that stays in cache, and
    each model's scale is applied to its ``W`` instead, ``x @ (s W)``, so a model's logits are products of
    its own, of the same shapes whatever the other models. float16/bfloat16 (pure, or mixed under autocast):
    ``rnd(x @ rnd(W) + rnd(b))``, ``x`` the rounded inputs (:class:`mnist_cli.rounding.Inputs`), products in
    float32 (:func:`mnist_cli.rounding.linear`; ``bias_after``: the product rounded before the bias, a Keras ``Dense``
    in float16). The blocks are dealt out to ``lanes`` lanes, which
    ``map_blocks(fn, range(lanes))`` runs (``map``, or a thread pool's ``map``): every block is computed alike
    whichever lane takes it, so the logits do not depend on the lanes.
    """
    first = models[0]
    assert all((m.form, m.W.dtype) == (first.form, first.W.dtype) for m in models), "one compute form at a time"
    n, d = images.shape
    dtype = as_dtype(first.compute_dtype)
    half = is_half(dtype)
    with np.errstate(over="ignore", invalid="ignore"):  # a weight or logit past the range is inf, not an error
        if half:
            params = [(round_to(m.W, dtype), round_to(m.b, dtype)) for m in models]
        else:
            params = [(m.W * dtype.type(s / 255.0), m.b) for m, s in zip(models, scales)]  # (d, k) in pixel units
    out = [np.empty((n, m.b.shape[0]), dtype=dtype) for m in models]  # (n, k) each
    starts = list(range(0, n, block))
    lanes = max(1, min(lanes, len(starts)))

    def lane(first_block: int) -> None:
        rows = min(block, n)
        x = None if half else np.empty((rows, d), dtype=dtype)  # (block, d) reused by this lane
        inputs = {s: Inputs(s, dtype, rows, d) for s in scales} if half else None  # one per distinct scale
        with np.errstate(over="ignore", invalid="ignore"):
            for start in starts[first_block::lanes]:
                part = images[start : start + block]
                if half:
                    xs = {s: to_x(part) for s, to_x in inputs.items()}  # each scale's rounded inputs, once a block
                    for (W, b), z, s in zip(params, out, scales):
                        z[start : start + block] = linear(xs[s], W, b, dtype, bias_after=bias_after).astype(dtype)
                    continue
                xb = x[: part.shape[0]]
                np.copyto(xb, part, casting="unsafe")  # uint8 -> float
                for (V, b), z in zip(params, out):
                    np.matmul(xb, V, out=z[start : start + block])
                    z[start : start + block] += b

    list(map_blocks(lane, range(lanes)))
    return out
#: Dtypes a model file holds as their bits (uint16), the dtype's name under this metadata key.
_AS_BITS, _BITS_KEY = ("bfloat16",), "weights_dtype"


def _from_bits(W: np.ndarray, b: np.ndarray, name, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The arrays of a loaded model: uint16 bits become the dtype the metadata names (bfloat16), and
    uint16 without that name, or a name with float arrays, is refused."""
    if (W.dtype == np.uint16) != (name is not None) or (name is not None and name not in _AS_BITS):
        raise ModelFileError(f"model {path} holds {W.dtype} arrays with weights_dtype {name!r}; {_FIX}")
    if name is None:
        return W, b
    dtype = as_dtype(name)
    return W.view(dtype), b.view(dtype)


def _finite_positive(x: int | float) -> bool:
    try:
        return math.isfinite(x) and x > 0
    except OverflowError:  # an integer too large for a float (hundreds of digits)
        return False
_MEMBERS = ("W.npy", "b.npy", "meta.npy")
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _member_headers(zf: zipfile.ZipFile, path: Path, foreign: bool = False) -> dict:
    """``{"W" | "b" | "meta": (shape, dtype)}`` from the ``.npy`` headers of exactly a model's members (with
    ``foreign``, or of just ``W`` and ``b``), plainly stored or deflated, within :data:`MAX_MODEL_BYTES`
    unpacked, without objects."""
    infos = zf.infolist()
    names = sorted(info.filename for info in infos)
    if names != sorted(_MEMBERS) and not (foreign and names == sorted(_MEMBERS[:2])):
        keys = [name.removesuffix(".npy") for name in names]
        hint = "" if foreign or names != sorted(_MEMBERS[:2]) else " (weights from elsewhere: add {foreign})"
        raise ModelFileError(f"model {path} has arrays {keys}, expected {sorted(_KEYS)}"
                             + (" or, from elsewhere, ['W', 'b']" if foreign else "") + f"{hint}; {_FIX}",
                             ("foreign", "save"))
    unpacked = sum(info.file_size for info in infos)
    if unpacked > MAX_MODEL_BYTES:
        raise ModelFileError(f"model {path} unpacks to {unpacked} bytes, over the {MAX_MODEL_BYTES}-byte cap; {_FIX}")
    headers = {}
    for info in infos:
        if info.flag_bits & 0x1 or info.compress_type not in (0, 8):  # zipfile.ZIP_STORED, ZIP_DEFLATED
            raise ModelFileError(f"model {path} has an encrypted or unusually compressed member; {_FIX}")
        with zf.open(info) as fh:
            reader = _HEADER_READERS.get(np.lib.format.read_magic(fh))
            if reader is None:
                raise ModelFileError(f"model {path} uses an unsupported .npy format version; {_FIX}")
            shape, _, dtype = reader(fh)
        if dtype.hasobject:
            raise ModelFileError(f"cannot load model {path}: it holds pickled objects; {_FIX}")
        headers[info.filename.removesuffix(".npy")] = (shape, dtype)
    return headers


def _check_members(zf: zipfile.ZipFile, path: Path, foreign: bool = False) -> bool:
    """Refuse an archive whose members are not exactly a model's (with ``foreign``, or just ``W`` and ``b``
    in a float dtype: bfloat16 bits need the metadata that names them), before reading any array data;
    whether it has the metadata member."""
    headers = _member_headers(zf, path, foreign)
    (w_shape, w_dtype), (b_shape, b_dtype) = headers["W"], headers["b"]
    (m_shape, m_dtype) = headers.get("meta", ((), np.dtype("U1")))
    if "meta" not in headers and w_dtype == np.uint16:
        raise ModelFileError(f"model {path} holds uint16 W and b without metadata: give float16, float32 or float64 "
                             "weights")
    if w_shape != (N_FEATURES, N_CLASSES) or b_shape != (N_CLASSES,):
        raise ModelFileError(f"model {path} has W{w_shape} and b{b_shape}, expected W(784, 10) and b(10,); {_FIX}")
    if w_dtype not in (np.float16, np.float32, np.float64, np.uint16) or b_dtype != w_dtype:
        raise ModelFileError(f"model {path} has dtypes W {w_dtype}, b {b_dtype}; expected float16, float32, float64 "
                             f"or bfloat16 bits; {_FIX}")
    if m_shape != () or m_dtype.kind != "U":
        raise ModelFileError(f"model {path} has malformed metadata; {_FIX}")
    return "meta" in headers
