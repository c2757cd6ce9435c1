"""The floating-point formats of the lab, and the low-precision matrix product as hardware computes it.

    >>> import numpy as np
    >>> from mnist_cli.precision import DTYPES, finfo, matmul_lowp
    >>> DTYPES["bfloat16"].name, float(finfo("float16").max)
    ('bfloat16', 65504.0)
    >>> a = np.ones((1, 2049)); b = np.full((2049, 1), 2.0**-11); b[0] = 1
    >>> float(matmul_lowp(a, b, DTYPES["float16"])[0, 0])   # float32 accumulation: 1 + 2048 * 2^-11
    2.0

bfloat16 comes from ``ml_dtypes`` (the JAX team's NumPy extension): ``np.dtype`` knows it, its
elementwise ufuncs compute in float32 and round the result to bfloat16, but ``np.finfo`` does not know
it (use :func:`finfo`), ``np.clip`` and ``np.matmul`` return float32, and ``np.sum`` rounds after every
addition. The losses (:mod:`mnist_cli.losses`) make their reductions explicit for that reason.

Rounding in :func:`matmul_lowp`, as a tensor core or a bf16 FMA unit does it:

1. ``a`` and ``b`` are rounded to ``dtype`` (round to nearest, ties to even);
2. each product ``a_ij * b_jl`` is formed in float32, exactly: the significands have 11 (float16) or
   8 (bfloat16) bits, a product at most 22 or 16, float32 holds 24 (a bfloat16 product can still leave
   float32's range, as on hardware);
3. the products are summed in float32 (by the BLAS ``sgemm``, in its own order);
4. the float32 sum is rounded to ``dtype`` once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cache

import numpy as np

from mnist_cli.settings import HALF_NAMES

__all__ = ["DTYPES", "LOW_PRECISION", "as_dtype", "finfo", "matmul_lowp"]

#: The dtype names, in the order the lab lists them.
NAMES = ("float16", "bfloat16", "float32", "float64")


@cache
def _dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes  # ~0.6 s of import: only for a run that asks for bfloat16

        return np.dtype(ml_dtypes.bfloat16)
    if name not in NAMES:
        raise KeyError(name)
    return np.dtype(name)


class _Dtypes(Mapping):
    """name -> NumPy dtype, the only place a dtype is chosen by name; bfloat16 loads ml_dtypes when asked for."""

    def __getitem__(self, name: str) -> np.dtype:
        return _dtype(name)

    def __iter__(self) -> Iterator[str]:
        return iter(NAMES)

    def __len__(self) -> int:
        return len(NAMES)


DTYPES = _Dtypes()
#: the half formats: reductions and products accumulate in float32 (see :func:`matmul_lowp`).
LOW_PRECISION = HALF_NAMES


def as_dtype(dtype) -> np.dtype:
    """``np.dtype(dtype)``, where a name may also be ``"bfloat16"`` before ml_dtypes is loaded."""
    return _dtype(dtype) if isinstance(dtype, str) and dtype in NAMES else np.dtype(dtype)


def finfo(dtype):
    """``np.finfo`` that also knows bfloat16 (``ml_dtypes.finfo``): ``max``, ``eps``, ``smallest_subnormal``..."""
    dtype = as_dtype(dtype)
    if dtype.name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.finfo(dtype)
    return np.finfo(dtype)


def matmul_lowp(a: np.ndarray, b: np.ndarray, dtype) -> np.ndarray:
    """``round_dtype(sum_j round_dtype(a)_ij * round_dtype(b)_jl)``, the sum in float32: (m, d) @ (d, k) -> (m, k).

    See the module docstring for where each rounding happens. float32 and float64 are a plain
    ``a @ b`` in that dtype.
    """
    dtype = np.dtype(dtype)
    if dtype.itemsize >= 4:
        return np.asarray(a, dtype) @ np.asarray(b, dtype)  # (m, k)
    a32 = np.asarray(a).astype(dtype).astype(np.float32)  # (m, d) rounded to dtype, held exactly in float32
    b32 = np.asarray(b).astype(dtype).astype(np.float32)  # (d, k)
    with np.errstate(over="ignore"):  # a sum beyond dtype's range rounds to +-inf, as on hardware
        return (a32 @ b32).astype(dtype)  # (m, k): float32 accumulation, one rounding
