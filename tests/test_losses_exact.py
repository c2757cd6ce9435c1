"""The losses' edges pinned to exact values (issue 23's mutants): the clip's bounds are inclusive, a loss
scale of exactly 2 is applied, and which losses break in which dtype is the documented table."""

import math

import numpy as np
import pytest

from mnist_cli.losses import LOSSES, breaks_like_naive, clipped, clipped_from_probs, fused, naive
from mnist_cli.rounding import DTYPES


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
