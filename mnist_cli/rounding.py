"""The floating-point formats of the lab and every rounding a half-precision computation makes: one place.

    >>> import numpy as np
    >>> from mnist_cli.rounding import DTYPES, finfo, linear, round_to
    >>> DTYPES["bfloat16"].name, float(finfo("float16").max)
    ('bfloat16', 65504.0)
    >>> x = np.ones((1, 2049), np.float32); W = np.full((2049, 1), 2.0**-11, np.float32); W[0] = 1
    >>> float(linear(x, W, np.zeros(1, np.float32), "float16")[0, 0])   # float32 accumulation: 1 + 2048 * 2^-11
    2.0

bfloat16 comes from ``ml_dtypes`` (the JAX team's NumPy extension): ``np.dtype`` knows it, its
elementwise ufuncs compute in float32 and round the result to bfloat16, but ``np.finfo`` does not know
it (use :func:`finfo`), ``np.clip`` and ``np.matmul`` return float32, and ``np.sum`` rounds after every
addition. Hence the explicit reductions below.

**Reductions** (:func:`class_sum`, :func:`batch_mean`, :func:`div_n`), used by every loss in every layout:
float16 and bfloat16 accumulate in float32 and round the total once, as PyTorch's CPU reductions do; the
division by a batch size is done in float32 so that ``n`` is exact (bfloat16 holds integers exactly only
up to 256). float32 and float64 reduce in their own dtype.

**Half-precision arrays** are held in float32 arrays whose values are representable in the half dtype
(NumPy has no float16 BLAS kernel, ml_dtypes' bfloat16 none at all); :func:`round_to` rounds
(to nearest, ties to even) wherever the framework would. A product, :func:`linear`, as a tensor core or a
bf16 FMA unit computes it:

1. the operands hold ``dtype`` values (:class:`Inputs` rounds a batch's pixels, :func:`round_to` weights);
2. each product ``x_ij * W_jl`` is formed in float32, exactly: the significands have 11 (float16) or
   8 (bfloat16) bits, a product at most 22 or 16, float32 holds 24 (a bfloat16 product can still leave
   float32's range, as on hardware);
3. the products and the bias are summed in float32 (by the BLAS ``sgemm``, in its own order);
4. the float32 sum is rounded to ``dtype`` once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cache

import numpy as np

from mnist_cli.settings import DTYPE_NAMES, HALF_NAMES

__all__ = ["DTYPES", "as_dtype", "finfo", "is_half", "class_sum", "batch_mean", "div_n", "flush", "cast", "round_to",
           "pixel_table", "Inputs", "linear", "linear_bias"]


@cache
def _dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes  # ~0.6 s of import: only for a run that asks for bfloat16

        return np.dtype(ml_dtypes.bfloat16)
    if name not in DTYPE_NAMES:
        raise KeyError(name)
    return np.dtype(name)


class _Dtypes(Mapping):
    """name -> NumPy dtype, in :data:`mnist_cli.settings.DTYPE_NAMES`' order: the only place a dtype is
    chosen by name; bfloat16 loads ml_dtypes when asked for."""

    def __getitem__(self, name: str) -> np.dtype:
        return _dtype(name)

    def __iter__(self) -> Iterator[str]:
        return iter(DTYPE_NAMES)

    def __len__(self) -> int:
        return len(DTYPE_NAMES)


DTYPES = _Dtypes()


def as_dtype(dtype) -> np.dtype:
    """``np.dtype(dtype)``, where a name may also be ``"bfloat16"`` before ml_dtypes is loaded."""
    return _dtype(dtype) if isinstance(dtype, str) and dtype in DTYPE_NAMES else np.dtype(dtype)


def finfo(dtype):
    """``np.finfo`` that also knows bfloat16 (``ml_dtypes.finfo``): ``max``, ``eps``, ``smallest_subnormal``..."""
    return _finfo(as_dtype(dtype))


@cache
def _finfo(dtype: np.dtype):  # per dtype, once: the losses ask at every step (np.dtype.name alone costs ~2 us)
    if dtype.name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.finfo(dtype)
    return np.finfo(dtype)


def is_half(dtype) -> bool:
    """float16 and bfloat16 (:data:`mnist_cli.settings.HALF_NAMES`): reductions and products accumulate in float32."""
    return dtype in HALF_NAMES if isinstance(dtype, str) else _is_half(as_dtype(dtype))


@cache
def _is_half(dtype: np.dtype) -> bool:
    return dtype.name in HALF_NAMES


@cache
def _tiny(dtype: np.dtype):
    """The smallest normal number of ``dtype``, as a scalar of it."""
    return dtype.type(finfo(dtype).smallest_normal)


# --- reductions -------------------------------------------------------------------------------------


def class_sum(x: np.ndarray) -> np.ndarray:
    """``sum_j x_.j.`` over the classes, axis 1 (kept): (n, k) -> (n, 1), (runs, k, B) -> (runs, 1, B);
    float16/bfloat16 summed in float32, rounded once."""
    if x.dtype.itemsize < 4:
        return np.sum(x, axis=1, keepdims=True, dtype=np.float32).astype(x.dtype)
    return np.sum(x, axis=1, keepdims=True)


def batch_mean(v: np.ndarray, sum_in: str = "float32"):
    """``sum_i v_i / n`` over the examples, the last axis: (n,) -> a scalar, (runs, B) -> (runs,);
    float16/bfloat16 summed and divided in float32, rounded once. ``sum_in="dtype"``: the sum is rounded to
    the half dtype before the division (PyTorch's float16 ``nll_loss``, TF's float16 ``reduce_mean``), so a
    batch whose sum passes 65504 has an ``inf`` mean."""
    n = v.shape[-1]
    if v.dtype.itemsize < 4:
        total = np.sum(v, axis=-1, dtype=np.float32)
        if sum_in == "dtype":
            total = total.astype(v.dtype).astype(np.float32)  # past 65504: inf
        return (total / np.float32(n)).astype(v.dtype)
    return np.add.reduce(v, axis=-1) / n


def div_n(x: np.ndarray, n: int) -> np.ndarray:
    """``x / n``; float16/bfloat16 divided in float32 and rounded once, so ``n`` is never rounded."""
    if x.dtype.itemsize < 4:
        return cast(x.astype(np.float32) / np.float32(n), x.dtype)
    return x / n


def flush(x: np.ndarray, on: bool = True) -> np.ndarray:
    """Flush to zero (FTZ; on inputs, DAZ): every entry with ``0 < |x| < smallest normal`` of x's dtype becomes
    0 of its sign, as TensorFlow's CPU kernels do (:mod:`mnist_cli.frameworks`). ``x`` itself where there is none
    (or ``on=False``), else a new array."""
    if not on:
        return x
    with np.errstate(invalid="ignore"):
        small = np.abs(x) < _tiny(x.dtype)
        if not small.any():  # the common case: x itself, not a copy
            return x
        return np.where(small, np.copysign(x.dtype.type(0), x), x)


# --- half-precision values held in float32 -------------------------------------------------------------

_U32 = np.uint32
#: dtype name -> the significand bits float32 has beyond it: the rounding of a float32 to float16 or
#: bfloat16 is an integer add-and-mask on its bits wherever the result is normal.
_DROP = {"float16": 13, "bfloat16": 16}
_INF_BITS = 0x7F800000  # inf as float32 bits: the exponent field
#: float16 arrays larger than this are rounded by bits (measured: a (100, 10) array casts in ~4 us, the
#: masks of the bit path cost ~10 us; at (784, 10) the cast takes 33 us, the bits 20).
_BITS_FROM = 2048
_FLOAT16 = np.dtype(np.float16)
#: Rows of inputs rounded at a time: Veltkamp's scratch stays in cache (0.8 MB), and a large batch or an
#: evaluation block needs no second buffer of its size (188 MB for a full batch, 6.4 MB a 2048-row block).
_SCRATCH_ROWS = 256


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
    """``float32(float16(a))`` in float32 arithmetic (~2x faster than NumPy's casts): ``(a + C) - C`` with
    ``C = 1.5 * 2**(e + 13)``, ``e`` the exponent of ``a`` (at least -14: below it float16 is subnormal, and
    ``C = 0.75``). The sum lies in C's binade, whose float32 spacing ``2**(e - 10)`` is float16's at ``a``, so
    the addition rounds ``a`` to float16's precision, to nearest, ties to even (C is an even multiple of that
    spacing), and the subtraction is exact. The sign bit of ``a`` is put back (a zero keeps its sign), results
    past 65504 become +-inf, and a NaN stays the same NaN (``NaN + C`` is that NaN)."""
    if out is not a:
        np.copyto(out, a)
    bits = out.view(_U32)
    sign = np.bitwise_and(bits, _U32(0x80000000))
    c = np.bitwise_and(bits, _U32(_INF_BITS))  # a's exponent field
    c += _U32(13 << 23)  # 2^(e + 13); inf and NaN wrap past the top, taken back by the minimum below
    np.maximum(c, _U32(0x3F000000), out=c)  # at least 2^-1 (e = -14: float16's subnormals share 2^-24)
    np.minimum(c, _U32(0x7F000000), out=c)  # at most 2^127: C finite (a sum past the range is inf, as it should be)
    c |= _U32(0x00400000)  # 1.5 * 2^(e + 13)
    C = c.view(np.float32)
    out += C
    out -= C
    bits |= sign  # -0 for a negative number that rounds to 0; a no-op elsewhere
    over = np.abs(out) > np.float32(65504)  # rounded past the largest float16 (False for NaN)
    if over.any():
        out[over] = np.copysign(np.float32(np.inf), out[over])
    return out


_F16_SUB = _U32(113 << 23)  # float32 bits of 2**-14: below it a float16 value is subnormal (or zero)
_HALF_U = _U32(126 << 23)  # float32 bits of 0.5, whose binade's spacing 2**-24 is float16's subnormal grid
_HALF = np.array(_HALF_U).view(np.float32)
_REBIAS = _U32((127 - 15) << 23)  # float32 exponent bias minus float16's, in place


def _f16_encode(r: np.ndarray) -> np.ndarray:
    """float32 ``r`` holding float16 values (:func:`_round_f16`'s result) as float16, by integer arithmetic: no
    rounding is left to do. Normal values: the exponent rebiased and the 10 significand bits shifted down;
    subnormal values (and zeros): ``r + 0.5``, exact in 0.5's binade, whose low bits are then float16's; inf stays
    inf and a NaN becomes float16's quiet NaN. The result has ``r``'s memory order, as ``astype`` keeps it."""
    u = r.view(_U32)
    sign = u & _U32(0x80000000)
    m = u ^ sign  # |r| as bits
    h = np.where(m < _F16_SUB, (np.abs(r) + _HALF).view(_U32) - _HALF_U, (m - _REBIAS) >> _U32(13))
    big = m >= _U32(_INF_BITS)
    if big.any():  # inf and NaN: float16's exponent field is all ones too
        h = np.where(big, np.where(m > _U32(_INF_BITS), _U32(0x7E00), _U32(0x7C00)), h)
    h |= sign >> _U32(16)
    out = np.empty_like(r, dtype=_FLOAT16)
    out.view(np.uint16)[...] = h
    return out


def cast(a: np.ndarray, dtype) -> np.ndarray:
    """``a.astype(dtype)`` (to nearest, ties to even), ``a`` itself if it is of ``dtype``. A float32 array whose float16
    results are over 1/8 subnormal is rounded by :func:`_round_f16` and encoded by :func:`_f16_encode` (~15 ns a
    value): NumPy's cast takes
    ~70 ns for each such value on an AMD EPYC (its F16C instruction's slow path), 2 ns for the others, and a fused
    step's gradient ``(p - y) / n`` is two-thirds such (a naive step's arrays under 2%, which NumPy casts faster)."""
    dtype = dtype if isinstance(dtype, np.dtype) else as_dtype(dtype)
    if a.dtype == dtype:
        return a
    if dtype == _FLOAT16 and a.dtype == np.float32:
        m = a.view(_U32) & _U32(0x7FFFFFFF)
        if 8 * np.count_nonzero((m - _U32(1)) < _F16_SUB - _U32(1)) > a.size:  # 0 < |a| < 2**-14 (0 - 1 wraps)
            return _f16_encode(_round_f16(a, np.empty_like(a)))
    return a.astype(dtype)


def round_to(a: np.ndarray, dtype, out: np.ndarray | None = None) -> np.ndarray:
    """``float32(dtype(a))``: float32 ``a`` rounded to the nearest ``dtype`` value (ties to even; past the
    largest finite value, +-inf), held in float32, which represents every float16 and bfloat16 exactly.
    float16 by bit arithmetic (:func:`_round_f16`, checked against NumPy's cast in ``tests/test_engine_half.py``),
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


def linear(x: np.ndarray, W: np.ndarray, b: np.ndarray, dtype, out: np.ndarray | None = None,
           bias_after: bool = False) -> np.ndarray:
    """``rnd(x @ W + b)`` from float32 arrays holding ``dtype`` values: the products are exact in float32
    (see :mod:`mnist_cli.rounding`), the sum and the bias in float32 (BLAS ``sgemm``), one rounding (PyTorch's
    ``F.linear``, an ``addmm``). ``bias_after``: ``rnd(rnd(x @ W) + b)``, the product rounded before the bias is
    added (TensorFlow's ``MatMul`` then ``BiasAdd``, a Keras ``Dense`` layer: measured in float16)."""
    return linear_bias(np.matmul(x, W, out=out), b, dtype, bias_after=bias_after)


def linear_bias(z: np.ndarray, b: np.ndarray, dtype, held: bool = True, bias_after: bool = False) -> np.ndarray:
    """:func:`linear` after its product ``z = x @ W`` (float32, in place): ``rnd(z + b)`` (``bias_after``:
    ``rnd(rnd(z) + b)``); ``z`` may hold a stack of runs' products (runs, n, k), each computed alone, with their
    biases ``b`` (runs, 1, k). ``held=False``: the same values as an array of ``dtype`` itself (one cast, for a loss
    computed in the dtype)."""
    if bias_after:
        round_to(z, dtype, out=z)
    z += b
    return round_to(z, dtype, out=z) if held else z.astype(dtype)

