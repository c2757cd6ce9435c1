"""Training and inference in float16 and bfloat16: pure half precision, and mixed precision as ``torch.autocast``.

    r = train(images, labels, TrainConfig(dtype="float16", precision="mixed", loss_scale="dynamic", input_scale=16))
    r.nan.steps_skipped, r.nan.loss_scale       # the first 3 scaled gradients overflow float16
    # -> (3, 8192.0)

NumPy has no float16 BLAS kernel (and ml_dtypes' bfloat16 none at all), so every array of a step is
held in **float32 arrays whose values are representable in the low dtype**, and each operation that
the framework would round is rounded here by :func:`round_to` (round to nearest, ties to even, via
NumPy's or ml_dtypes' casts). Where the rounding happens, step by step (``rnd`` rounds to the dtype):

==============  =====================================================  ==================================
what            pure (``--precision pure``)                            mixed (``--precision mixed``)
==============  =====================================================  ==================================
parameters      ``W, b`` in the dtype                                  float32 master ``W, b``
inputs          ``x = rnd(float32(pixel) * float32(s))``               the same (autocast casts x)
logits          ``z = rnd(x @ W + b)``: products exact in float32,     the same with ``rnd(W)``, ``rnd(b)``
                summed in float32, rounded once (a fused ``linear``)
loss, dL/dz     :data:`mnist_cli.losses.LOSSES` in the dtype: every    in float32 on ``float32(z)``
                op rounded, reductions accumulated in float32          (autocast's float32 list)
scaled dL/dz    --                                                     ``g = rnd(d(scale L)/dz)``: the scale
                                                                       enters where autograd's backward takes it
dL/dW, dL/db    ``rnd(x.T @ dL/dz)``, ``rnd(sum(dL/dz))`` (float32     ``rnd(x.T @ g)``, ``rnd(sum(g))``,
                accumulation, one rounding)                            then ``float32(.) / scale``
update          ``W = rnd(W - rnd(lr) * dL/dW)``, one rounding;        ``W -= lr * dL/dW`` in float32,
                ``b = rnd(b - rnd(rnd(lr) * dL/db))``: as              skipped when the scaler says so
                ``torch.optim.SGD``'s ``add_`` computes (below)
==============  =====================================================  ==================================

**The pure update** is what ``param.add_(grad, alpha=-lr)`` (``torch.optim.SGD``) does to float16 and
bfloat16 tensors on the CPU, measured in torch 2.13: ``alpha`` is converted to the tensor's dtype (so the
learning rate and the weight decay are rounded to it); the SIMD loop, which takes ``W`` (7840 entries, a
multiple of every vector width), computes ``W + alpha * g`` in float32 and rounds once; ``b`` (10 entries,
shorter than a vector) goes through the scalar loop, which computes in the dtype and also rounds the
product. (A build without SIMD, ``ATEN_CPU_CAPABILITY=default``, rounds ``W``'s product too.)

**Loss scaling** (:class:`LossScaler`, mixed precision only) has ``torch.amp.GradScaler``'s semantics:
``dynamic`` starts at ``2**16``, doubles after 2000 consecutive steps with finite gradients, and on a
step with a non-finite gradient halves and skips the update; a number ``N`` scales by ``N`` always and
skips the same steps (GradScaler with growth and backoff factors of 1); ``none`` neither scales nor
skips (autocast alone: a NaN gradient reaches the weights).

A gradient is *non-finite* here when any entry of ``dL/dW`` or ``dL/db`` is (the NaN report counts
these): in half precision ``x.T @ dL/dz`` can overflow although ``dL/dz`` is finite. The scaler decides
to skip on the *scaled* gradients, as GradScaler does (its ``found_inf`` is taken on each entry before the
multiplication by ``1/scale``). Below a scale of 1 the unscaling can itself overflow (below about
``2**-128`` the float32 reciprocal is inf, and ``0 * inf`` is NaN): GradScaler then applies the non-finite
gradient, and so does this emulation; the report counts it as a non-finite gradient, not a skipped step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from mnist_cli.engine.base import BatchesTaken
from mnist_cli.precision import LOW_PRECISION, as_dtype

__all__ = ["round_to", "pixel_table", "Inputs", "linear", "LossScaler", "parse_loss_scale", "LowPrecisionSGD", "logits"]

#: GradScaler's defaults (torch.amp.GradScaler: init_scale, growth_factor, backoff_factor, growth_interval).
INIT_SCALE, GROWTH, BACKOFF, GROWTH_INTERVAL = 2.0**16, 2.0, 0.5, 2000


_U32 = np.uint32
#: dtype name -> the significand bits float32 has beyond it: the rounding of a float32 to float16 or
#: bfloat16 is an integer add-and-mask on its bits wherever the result is normal.
_DROP = {"float16": 13, "bfloat16": 16}
_F16_MAX_BITS, _INF_BITS = 0x477FE000, 0x7F800000  # 65504 and inf, as float32 bits
#: float16 arrays larger than this are rounded by bits (measured: a (100, 10) array casts in ~4 us, the
#: masks of the bit path cost ~10 us; at (784, 10) the cast takes 33 us, the bits 20).
_BITS_FROM = 2048
_FLOAT16 = np.dtype(np.float16)
#: Rows of inputs rounded at a time (a full batch would need a second 188 MB buffer otherwise).
_SCRATCH_ROWS = 2048


def _round_bits(a: np.ndarray, drop: int) -> np.ndarray:
    """Round float32 ``a`` in place to ``24 - drop`` significand bits, ties to even: exact wherever the
    result is a normal number of the target format (a carry into the exponent is the correct rounding)."""
    b = a.view(_U32)
    odd = np.right_shift(b, _U32(drop))
    np.bitwise_and(odd, _U32(1), out=odd)  # the last kept bit: ties go to the even neighbour
    odd += _U32((1 << (drop - 1)) - 1)
    b += odd
    b &= _U32(~((1 << drop) - 1) & 0xFFFFFFFF)
    return a


def _round_f16(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``float32(float16(a))`` by bit arithmetic (twice as fast as NumPy's casts): the normal range by
    :func:`_round_bits`, subnormals (``0 < |a| < 2**-14``, multiples of ``2**-24``) by adding and taking away
    0.75 (whose float32 spacing is ``2**-24``), results past 65504 to +-inf; NaN stays NaN."""
    if out is not a:
        np.copyto(out, a)
    mag = np.bitwise_and(out.view(_U32), _U32(0x7FFFFFFF))  # |a| as bits
    small = (mag - _U32(1)) < _U32(0x38800000 - 1)  # 0 < |a| < 2^-14 (0 wraps to the top)
    tiny = out[small] if small.any() else None  # copies, before the rounding below
    nan = mag > _U32(_INF_BITS)
    nans = out[nan] if nan.any() else None  # a NaN's payload must not carry into inf
    _round_bits(out, 13)
    if tiny is not None:
        out[small] = np.copysign((np.abs(tiny) + np.float32(0.75)) - np.float32(0.75), tiny)
    np.bitwise_and(out.view(_U32), _U32(0x7FFFFFFF), out=mag)
    over = (mag > _U32(_F16_MAX_BITS)) & (mag < _U32(_INF_BITS))  # rounded past the largest float16, not NaN
    if over.any():
        out[over] = np.copysign(np.float32(np.inf), out[over])
    if nans is not None:
        out[nan] = nans
    return out


