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
see :func:`mnist_cli.metrics.argmax_agreement`) and the ten probabilities.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from mnist_cli.errors import FormatError, MissingExtraError, SettingsError
from mnist_cli.losses import softmax
from mnist_cli.model import Model
from mnist_cli.scoring import predict_logits

PIXELS = 28 * 28
MAX_IMAGES = 100_000  # more is a data set: use evaluate
#: The largest picture of one digit read (a 4096x4096 scan); a larger one is refused before it is decoded.
MAX_PICTURE_PIXELS = 4096 * 4096
#: Picture files read through Pillow (the optional ``image`` extra), one digit per file.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
IMAGE_HINT = "pip install 'mnist-softmax[image]'"


def read_picture(path: Path) -> np.ndarray:
    """One digit from a picture file, as MNIST draws it: grey levels (``L``), resized to 28x28 when it is
    another size, and inverted when the background is light (MNIST's digits are white on black; a
    drawing is usually black on white: the mean grey level above 127 decides). (1, 784) uint8."""
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
            grey = img.convert("L")
            if grey.size != (28, 28):
                grey = grey.resize((28, 28), Image.Resampling.LANCZOS)
            pixels = np.asarray(grey, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise FormatError(f"{path}: cannot read it as a picture ({exc}); give a PNG/JPEG/BMP/GIF of one digit, "
                          "or an IDX or .npy file.", ()) from None
    if pixels.mean() > 127:
        pixels = 255 - pixels
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


def predict_file(path, *, indices=None, images=None, load_data=None, input_scale: float | None = None,
                 dtype: str | None = None, precision: str | None = None) -> dict:
    """``predict``: the model at ``path`` on test-set ``indices`` (``load_data()`` gives the data) or
    on the images of the file ``images``; per image its index, true label (test set only), the
    predictions of argmax(logits) and argmax(softmax(logits)), and the probabilities (as computed: in
    bfloat16 a row sums to 1 only to its few digits). ``dtype`` (and ``precision``) compute in another
    form than the model's own, as ``evaluate`` does; ``computed_as`` says which form it was."""
    from mnist_cli.settings import check_input_scale

    model = Model.load(path)
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
        where = {"data": {"dir": str(data.data_dir), "verified": data.verified}}
    if len(x) > MAX_IMAGES:
        raise SettingsError("images", f"{len(x)} images is more than {MAX_IMAGES:,}: use evaluate for a data set")
    z = predict_logits(model, x, scale)  # (n, k)
    with np.errstate(all="ignore"):
        p = softmax(z)  # (n, k) in the model's dtype
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
    return {"model": str(path), "input_scale": scale, "source": "test set" if images is None else str(images),
            "computed_as": {"dtype": model.compute_dtype, "precision": model.precision}, "predictions": rows, **where}
