"""The losses' edges pinned to exact values (issue 23's mutants): the clip's bounds are inclusive, a loss
scale of exactly 2 is applied, and which losses break in which dtype is the documented table."""

import math
from fractions import Fraction

import numpy as np
import pytest

from mnist_cli.losses import (
    LOSSES,
    _overflow_threshold,
    breaks_like_naive,
    clipped,
    clipped_from_probs,
    fused,
    gradient_overflow_limit,
    naive,
)
from mnist_cli.rounding import DTYPES, finfo


def test_clip_passes_the_gradient_of_a_target_probability_of_exactly_one():
    # z = [0, -20 x 9] in float32: exp(-20) = 2.06e-9 each, their sum 1.9e-8 is below half an ulp of 1
    # (5.96e-8), so s = 1 and p[target] = 1 exactly, the others 2.06e-9 (above the 1e-10 floor). The clip
    # passes both (bounds included, as torch.clamp's backward), so the gradient is the fused one,
    # (p - onehot) / n: p_j for j != target, exactly 0 for the target.
    z = np.array([[0.0] + [-20.0] * 9], np.float32)
    y = np.array([0])
    e = np.float32(np.exp(np.float32(-20.0)))
    p = np.array([[1.0] + [e] * 9], np.float32)
    loss, grad = clipped_from_probs(p, y)
    assert loss == 0.0
    np.testing.assert_array_equal(grad[0, 1:], np.full(9, e, np.float32))  # p_j * (0 - (-1 * 1)) = p_j
    assert grad[0, 0] == 0.0
    _, through_softmax = clipped(z, y)
    np.testing.assert_array_equal(through_softmax, grad)  # softmax gives that same p


def test_clip_passes_the_gradient_at_its_lower_bound_and_not_below():
    # p[target] = 1e-10 (the floor, rounded to float64: itself): dL/dp = -1 / 1e-10 passes; just below, 0.
    lo = 1e-10
    for p_t, live in ((lo, True), (np.nextafter(lo, 0), False)):
        p = np.array([[p_t, 1 - p_t]])
        _, grad = clipped_from_probs(p, np.array([0]))
        # softmax Jacobian: dz_0 = p0 (g0 - p0 g0) = p0 g0 (1 - p0) = -(1 - p0) when live, else 0
        assert grad[0, 0] == (pytest.approx(-(1 - p_t), rel=1e-12) if live else 0.0)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("name", ["fused", "naive", "clipped"])
def test_a_loss_scale_of_exactly_two_doubles_the_gradient(name, dtype):
    # GradScaler reaches 2 after 15 back-offs from 2**16; scaling by a power of two is exact, so the gradient
    # of 2 L is bit for bit twice that of L, and the loss itself is unscaled.
    dt = DTYPES[dtype]
    z = np.array([[1.0, -0.5, 0.25, 2.0], [0.0, 0.5, -1.0, 0.125]], dt)
    y = np.array([3, 1])
    loss1, g1 = LOSSES[name](z, y)
    loss2, g2 = LOSSES[name](z, y, grad_scale=2.0)
    assert loss2 == loss1
    assert np.all(g1 != 0)
    np.testing.assert_array_equal(g2.astype(np.float64), 2 * g1.astype(np.float64))


def test_a_loss_scale_of_two_through_each_reference_function():
    z = np.array([[0.0, math.log(3.0)]])  # p = [1/4, 3/4]
    y = np.array([0])
    expected = np.array([[2 * (0.25 - 1), 2 * 0.75]])  # 2 (p - onehot) / 1
    for fn in (fused, naive, clipped):
        np.testing.assert_allclose(fn(z, y, grad_scale=2.0)[1], expected, rtol=1e-14)


@pytest.mark.parametrize("dtype,expected", [
    ("float64", {"fused": False, "naive": True, "clipped": False}),
    ("float32", {"fused": False, "naive": True, "clipped": False}),
    ("bfloat16", {"fused": False, "naive": True, "clipped": False}),  # its clip floor is 1.00044e-10
    ("float16", {"fused": False, "naive": True, "clipped": True}),  # 1e-10 rounds to 0: clipped is naive
])
def test_which_losses_break_like_naive(dtype, expected):
    assert {name: breaks_like_naive(name, dtype) for name in LOSSES} == expected
    assert {name: breaks_like_naive(name, DTYPES[dtype]) for name in LOSSES} == expected


