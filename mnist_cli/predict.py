"""``mnist-softmax predict``: a saved model's answer for a few images, with its probabilities.

    report = predict_file("model.npz", indices=[0, 1], load_data=load_mnist)
    report["predictions"][0]["label"], report["predictions"][0]["predicted"]
    # -> (7, 7)

Images come from the test set (by index, with their true labels) or from a file of your own: an IDX
file (``.gz`` or raw, as MNIST's) or a NumPy ``.npy`` array, of shape (n, 28, 28), (n, 784) or one
(28, 28) image, with pixel values 0-255 (uint8, or floats holding whole numbers in that range), or
a picture of one digit (PNG, JPEG, BMP, GIF; through Pillow, the ``image`` extra; see
:func:`read_picture`). For
each: ``argmax(logits)`` and ``argmax(softmax(logits))`` (which floating-point ties can tell apart,
see :func:`mnist_cli.metrics.argmax_agreement`) and the ten probabilities. With ``out=``, every row
also goes to a file (:func:`write_predictions`: ``.npy``, ``.csv`` or ``.jsonl``), written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np

from mnist_cli.errors import FormatError, MissingExtraError, SettingsError
from mnist_cli.fileio import atomic_write, check_writable, jsonable
from mnist_cli.frameworks import profile
from mnist_cli.losses import softmax
from mnist_cli.model import Model
from mnist_cli.scoring import framework_logits, model_profile, predict_logits, softmax_logits

PIXELS = 28 * 28
MAX_IMAGES = 100_000  # more is a data set: use evaluate
#: The largest picture of one digit read (a 4096x4096 scan); a larger one is refused before it is decoded.
MAX_PICTURE_PIXELS = 4096 * 4096
#: Picture files read through Pillow (the optional ``image`` extra), one digit per file.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
IMAGE_HINT = "pip install 'mnist-softmax[image]'"
#: What ``out=`` writes, by suffix: a structured NumPy array, a CSV table, one JSON object per line.
OUT_SUFFIXES = (".npy", ".csv", ".jsonl")


#: MNIST's geometry (LeCun et al.): each digit's bounding box fitted into 20x20 keeping its aspect ratio, then
#: placed in 28x28 with its centre of mass at the field's centre (the test set's mean centre of mass, in
#: pixel-index coordinates: (13.99, 14.01), so 14).
BOX, FIELD, CENTRE = 20, 28, 14.0


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) box-filter resampling along one axis: output pixel ``i`` covers the source interval
    ``[i * n_in / n_out, (i + 1) * n_in / n_out)`` and averages the source pixels by their overlap with it:

        R[i, j] = |[i r, (i + 1) r) ∩ [j, j + 1)| / r,    r = n_in / n_out

    (rows sum to 1: anti-aliased when shrinking, a blend of at most two pixels when growing)."""
    r = n_in / n_out
    lo = np.arange(n_out)[:, None] * r  # (n_out, 1) start of each output pixel's interval
    j = np.arange(n_in)[None, :]  # (1, n_in)
    overlap = np.clip(np.minimum(lo + r, j + 1) - np.maximum(lo, j), 0.0, None)  # (n_out, n_in)
    return overlap / r