def round_to(a: np.ndarray, dtype, out: np.ndarray | None = None) -> np.ndarray:
    """``float32(dtype(a))``: float32 ``a`` rounded to the nearest ``dtype`` value (ties to even; past the
    largest finite value, +-inf), held in float32, which represents every float16 and bfloat16 exactly.
    float16 by bit arithmetic (:func:`_round_f16`, checked against NumPy's cast in ``tests/test_lowp.py``),
    bfloat16 by ml_dtypes' cast. ``out`` may be ``a``. Called where NumPy's errors are not ignored (the
    trainer ignores them), a result past the range warns of overflow as NumPy's cast does."""
    a = np.asarray(a, np.float32)
    if out is None:
        out = np.empty_like(a)
    dtype = dtype if isinstance(dtype, np.dtype) else as_dtype(dtype)
    if a.size > _BITS_FROM and dtype == _FLOAT16:  # small arrays: the cast costs less than the masks
        return _round_f16(a, out)
    np.copyto(out, a.astype(dtype), casting="unsafe")  # past the range: +-inf (NumPy warns unless told not to)
    return out


def pixel_table(input_scale: float, dtype) -> np.ndarray:
    """(256,) float32: ``rnd(float32(p) * float32(input_scale / 255))`` for every pixel value ``p``."""
    with np.errstate(over="ignore"):
        return round_to(np.arange(256, dtype=np.float32) * np.float32(input_scale / 255.0), dtype)