def _exact_threshold(dtype) -> Fraction:
    """max + ulp(max) / 2 exactly, ulp(max) = 2**(maxexp - 1) * eps."""
    f = finfo(dtype)
    return Fraction(float(f.max)) + Fraction(2) ** (f.maxexp - 1) * Fraction(float(f.eps)) / 2


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_the_overflow_threshold_is_max_plus_half_an_ulp(dtype):
    # the code's max * (1 + eps / 4) is within max * eps**2 / 4 of the exact max + ulp(max) / 2
    exact = _exact_threshold(dtype)
    f = finfo(dtype)
    if dtype == "float64":  # max + ulp / 2 is beyond float64 itself: the closest it holds is max
        assert _overflow_threshold(dtype) == float(f.max)
        return
    assert abs(Fraction(_overflow_threshold(dtype)) - exact) / exact <= Fraction(float(f.eps)) ** 2
    one_in = float(f.eps) / 64
    with np.errstate(over="ignore"):
        assert np.asarray(float(exact) * (1 + one_in)).astype(DTYPES[dtype]) == np.inf
    assert np.asarray(float(exact) * (1 - one_in)).astype(DTYPES[dtype]) == f.max


@pytest.mark.parametrize("dtype, n, ties, printed", [  # the figures explain prints (.1f), from the docstring
    ("float32", 1, 9, "86.5"), ("bfloat16", 1, 9, "86.5"), ("float64", 1, 9, "707.6"), ("float16", 1, 9, "8.9"),
    ("float32", 100, 9, "91.1"), ("bfloat16", 100, 9, "91.1"), ("float64", 100, 9, "712.2"), ("float16", 100, 9, "13.5"),
    ("float32", 100, 1, "93.3"), ("float64", 100, 1, "714.4"), ("float16", 100, 1, "15.7"),
])
def test_gradient_overflow_limits_in_closed_form(dtype, n, ties, printed):
    r = float(np.asarray(1.0 / n).astype(DTYPES[dtype]))  # 1/n as the dtype holds it
    ratio = _exact_threshold(dtype) / (Fraction(r) * ties)  # exp(gap) = M / (r ties), M beyond float64 for float64
    exact = math.log(ratio.numerator) - math.log(ratio.denominator)
    # the code's M is within a relative eps**2 of the exact one (float64: eps / 2), so is the log's difference
    assert gradient_overflow_limit(dtype, n, ties) == pytest.approx(exact, abs=float(finfo(dtype).eps) ** 2 + 1e-12)
    assert f"{gradient_overflow_limit(dtype, n, ties):.1f}" == printed


@pytest.mark.parametrize("grad_scale", [0.5, 0.25, 4.0])
@pytest.mark.parametrize("name", ["fused", "naive", "clipped"])
def test_every_power_of_two_loss_scale_is_applied(name, grad_scale):
    # a dynamic scaler goes below 1 after 17 back-offs from 2**16: 0.5 must halve the gradient too
    z = np.array([[1.0, -0.5, 0.25, 2.0]], np.float32)
    y = np.array([2])
    _, g1 = LOSSES[name](z, y)
    _, g = LOSSES[name](z, y, grad_scale=grad_scale)
    np.testing.assert_array_equal(g.astype(np.float64), grad_scale * g1.astype(np.float64))


def test_clip_passes_no_gradient_above_its_upper_bound():
    # probabilities from another framework may exceed 1 by a rounding: clamp's backward passes nothing there
    p = np.array([[np.nextafter(1.0, 2.0), 0.0]])
    loss, grad = clipped_from_probs(p, np.array([0]))
    assert loss == 0.0  # -log(clip(p)) = -log(1)
    np.testing.assert_array_equal(grad, np.zeros((1, 2)))


def test_the_fused_kernel_against_its_closed_form():
    # m = 1 block, r = 4 rows (k = 3 classes and one padding row), w = 2 examples, transposed
    z = np.array([[0.0, 0.0, 0.0], [0.0, math.log(2.0), math.log(5.0)]])  # p = 1/3 each; [1, 2, 5] / 8
    y = np.array([1, 2])
    zt = np.zeros((1, 4, 2))
    zt[0, :3, :] = z.T
    t = np.array([1 * 2 + 0, 2 * 2 + 1])  # flat positions of z[i, y_i] in (1, 4, 2)
    kernel = LOSSES["fused"].fast(3, np.float64, healthy_gap=10.0)
    gap, loss_sum, G = kernel(zt, t, 0.5)
    assert gap == pytest.approx(math.log(5.0), rel=1e-15)
    assert loss_sum == pytest.approx((math.log(3.0) - 0.0) + (math.log(8.0) - math.log(5.0)), rel=1e-14)
    p = np.array([[1 / 3, 1 / 3, 1 / 3], [1 / 8, 2 / 8, 5 / 8]])
    p[[0, 1], y] -= 1
    np.testing.assert_allclose(G[0, :3, :], 0.5 * p.T, rtol=1e-14, atol=1e-16)
    assert np.all(G[0, 3, :] == 0)  # the padding row
    gap, loss_sum, _ = LOSSES["fused"].fast(3, np.float64, healthy_gap=1.0)(zt, t, 0.5)
    assert (gap, loss_sum) == (pytest.approx(math.log(5.0)), None)  # past the healthy gap: not proved, no loss
    zt[0, 0, 1] = np.nan
    gap, loss_sum, _ = kernel(zt, t, 0.5)
    assert gap != gap and loss_sum is None