def mnist_geometry(ink: np.ndarray) -> np.ndarray:
    """A digit as MNIST drew its digits: ``ink`` (h, w) float, 0 = background; the bounding box of the
    pixels above 10% of the strongest resampled into :data:`BOX` x BOX keeping the aspect ratio
    (the longer side becomes 20, :func:`_area_matrix` on each axis), its values scaled so the strongest
    is 255, placed in :data:`FIELD` x FIELD so its centre of mass ``sum(v * (y, x)) / sum(v)`` lands on
    (:data:`CENTRE`, CENTRE), rounded to whole pixels (and kept inside the field). (28, 28) uint8;
    all zeros for a blank picture."""
    top = float(ink.max()) if ink.size else 0.0
    if top <= 0:
        return np.zeros((FIELD, FIELD), dtype=np.uint8)
    rows, cols = np.flatnonzero((ink > 0.1 * top).any(axis=1)), np.flatnonzero((ink > 0.1 * top).any(axis=0))
    box = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # (bh, bw) the digit's bounding box
    scale = BOX / max(box.shape)
    h, w = (max(1, round(n * scale)) for n in box.shape)  # the longer side 20, the other in proportion
    digit = _area_matrix(box.shape[0], h) @ box @ _area_matrix(box.shape[1], w).T  # (h, w)
    digit *= 255.0 / digit.max()
    mass = digit.sum()
    cy = (digit.sum(axis=1) @ np.arange(h)) / mass  # centre of mass within the digit
    cx = (digit.sum(axis=0) @ np.arange(w)) / mass
    y0 = min(max(round(CENTRE - cy), 0), FIELD - h)  # where its top-left corner goes
    x0 = min(max(round(CENTRE - cx), 0), FIELD - w)
    field = np.zeros((FIELD, FIELD))
    field[y0:y0 + h, x0:x0 + w] = digit
    return np.clip(np.round(field), 0, 255).astype(np.uint8)