class Inputs:
    """A batch's inputs ``x = rnd(float32(pixel) * float32(s))`` into a reused (B, d) float32 buffer.

    ``x`` takes only 256 values (one per pixel value), so a cheaper way to compute it is exact for every
    batch once it is exact for those 256 (checked at construction against :func:`pixel_table`). Tried in
    order: no rounding at all (every ``p * s`` already a value of the dtype, e.g. raw pixels), Veltkamp's
    split ``c = x (2^t + 1); x - c + c`` (``t`` the bits float32 has beyond the dtype: three float passes),
    :func:`_round_bits` (five integer passes), and a look-up in the table (a gather through intp indices,
    ~2x slower than the bits).
    """

    def __init__(self, input_scale: float, dtype, B: int, d: int):
        self.dtype = as_dtype(dtype)
        self.s = np.float32(input_scale / 255.0)
        self.table = pixel_table(input_scale, self.dtype)
        self.drop = _DROP[self.dtype.name]
        self.split = np.float32(2**self.drop + 1)
        self.x = np.empty((B, d), np.float32)
        self.c = np.empty((min(B, _SCRATCH_ROWS), d), np.float32)  # Veltkamp's scratch, a slice of rows at a time
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = np.arange(256, dtype=np.float32) * self.s
            ways = {"exact": scaled, "veltkamp": self._veltkamp(scaled.copy(), np.empty_like(scaled)),
                    "bits": _round_bits(scaled.copy(), self.drop)}
        want = self.table.view(_U32)
        self.how = next((name for name, got in ways.items() if np.array_equal(got.view(_U32), want)), "table")

    def _veltkamp(self, x: np.ndarray, c: np.ndarray) -> np.ndarray:
        """``x`` rounded in place to the dtype's significand by Veltkamp's split (``c`` a scratch buffer)."""
        np.multiply(x, self.split, out=c)  # c = x (2^t + 1)
        x -= c  # x - c
        x += c  # hi = (x - c) + c: x to 24 - t bits, to nearest (ties are not always to even: checked)
        return x

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """``x`` (B, d) of uint8 ``pixels`` (B, d) (the buffer is reused by the next call)."""
        x = self.x[: pixels.shape[0]]
        if self.how == "table":
            return np.take(self.table, pixels, out=x)
        np.multiply(pixels, self.s, out=x, dtype=np.float32)
        if self.how == "veltkamp":
            for start in range(0, x.shape[0], _SCRATCH_ROWS):
                part = x[start : start + _SCRATCH_ROWS]
                self._veltkamp(part, self.c[: part.shape[0]])
            return x
        return _round_bits(x, self.drop) if self.how == "bits" else x


def linear(x: np.ndarray, W: np.ndarray, b: np.ndarray, dtype, out: np.ndarray | None = None) -> np.ndarray:
    """``rnd(x @ W + b)`` from float32 arrays holding ``dtype`` values: the products are exact in float32
    (see :mod:`mnist_cli.precision`), the sum and the bias in float32 (BLAS ``sgemm``), one rounding."""
    z = np.matmul(x, W, out=out)
    z += b
    return round_to(z, dtype, out=z)


