"""The dtype table and the emulated low-precision product (:func:`mnist_cli.rounding.linear` of rounded
operands), against closed forms and an independent computation (exact float64 products of the rounded
inputs, with the float32 summation error bound)."""

import numpy as np
import pytest

from mnist_cli.model import Model
from mnist_cli.rounding import DTYPES, finfo, linear
from mnist_cli.settings import DTYPE_NAMES, HALF_NAMES

LOW = [DTYPES[name] for name in HALF_NAMES]


def matmul_lowp(a, b, dtype):
    """``rnd(rnd(a) @ rnd(b))`` as :func:`linear` computes it, the operands rounded from float64 once."""
    a32, b32 = (np.asarray(m).astype(dtype).astype(np.float32) for m in (a, b))
    return linear(a32, b32, np.float32(0), dtype).astype(dtype)


def test_table_names_every_dtype_once():
    assert list(DTYPES) == list(DTYPE_NAMES)
    assert all(DTYPES[name].name == name for name in DTYPES)


def test_bfloat16_finfo_closed_forms():
    # 8 significand bits (7 stored) and float32's exponent range
    f = finfo("bfloat16")
    assert float(f.eps) == 2.0**-7
    assert float(f.max) == (2 - 2.0**-7) * 2.0**127
    assert float(f.smallest_subnormal) == 2.0**-133
    assert float(finfo("float16").max) == 65504.0 and float(finfo("float16").smallest_subnormal) == 2.0**-24


@pytest.mark.parametrize("dtype", LOW, ids=lambda d: d.name)
def test_products_accumulate_in_float32(dtype):
    # 1 + m * h with h half an ulp of 1 in the dtype: summed in the dtype, each addition is a tie that
    # rounds back to 1; summed in float32 it is exactly 1 + m h = 2, representable, so the result is 2
    h = float(finfo(dtype).eps) / 2
    m = int(round(1 / h))
    a = np.ones((1, m + 1))
    b = np.full((m + 1, 1), h)
    b[0] = 1
    out = matmul_lowp(a, b, dtype)
    assert out.dtype == dtype and float(out[0, 0]) == 2.0
    naive = dtype.type(1)
    for _ in range(m):
        naive = (naive + dtype.type(h)).astype(dtype)
    assert float(naive) == 1.0  # what per-addition rounding would give


@pytest.mark.parametrize("dtype", LOW, ids=lambda d: d.name)
def test_inputs_are_rounded_first(dtype):
    # 0.1 is not representable: the product is of the rounded inputs, rounded once
    a, b = np.array([[0.1]]), np.array([[3.0]])
    exact = float(np.float64(a[0, 0]).astype(dtype)) * 3.0  # exact in float64
    assert float(matmul_lowp(a, b, dtype)[0, 0]) == float(np.float64(exact).astype(dtype))


def test_a_logit_beyond_float16_is_inf_without_a_warning():
    model = Model(np.full((784, 10), 60000.0, np.float16), np.zeros(10, np.float16))
    with np.errstate(all="raise"):
        z = model.logits(np.full((3, 784), 255, np.uint8), input_scale=1.0)
    assert z.dtype == np.float16 and (z == np.inf).all()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dtype", LOW, ids=lambda d: d.name)
def test_matches_an_independent_product_within_the_float32_bound(dtype, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((20, 784)) * rng.uniform(0.1, 10)
    b = rng.standard_normal((784, 10)) * 0.05
    ar, br = a.astype(dtype).astype(np.float64), b.astype(dtype).astype(np.float64)  # rounded inputs, exact
    exact = ar @ br  # (20, 10): products exact, the float64 sum's error ~1e-16 relative
    # float32 summation of d terms: |s32 - exact| <= gamma_d * sum|a||b|, gamma_d = d u / (1 - d u)
    u = 2.0**-24
    d = a.shape[1]
    e32 = d * u / (1 - d * u) * (np.abs(ar) @ np.abs(br)) + 1e-12 * np.abs(exact)
    out = matmul_lowp(a, b, dtype).astype(np.float64)
    # then one rounding to the dtype: half its spacing at the float32 sum
    half_ulp = np.spacing(np.abs(exact + e32).astype(dtype)).astype(np.float64) / 2
    assert (np.abs(out - exact) <= e32 + half_ulp).all()


def test_integer_products_are_exact():
    # small integers: every product and partial sum is exact in float32 and |result| <= 160 is
    # representable (bfloat16 holds every integer up to 256)
    rng = np.random.default_rng(1)
    a, b = rng.integers(-2, 3, (5, 40)).astype(float), rng.integers(-2, 3, (40, 3)).astype(float)
    for dtype in LOW:
        np.testing.assert_array_equal(matmul_lowp(a, b, dtype).astype(np.float64), a @ b)


def test_linear_with_the_bias_after_rounds_the_product_first():
    """TensorFlow's MatMul then BiasAdd (a Keras Dense layer) rounds twice in float16: ``rnd(rnd(x @ W) + b)``,
    which differs from F.linear's single rounding where the product's rounding error and the bias's meet."""
    from mnist_cli.rounding import linear, round_to

    rng = np.random.default_rng(3)
    x = round_to(rng.random((200, 784), dtype=np.float32), "float16")
    W = round_to(rng.standard_normal((784, 10)).astype(np.float32) * 0.05, "float16")
    b = round_to(rng.standard_normal(10).astype(np.float32), "float16")
    with np.errstate(over="ignore"):
        twice = linear(x, W, b, "float16", bias_after=True)
        want = round_to(round_to(x @ W, "float16") + b, "float16")
        once = linear(x, W, b, "float16")
    np.testing.assert_array_equal(twice, want)
    assert np.count_nonzero(twice != once) > 0
    np.testing.assert_array_equal(linear(x, W, np.zeros(10, np.float32), "float16", bias_after=True),
                                  linear(x, W, np.zeros(10, np.float32), "float16"))  # no bias: one rounding


def test_a_dtype_named_bfloat16_is_found_in_a_fresh_process():
    """``as_dtype("bfloat16")`` loads ml_dtypes itself: NumPy knows no bfloat16 until something imports it, so a
    name must go through the table, not to ``np.dtype`` (a fresh interpreter, where nothing else imported it)."""
    import subprocess
    import sys

    code = ("import sys; from mnist_cli.rounding import as_dtype; assert 'ml_dtypes' not in sys.modules; "
            "print(as_dtype('bfloat16'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "bfloat16"