def read_picture(path: Path) -> np.ndarray:
    """One digit from a picture file, as MNIST draws it: grey levels (``L``), inverted when the background
    is light (MNIST's digits are white on black; a drawing is usually black on white: the mean grey level
    above 127 decides). A 28x28 picture is taken as it is (already the model's input); any other size
    gets MNIST's geometry (:func:`mnist_geometry`) after the background level (the median grey) is
    subtracted. (1, 784) uint8."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise MissingExtraError(f"reading {path.suffix} pictures needs Pillow: {IMAGE_HINT}", ()) from None
    try:
        with warnings.catch_warnings():  # Pillow warns of a decompression bomb: its size is checked here instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            width, height = img.size  # from the header: nothing decoded yet
            if width * height > MAX_PICTURE_PIXELS:
                raise FormatError(f"{path}: a {width}x{height} picture is too large for one digit (at most "
                                  f"{MAX_PICTURE_PIXELS:,} pixels); crop or shrink it.", ())
            pixels = np.asarray(img.convert("L"), dtype=np.uint8)  # MNIST's geometry is applied by the caller
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise FormatError(f"{path}: cannot read it as a picture ({exc}); give a PNG/JPEG/BMP/GIF of one digit, "
                          "or an IDX or .npy file.", ()) from None
    if pixels.mean() > 127:
        pixels = 255 - pixels
    if pixels.shape != (FIELD, FIELD):
        grey = pixels.astype(np.float64)
        pixels = mnist_geometry(np.clip(grey - np.median(grey), 0.0, None))
    return pixels.reshape(1, PIXELS)


def _check_npy_header(path: Path) -> None:
    """``ValueError`` (worded by :func:`read_images`) for a ``.npy`` whose header is not NumPy's, or declares
    more than :data:`MAX_IMAGES` images' worth of values or more bytes than the file holds: checked before
    NumPy allocates what the header declares."""
    from numpy.lib import format as npy

    with open(path, "rb") as fh:
        version = npy.read_magic(fh)
        read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, _, dtype = read_header(fh, max_header_size=10_000)
        body = os.fstat(fh.fileno()).st_size - fh.tell()
    count = math.prod(shape)
    if count > MAX_IMAGES * PIXELS:
        raise ValueError(f"its header declares shape {shape}, more than {MAX_IMAGES:,} images of 28x28: score a "
                         "data set with evaluate")
    if dtype.hasobject or count * dtype.itemsize > body:
        raise ValueError(f"its header declares shape {shape} of {dtype}, {count * dtype.itemsize:,} bytes, but "
                         f"the file holds {body:,}")


def read_images(path) -> np.ndarray:
    """``path`` (IDX, ``.gz`` IDX or ``.npy``) as uint8 images (n, 784); :class:`FormatError` naming
    what is wrong otherwise."""
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return read_picture(path)
    try:
        if path.suffix == ".npy":
            _check_npy_header(path)
            raw = np.load(path, allow_pickle=False)
        else:
            from mnist_cli.data.idx import read_idx

            raw = read_idx(path)
    except (OSError, ValueError, FormatError) as exc:
        why = str(exc).removeprefix(f"{path}: ").rstrip(".")
        raise FormatError(f"{path}: cannot read it as .npy or IDX ({why}); give an IDX or .npy file of 28x28 "
                          "images.", ()) from None
    raw = raw.reshape(1, PIXELS) if raw.shape == (28, 28) else raw
    if raw.ndim == 3 and raw.shape[1:] == (28, 28):
        raw = raw.reshape(len(raw), PIXELS)
    if raw.ndim != 2 or raw.shape[1] != PIXELS or not len(raw):
        raise FormatError(f"{path}: shape {raw.shape} is not 28x28 images; give (n, 28, 28), (n, 784) or (28, 28).",
                          ())
    if raw.dtype != np.uint8:
        if raw.dtype.kind not in "fiu" or not (np.all(np.isfinite(raw)) and np.all((raw >= 0) & (raw <= 255))
                                               and np.all(raw == np.round(raw))):
            raise FormatError(f"{path}: pixels must be whole numbers 0-255 (as MNIST's uint8), got {raw.dtype} "
                              "values outside that.", ())
        raw = raw.astype(np.uint8)
    return raw


def check_out(out) -> None:
    """Refuse an ``out`` path this module cannot write (its suffix, or a path that cannot be
    created) before any work: :class:`SettingsError` or :class:`OutputError`."""
    if Path(out).suffix.lower() not in OUT_SUFFIXES:
        raise SettingsError("out", f"{out}: write predictions to a {'/'.join(OUT_SUFFIXES)} file")
    check_writable(out, "{out} path")


def _npy_rows(rows: list[dict], k: int) -> np.ndarray:
    """The rows as a structured array (n,): ``index``, ``label``, ``predicted``, ``predicted_softmax``
    (-1 where unknown: your own images have no label, non-finite logits no prediction) and
    ``probabilities`` (k,) float64 (holds every float16/bfloat16/float32 value exactly)."""
    table = np.zeros(len(rows), dtype=[("index", np.int64), ("label", np.int16), ("predicted", np.int16),
                                       ("predicted_softmax", np.int16), ("probabilities", np.float64, (k,))])
    for j, row in enumerate(rows):
        table[j] = (row["index"], *(-1 if row[f] is None else row[f] for f in ("label", "predicted",
                                                                               "predicted_softmax")),
                    row["probabilities"])
    return table


def write_predictions(rows: list[dict], out) -> None:
    """Every row of :func:`predict_file` to ``out``, by its suffix (:data:`OUT_SUFFIXES`), atomically:
    ``.npy`` a structured array (:func:`_npy_rows`; ``np.load`` reads it without pickle), ``.csv`` a
    header ``index,label,predicted,predicted_softmax,p0..p{k-1}`` and one line per image (empty where
    unknown; probabilities as Python's shortest round-trip ``repr``, ``nan``/``inf`` where non-finite),
    ``.jsonl`` one predict --json row per line (non-finite values as ``"NaN"``, like every JSON here)."""
    check_out(out)
    k = len(rows[0]["probabilities"]) if rows else 10
    fields = ("index", "label", "predicted", "predicted_softmax")
    with atomic_write(out, "{out} path") as fh:
        suffix = Path(out).suffix.lower()
        if suffix == ".npy":
            np.save(fh, _npy_rows(rows, k), allow_pickle=False)
            return
        text = io.StringIO(newline="")
        if suffix == ".csv":
            table = csv.writer(text, lineterminator="\n")
            table.writerow([*fields, *(f"p{c}" for c in range(k))])
            table.writerows([["" if row[f] is None else row[f] for f in fields]
                             + [repr(v) for v in row["probabilities"]] for row in rows])
        else:
            text.writelines(json.dumps(jsonable(row), allow_nan=False) + "\n" for row in rows)
        fh.write(text.getvalue().encode("utf-8"))


def predict_file(path, *, indices=None, images=None, load_data=None, input_scale: float | None = None,
                 dtype: str | None = None, precision: str | None = None, out=None, foreign: bool = False,
                 plot=None, framework: str | None = None) -> dict:
    """``predict``: the model at ``path`` on test-set ``indices`` (``load_data()`` gives the data) or
    on the images of the file ``images``; per image its index, true label (test set only), the
    predictions of argmax(logits) and argmax(softmax(logits)), and the probabilities (as computed: in
    bfloat16 a row sums to 1 only to its few digits). ``dtype`` (and ``precision``) compute in another
    form than the model's own, as ``evaluate`` does; ``computed_as`` says which form it was. With ``out``,
    every row written there too (:func:`write_predictions`; a bad path fails before any work); ``foreign``
    accepts an archive of just W and b (:meth:`Model.load`); ``plot`` (a path) draws the 28x28 inputs the
    model saw (:func:`mnist_cli.report.plots.plot_predictions`). ``framework``: the logits and probabilities as
    that profile computes them (:func:`mnist_cli.scoring.framework_logits`; TensorFlow flushes subnormals; None:
    the model's own, :attr:`Model.framework`), named in ``computed_as``."""
    from mnist_cli.settings import check_input_scale

    if out is not None:
        check_out(out)
    profile(framework)  # an unknown name is refused before any file is read
    model = Model.load(path, foreign=foreign)
    prof, framework = model_profile(model, framework)  # by default the model's own
    scale = model.input_scale if input_scale is None else input_scale
    check_input_scale(scale, dtype or model.compute_dtype)
    if dtype is not None or precision is not None:  # --precision alone: the model's own dtype, computed so
        model = model.as_dtype(dtype or model.compute_dtype, precision)
    if (indices is None) == (images is None):
        raise SettingsError(("index", "images"), "give test-set indices with {index} or a file with {images}")
    labels, where = None, {}
    if images is not None:
        x = read_images(images)
    else:
        data = load_data()
        n = len(data.test_labels)
        bad = [i for i in indices if not 0 <= i < n]
        if bad:
            raise SettingsError("index", f"test-set index {bad[0]} is outside 0-{n - 1}")
        x, labels = data.test_images[list(indices)], data.test_labels[list(indices)]
        where = {"data": data.where}
    if len(x) > MAX_IMAGES:
        raise SettingsError("images", f"{len(x)} images is more than {MAX_IMAGES:,}: use evaluate for a data set")
    z = framework_logits(predict_logits(model, x, scale, framework=framework), framework)  # (n, k)
    with np.errstate(all="ignore"):
        p = softmax(softmax_logits(model, z, framework) if framework else z, framework)  # (n, k) in the model's dtype
    rows = []
    for j in range(len(x)):
        finite = bool(np.isfinite(z[j]).all())
        rows.append({
            "index": int(indices[j]) if indices is not None else j,
            "label": int(labels[j]) if labels is not None else None,
            "predicted": int(np.argmax(z[j])) if finite else None,
            "predicted_softmax": int(np.argmax(p[j])) if finite else None,
            "probabilities": [float(v) for v in p[j]],
            "logits_finite": finite,
        })
    if out is not None:
        write_predictions(rows, out)
        where["out"] = str(out)
    report = {"model": str(path), "input_scale": scale, "source": "test set" if images is None else str(images),
              "computed_as": {"dtype": model.compute_dtype, "precision": model.precision, "framework": prof.name},
              "foreign": bool(model.meta.get("foreign")), "predictions": rows, **where}
    if plot is not None:
        from mnist_cli.report.plots import plot_predictions

        report["plot"] = str(plot_predictions(plot, x, report))
    return report