def parse_loss_scale(text: str) -> float | None:
    """``"none"`` -> None, ``"dynamic"`` -> 0.0, a positive finite number -> itself; ValueError otherwise."""
    if text == "none":
        return None
    if text == "dynamic":
        return 0.0
    value = float(text)  # ValueError for anything else
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(text)
    return value


class LossScaler:
    """``torch.amp.GradScaler`` for one run: the scale, and whether a step's update is skipped.

    ``LossScaler("dynamic")``: scale ``2**16``, x2 after :data:`GROWTH_INTERVAL` finite steps in a row, x0.5
    and skip on a non-finite gradient. ``LossScaler("1024")``: a fixed scale, non-finite steps skipped.
    ``LossScaler("none")``: scale 1, nothing skipped (:attr:`active` is False).
    """

    def __init__(self, how: str):
        value = parse_loss_scale(how)
        self.active = value is not None
        self.dynamic = value == 0.0
        self.scale = np.float32(INIT_SCALE if self.dynamic else (value or 1.0))  # a float32, as GradScaler's
        self.good_steps = 0  # consecutive finite steps since the last change (GradScaler's growth tracker)

    def update(self, finite: bool) -> bool:
        """After a step whose scaled gradient was (not) ``finite``: return whether its update is skipped."""
        if not self.active:
            return False
        if not finite:
            if self.dynamic:
                self.scale = np.float32(self.scale * np.float32(BACKOFF))  # reaches 0 after 165 halvings
            self.good_steps = 0
            return True
        if self.dynamic:
            self.good_steps += 1
            if self.good_steps == GROWTH_INTERVAL:
                with np.errstate(over="ignore"):
                    self.scale = np.float32(self.scale * np.float32(GROWTH))
                self.good_steps = 0
        return False


def _finite(a: np.ndarray) -> bool:
    return bool(np.isfinite(a).all())


