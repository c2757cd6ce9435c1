"""Losses against truths that do not come from the code under test: closed forms, invariances,
extremes, finite differences, and an element-by-element replay of what autodiff computes."""

import math

import numpy as np
import pytest

from mnist_cli.losses import CLIP_MIN, LOSSES, clipped, fused, log_softmax, naive, softmax

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-5, np.float64: 1e-12}


def random_batch(seed, n=7, k=10, scale=3.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, k)) * scale).astype(dtype), rng.integers(0, k, n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(LOSSES))
def test_uniform_logits_closed_form(name, dtype):
    # z = 0: p = 1/k, loss = log k, dL/dz = (1/k - onehot) / n
    n, k = 4, 10
    z = np.zeros((n, k), dtype)
    y = np.array([0, 3, 9, 3])
    loss, grad = LOSSES[name](z, y)
    assert loss == pytest.approx(math.log(k), rel=RTOL[dtype])
    expected = np.full((n, k), 1 / k)
    expected[np.arange(n), y] -= 1
    np.testing.assert_allclose(grad, expected / n, rtol=RTOL[dtype] * 10, atol=1e-7)
    assert grad.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_two_class_softplus(dtype):
    # k = 2, label 0: loss = log(1 + exp(z1 - z0)) = softplus(d); dL/dz1 = sigmoid(d)
    d = np.array([-30.0, -2.0, 0.0, 0.5, 7.0, 40.0])
    z = np.stack([np.zeros_like(d), d], axis=1).astype(dtype)
    y = np.zeros(len(d), dtype=int)
    for i in range(len(d)):
        loss, grad = fused(z[i : i + 1], y[i : i + 1])
        assert loss == pytest.approx(np.logaddexp(0, d[i]), rel=RTOL[dtype], abs=1e-12)
        assert grad[0, 1] == pytest.approx(1 / (1 + math.exp(-d[i])), rel=RTOL[dtype] * 10, abs=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shift", [-1000.0, -1.5, 0.0, 3.0, 1000.0])
def test_fused_shift_invariance(dtype, shift):
    z, y = random_batch(1, dtype=dtype)
    loss0, grad0 = fused(z, y)
    loss1, grad1 = fused(z + dtype(shift), y)
    # adding 1000 to float32 logits rounds them to multiples of 2^-13: compare at that resolution
    tol = 1e-3 if (dtype == np.float32 and abs(shift) > 100) else RTOL[dtype] * 10
    assert loss1 == pytest.approx(loss0, rel=tol, abs=tol)
    np.testing.assert_allclose(grad1, grad0, rtol=tol, atol=tol / 10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gap", [1000.0, 1e4])
def test_fused_finite_for_huge_gaps(dtype, gap):
    z = np.array([[0.0, gap, -gap], [gap, 0.0, 0.0]], dtype=dtype)
    y = np.array([0, 0])
    loss, grad = fused(z, y)
    # row 0: loss = gap (log-sum-exp = gap, minus z[0] = 0); row 1: loss = 0 (confidently right)
    assert math.isfinite(loss) and loss == pytest.approx(gap / 2, rel=1e-6)
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad, np.array([[-1, 1, 0], [0, 0, 0]]) / 2, atol=1e-7)


def test_fused_propagates_nan_and_inf_honestly():
    # a NaN logit is not hidden; neither is an infinite one (inf - inf = nan in the shift)
    for bad in (np.nan, np.inf):
        loss, grad = fused(np.array([[0.0, bad]], np.float32), np.array([0]))
        assert math.isnan(loss)
        assert np.isnan(grad).any()


def test_log_softmax_matches_scipy_doc_example():
    # scipy.special.log_softmax docs: log_softmax([1000, 1]) = [0, -999], where log(softmax) gives -inf
    z = np.array([[1000.0, 1.0]])
    np.testing.assert_allclose(log_softmax(z), [[0.0, -999.0]])
    with np.errstate(divide="ignore"):
        assert np.log(softmax(z))[0, 1] == -np.inf


def numeric_grad(f, z, y, eps=1e-6):
    g = np.zeros_like(z)
    for idx in np.ndindex(*z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += eps
        zm[idx] -= eps
        g[idx] = (f(zp, y)[0] - f(zm, y)[0]) / (2 * eps)
    return g


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("name", list(LOSSES))
def test_gradient_matches_finite_differences(name, seed):
    z, y = random_batch(seed, n=5, k=6, scale=2.0)  # moderate logits: nothing clips or underflows
    _, grad = LOSSES[name](z, y)
    np.testing.assert_allclose(grad, numeric_grad(LOSSES[name], z, y), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(5))
def test_naive_equals_fused_where_finite(dtype, seed):
    z, y = random_batch(seed, n=50, scale=5.0, dtype=dtype)
    ln, gn = naive(z, y)
    lf, gf = fused(z, y)
    assert math.isfinite(ln)
    assert ln == pytest.approx(lf, rel=RTOL[dtype] * 10)
    np.testing.assert_allclose(gn, gf, rtol=1e-4 if dtype == np.float32 else 1e-9, atol=1e-7)


def autodiff_replay(z_row, label, n, dtype):
    """An independent element-by-element replay of the tutorial graph, with numpy scalars:
    p = softmax(z); L_row = -sum(y_ * log p); g = dL/dp = -y_/p/n; dz = p * (g - sum(g*p))."""
    t = dtype
    k = len(z_row)
    m = max(z_row)
    e = [t(np.exp(t(zj - m))) for zj in z_row]
    s = t(0)
    for ej in e:
        s = t(s + ej)
    p = [t(ej / s) for ej in e]
    yv = [t(1) if j == label else t(0) for j in range(k)]
    with np.errstate(all="ignore"):
        terms = [t(yv[j] * np.log(p[j])) for j in range(k)]
        g = [t(t(-yv[j] / p[j]) / t(n)) for j in range(k)]
        dot = t(0)
        for j in range(k):
            dot = t(dot + t(g[j] * p[j]))
        dz = [t(p[j] * t(g[j] - dot)) for j in range(k)]
    loss_row = -sum(terms, t(0))
    return loss_row, np.array(dz, dtype=t)


@pytest.mark.parametrize("dtype", DTYPES)
def test_naive_nan_pattern_matches_autodiff(dtype):
    big = 200.0 if dtype == np.float32 else 1000.0  # past exp's underflow for the dtype
    z = np.array(
        [
            [0.0, big, 0.0, 1.0],  # non-target classes underflow: 0 * log 0 = nan; g = 0/0
            [big, 0.0, 1.0, 2.0],  # all but class 0 underflow, the target (1) too: -1/0 = -inf, nan
            [0.5, 1.0, -1.0, 0.0],  # healthy row: finite, equals fused
        ],
        dtype=dtype,
    )
    y = np.array([1, 1, 0])
    loss, grad = naive(z, y)
    rows = [autodiff_replay(z[i], y[i], len(y), dtype) for i in range(3)]
    np.testing.assert_array_equal(np.isnan(grad), np.array([np.isnan(r[1]) for r in rows]))
    np.testing.assert_allclose(grad[2], rows[2][1], rtol=1e-5)
    assert np.isnan(grad[0]).all() and np.isnan(grad[1]).all()  # NaN spreads through the row
    assert np.isfinite(grad[2]).all()
    assert math.isnan(rows[0][0]) and math.isnan(rows[1][0])
    assert math.isnan(loss)  # mean of (nan, inf, finite) is nan
    _, fused_grad = fused(z[2:], y[2:])
    np.testing.assert_allclose(grad[2], fused_grad[0] / 3, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_naive_target_underflow_alone_gives_inf_loss(dtype):
    z = np.array([[800.0, 0.0]], dtype=dtype)  # k=2: the only non-target class is the winner, p=1
    loss, grad = naive(z, np.array([1]))
    assert loss == np.inf
    assert np.isnan(grad).all()  # -inf * 0 inside sum(g * p) = nan


@pytest.mark.parametrize("dtype", DTYPES)
def test_clipped_is_bounded_with_dead_gradient(dtype):
    z = np.array([[0.0, 900.0, 0.0], [0.2, 0.1, 0.0]], dtype=dtype)
    y = np.array([0, 0])
    loss, grad = clipped(z, y)
    assert math.isfinite(loss)
    row0_loss = -math.log(dtype(CLIP_MIN))  # the clip caps the confidently wrong example's loss
    row1_loss = float(np.logaddexp.reduce([0.2, 0.1, 0.0]) - 0.2)
    assert loss == pytest.approx((row0_loss + row1_loss) / 2, rel=1e-5)
    assert (grad[0] == 0).all()  # dead: p[target] < 1e-10, so clip passes no gradient
    _, fused_grad = fused(z[1:], y[1:])
    np.testing.assert_allclose(grad[1], fused_grad[0] / 2, rtol=1e-5)


@pytest.mark.parametrize("name", list(LOSSES))
def test_losses_do_not_warn(name):
    z = np.array([[0.0, 1e4, -1e4]], np.float32)
    with np.errstate(all="raise"):
        LOSSES[name](z, np.array([0]))  # warnings are silenced inside, narrowly
