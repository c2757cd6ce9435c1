"""Half-precision rounding against independent implementations (issue 23's mutants): float16 by NumPy's own
cast, bfloat16 by integer round-half-even on the bits written here; the float32-accumulating reductions
against exact fractions; the inputs of every way against the pixel table, past one scratch slice of rows."""

from fractions import Fraction

import numpy as np
import pytest

from mnist_cli.rounding import DTYPES, Inputs, _round_bits, batch_mean, cast, class_sum, div_n, pixel_table, round_to

F16_EDGES = [0.0, -0.0, 65504.0, 65519.996, 65520.0, -65520.0, 2.0**-14, 2.0**-14 * (1 - 2.0**-11), 2.0**-24,
             2.0**-25, 2.0**-25 * 1.0000001, 3 * 2.0**-25, 2.0**-26, 1 + 2.0**-11, 1 + 3 * 2.0**-11, np.inf, -np.inf,
             np.nan, 6e-8, -6e-8, 1e-9, 1e5]


def _float32_sample(seed: int, n: int = 6000) -> np.ndarray:
    """Random float32 bit patterns (every exponent), float16's edges and ties, and small integers."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    a = bits.view(np.float32)
    near = (rng.standard_normal(n) * 10.0 ** rng.integers(-9, 6, n)).astype(np.float32)
    # NaNs whose payload would carry out of the exponent if rounded like numbers (to -0.0 or to inf)
    nans = np.array([0x7FFFFFFF, 0xFFFFFFFF, 0x7FFFF000, 0x7F801000, 0xFFC00001], np.uint32).view(np.float32)
    return np.concatenate([a, near, nans, np.array(F16_EDGES, np.float32)])


@pytest.mark.parametrize("seed", [0, 1])
def test_float16_rounding_is_numpys_cast_bit_for_bit(seed):
    a = _float32_sample(seed)
    assert a.size > 2048  # the bit path (small arrays take the cast itself)
    with np.errstate(over="ignore", invalid="ignore"):
        want = a.astype(np.float16).astype(np.float32)
        got = round_to(a, "float16")
        in_place = a.copy()
        round_to(in_place, "float16", out=in_place)
    for x in (got, in_place):
        same = (x.view(np.uint32) == want.view(np.uint32)) | (np.isnan(x) & np.isnan(want))
        assert same.all(), a[~same][:5]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_cast_to_float16_is_numpys_bit_for_bit_by_either_path(seed):
    """cast takes the bits (mostly subnormal results) or NumPy's cast (few): the same float16 either way, in the
    input's memory order (a later reduction's summation order follows it)."""
    sample = _float32_sample(seed)
    tiny = (sample[np.isfinite(sample)] * np.float32(2.0**-20)).astype(np.float32)  # mostly float16-subnormal
    for a in (sample, tiny, np.asfortranarray(np.resize(tiny, (60, 100)))):
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            want, got = a.astype(np.float16), cast(a, "float16")
        assert got.dtype == np.float16 and got.flags.f_contiguous == want.flags.f_contiguous
        same = (got.view(np.uint16) == want.view(np.uint16)) | (np.isnan(got) & np.isnan(want))
        assert same.all(), a[~same][:5]
    assert cast(sample, "float32") is sample


def _bfloat16_by_hand(a: np.ndarray) -> np.ndarray:
    """Round-half-even of float32 bits to 8 significand bits, in Python integers (finite results only)."""
    out = []
    for b in a.view(np.uint32).tolist():
        kept, rest = b >> 16, b & 0xFFFF
        if rest > 0x8000 or (rest == 0x8000 and kept & 1):
            kept += 1
        out.append((kept << 16) & 0xFFFFFFFF)
    return np.array(out, np.uint32).view(np.float32)


def test_bfloat16_bit_rounding_is_round_half_even():
    a = _float32_sample(2)
    a = a[np.isfinite(a) & (np.abs(a) < 3e38)]
    got = _round_bits(a.copy(), 16)
    np.testing.assert_array_equal(got.view(np.uint32), _bfloat16_by_hand(a).view(np.uint32))
    ties = np.array([1 + 2.0**-8, 1 + 3 * 2.0**-8, -(1 + 2.0**-8)], np.float32)  # halfway: to the even neighbour
    np.testing.assert_array_equal(_round_bits(ties.copy(), 16), np.array([1.0, 1 + 2.0**-6, -1.0], np.float32))
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(round_to(a, "bfloat16").view(np.uint32), _bfloat16_by_hand(a).view(np.uint32))


def test_float16_bit_rounding_in_the_normal_range():
    a = np.array([1 + 2.0**-11, 1 + 3 * 2.0**-11, 1 + 2.0**-11 + 2.0**-20, 1000.3], np.float32)
    want = np.array([1.0, 1 + 2 * 2.0**-10, 1 + 2.0**-10, 1000.5], np.float32)
    np.testing.assert_array_equal(_round_bits(a.copy(), 13), want)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_reductions_sum_in_float32_and_round_once(dtype):
    dt = DTYPES[dtype]
    v = np.array([2048.0, 1.0, 1.0, 1.0], dt)  # in the dtype 2048 + 1 rounds back to 2048 (float16 and bfloat16)
    assert batch_mean(v) == dt.type(float(Fraction(2051, 4)))
    runs = np.array([[2048.0, 1.0, 1.0, 1.0], [4.0, 4.0, 4.0, 5.0]], dt)  # (runs, B): one mean per run
    np.testing.assert_array_equal(batch_mean(runs), np.array([float(Fraction(2051, 4)), 4.25], dt))
    np.testing.assert_array_equal(class_sum(v[None, :]), np.array([[2051.0]], dt))
    np.testing.assert_array_equal(div_n(np.array([1.0, 2.0], dt), 3), np.array([1 / 3, 2 / 3], np.float32).astype(dt))
    assert batch_mean(v).dtype == dt and class_sum(v[None, :]).dtype == dt and div_n(v, 3).dtype == dt


@pytest.mark.parametrize("dtype, first, mean", [("float16", 2047.0, 683.0), ("bfloat16", 256.0, 86.0)])
def test_a_half_mean_is_rounded_once_not_sum_then_quotient(dtype, first, mean):
    # [first, 1, 1]: the sum first + 2 is not a value of the dtype (float16 2049 -> 2048, bfloat16 258 -> 256 or
    # 260), so rounding the sum before dividing by 3 gives another mean (682.5, 85.5) than rounding once
    dt = DTYPES[dtype]
    v = np.array([first, 1.0, 1.0], dt)
    assert float(Fraction(int(first) + 2, 3)) == pytest.approx(mean, abs=0.5)
    assert batch_mean(v) == dt.type(mean)
    assert class_sum(v[None, :])[0, 0] == dt.type(float(first) + 2)  # the sum itself rounded once


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_full_precision_reductions(dtype):
    v = np.array([1.0, 2.0, 4.0], dtype)
    assert batch_mean(v) == pytest.approx(7 / 3, rel=1e-7) and batch_mean(v).dtype == dtype
    np.testing.assert_allclose(batch_mean(np.stack([v, 2 * v])), [7 / 3, 14 / 3], rtol=1e-7)
    np.testing.assert_array_equal(class_sum(np.stack([v, v])), np.array([[7.0], [7.0]], dtype))
    np.testing.assert_array_equal(class_sum(np.ones((2, 3, 4), dtype)), np.full((2, 1, 4), 3.0, dtype))
    np.testing.assert_allclose(div_n(v, 4), v / 4, rtol=0)


@pytest.mark.parametrize("input_scale", [1.0, 3.0, 255.0, 1000.0, 0.01])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_inputs_of_every_way_are_the_pixel_table_past_a_scratch_slice(dtype, input_scale):
    B, d = 4200, 3  # more rows than one scratch slice (2048)
    pixels = (np.arange(B * d) % 256).astype(np.uint8).reshape(B, d)[::-1].copy()
    inputs = Inputs(input_scale, dtype, B, d)
    table = pixel_table(input_scale, dtype)
    np.testing.assert_array_equal(inputs(pixels).view(np.uint32), table[pixels].view(np.uint32))
    np.testing.assert_array_equal(inputs(pixels[:5]).view(np.uint32), table[pixels[:5]].view(np.uint32))
    with np.errstate(over="ignore"):  # the table itself: float32(p) * float32(input_scale / 255), cast by NumPy
        want = (np.arange(256, dtype=np.float32) * np.float32(input_scale / 255.0)).astype(DTYPES[dtype])
    np.testing.assert_array_equal(table.view(np.uint32), want.astype(np.float32).view(np.uint32))


def test_an_unknown_dtype_name_is_refused():
    for name in ("a", "bfloat", "float8"):
        with pytest.raises(KeyError):
            DTYPES[name]