class LowPrecisionSGD(BatchesTaken):
    """The SGD engine of a float16 or bfloat16 run (an :class:`mnist_cli.engine.Engine`), pure or mixed.

    The parameters are one float32 array ``[W; b]`` (d + 1, k): the dtype's values (pure) or the float32
    master weights (mixed). See the module docstring for every rounding. Like every engine it runs inside
    the trainer's ``np.errstate(all="ignore")``: overflow to inf and NaN are results here, not errors.
    """

    def __init__(self, images, labels, model, config, loss_fn: Callable, acct):
        self.images, self.labels, self.loss_fn, self.acct = images, labels, loss_fn, acct
        self.low = as_dtype(config.dtype)
        self.mixed = config.precision == "mixed"
        self.params = np.concatenate([model.W, model.b[None, :]]).astype(np.float32)  # (d + 1, k)
        self.W, self.b = self.params[:-1], self.params[-1]
        self.B = config.batch_size
        self.inputs = Inputs(config.input_scale, self.low, self.B, images.shape[1])
        self.wd = np.float32(config.weight_decay)
        self.scaler = LossScaler(config.loss_scale)
        self.z = np.empty((self.B, self.b.shape[0]), np.float32)  # (B, k) reused

    def _weights(self) -> tuple[np.ndarray, np.ndarray]:
        """``(W, b)`` as the product sees them: the parameters (pure), rounded master weights (mixed)."""
        if self.mixed:
            return round_to(self.W, self.low), round_to(self.b, self.low)
        return self.W, self.b

    def _gradients(self, x: np.ndarray, dz: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, bool]:
        """``(dL/dW, dL/db, scaled ones finite, unscaled ones finite)``: the gradients in float32, rounded half
        products of ``dz`` (scaled in mixed precision), unscaled; whether the scaled ones were finite
        (GradScaler's test) and whether the unscaled ones are (the NaN report's)."""
        scale = self.scaler.scale if self.mixed else np.float32(1)
        g = dz.astype(np.float32)  # (B, k), already scaled: the loss took the scale (loss_fn's grad_scale)
        if self.mixed:
            g = round_to(g, self.low, out=g)  # autocast's cast of the gradient to the dtype
        gW = round_to(x.T @ g, self.low)  # (d, k)
        gb = round_to(np.sum(g, axis=0, dtype=np.float32), self.low)  # (k,)
        scaled_ok = _finite(gW) and _finite(gb)  # GradScaler's found_inf, before the unscaling
        if scale == 1:
            return gW, gb, scaled_ok, scaled_ok
        inv = np.float32(np.float64(1.0) / np.float64(scale))  # GradScaler's float32 reciprocal (inf at 0)
        gW *= inv
        gb *= inv
        # a factor in (0, 1] keeps finite finite and non-finite non-finite; a larger one can overflow
        unscaled_ok = scaled_ok if 0 < inv <= 1 else _finite(gW) and _finite(gb)
        return gW, gb, scaled_ok, unscaled_ok

    def step(self, step: int, j: int, lr) -> tuple[float, bool]:
        idx, y = self.take(j)
        x = self.inputs(self.images[idx])  # (B, d) gather + scale + round
        W, b = self._weights()
        z32 = linear(x, W, b, self.low, out=self.z)  # (B, k) the dtype's logits, in float32
        z = z32 if self.mixed else z32.astype(self.low)  # what the loss sees
        loss, dz = self.loss_fn(z, y, self.scaler.scale) if self.mixed else self.loss_fn(z, y)  # d(scale L)/dz
        gW, gb, scaled_ok, grad_ok = self._gradients(x, dz)
        bad = self.acct.record(step, loss, z, gb, idx, y, grad_finite=grad_ok)
        if bad and self.mixed and self.acct.snapshot.step == step:
            self.acct.snapshot.loss_scale = float(self.scaler.scale)  # before the scaler changes it
        skipped = self.acct.skip(step, self.scaler, scaled_ok) if self.mixed else False
        if self.acct.halts(bad) or skipped:
            return loss, bad
        self._update(gW, gb, np.float32(lr))
        return loss, bad

    def _update(self, gW: np.ndarray, gb: np.ndarray, lr: np.float32) -> None:
        """``W -= lr * (dL/dW + wd * W)``, ``b -= lr * dL/db``: in float32 (mixed); pure as torch's ``add_``
        (the module docstring): lr and wd rounded to the dtype, ``W`` rounded once, ``b``'s product rounded too."""
        if self.mixed:
            if self.wd:
                gW = gW + self.wd * self.W
            self.W -= lr * gW
            self.b -= lr * gb
            return
        lr = np.float32(self.low.type(lr))  # add_'s alpha, in the tensor's dtype
        if self.wd:
            gW = round_to(gW + np.float32(self.low.type(self.wd)) * self.W, self.low)
        self.W -= lr * gW
        self.b -= round_to(lr * gb, self.low)
        round_to(self.params, self.low, out=self.params)

    def finite(self) -> bool:
        return _finite(self.params)

    def export(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dtype = np.float32 if self.mixed else self.low
        return params[:-1].astype(dtype), params[-1].astype(dtype)

    def close(self) -> None:
        pass


def logits(images: np.ndarray, W: np.ndarray, b: np.ndarray, input_scale: float, dtype, block: int = 2048) -> np.ndarray:
    """``rnd(x @ rnd(W) + rnd(b))`` of uint8 ``images`` (n, d), ``x`` the rounded inputs (:func:`pixel_table`):
    the logits a float16 or bfloat16 model (pure, or mixed under autocast) computes, (n, k) in ``dtype``."""
    dtype = as_dtype(dtype)
    assert dtype.name in LOW_PRECISION, dtype
    n, d = images.shape
    inputs = Inputs(input_scale, dtype, min(block, n), d)
    with np.errstate(over="ignore", invalid="ignore"):  # a weight or logit past the dtype's range is inf, not an error
        Wr, br = round_to(W, dtype), round_to(b, dtype)
        out = np.empty((n, br.shape[0]), dtype)
        for start in range(0, n, block):
            out[start : start + block] = linear(inputs(images[start : start + block]), Wr, br, dtype).astype(dtype)
    return out
