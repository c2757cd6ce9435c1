"""Losses against truths that do not come from the code under test: closed forms, invariances,
extremes, finite differences, and an element-by-element replay of what autodiff computes."""

import math

import numpy as np
import pytest

from mnist_cli.losses import CLIP_MIN, LOSSES, clipped, fused, log_softmax, naive, softmax
from mnist_cli.rounding import DTYPES as BY_NAME
from mnist_cli.rounding import finfo

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-5, np.float64: 1e-12}
F16, BF16 = BY_NAME["float16"], BY_NAME["bfloat16"]
ALL = [F16, BF16, np.dtype(np.float32), np.dtype(np.float64)]


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
    """An independent element-by-element replay of the tutorial graph as PyTorch autograd computes it,
    with numpy scalars: p = softmax(z); L_row = -sum(y_ * log p); mean/neg/sum/mul backward give
    -y_/n, log backward g = dL/dp = (-y_/n) / p; softmax backward dz = (g - sum(g*p)) * p."""
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
        g = [t(t(-yv[j] / t(n)) / p[j]) for j in range(k)]
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


# --- the order of autograd's operations -------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_issue_example_finite_in_a_batch_broken_alone(dtype):
    # issue 12: logits [0,0,0,-88,0,...], label 3. In a batch of 100, mean's backward forms -1/100 before
    # log's backward divides by p ~ exp(-88)/9: -0.01/p ~ -1.8e36 is finite; alone, -1/p ~ -1.5e39
    # overflows float32 (and the float64 twin, -708, overflows float64 alone).
    gap = 88.0 if dtype == np.float32 else 708.0
    row = np.zeros(10, dtype)
    row[3] = -gap
    z = np.zeros((100, 10), dtype)
    z[0] = row
    y = np.full(100, 3)
    loss, grad = naive(z, y)
    assert math.isfinite(loss) and np.isfinite(grad).all()
    _, alone = naive(row[None, :], y[:1])
    assert not np.isfinite(alone).any()  # -inf at the target: NaN there, +inf elsewhere


@pytest.mark.parametrize("dtype", DTYPES)
def test_naive_grad_matches_replay_bit_for_bit_in_the_window(dtype):
    # gaps where (-y_/p)/n and (-y_/n)/p part ways at n = 100 (float32 86.5-93.3): the library follows the
    # replay of autograd's order exactly, pattern and bits (same ops, same order, no sums of two non-zeros)
    gaps = np.linspace(86.0, 94.0, 9) if dtype == np.float32 else np.linspace(707.0, 715.0, 9)
    n = 100
    for gap in gaps:
        z = np.zeros((n, 10), dtype)
        z[0, 3] = -gap
        y = np.full(n, 3)
        _, grad = naive(z, y)
        _, want = autodiff_replay(z[0], 3, n, dtype)
        np.testing.assert_array_equal(grad[0], want)


# --- float16 and bfloat16 ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ALL, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", list(LOSSES))
def test_every_dtype_in_every_loss(name, dtype):
    # z = 0: p = 1/k, loss = log k, dL/dz = (1/k - onehot)/n, to a few eps of the dtype (each op rounds once)
    eps = float(finfo(dtype).eps)
    n, k = 4, 10
    z = np.zeros((n, k), dtype)
    y = np.array([0, 3, 9, 3])
    loss, grad = LOSSES[name](z, y)
    assert grad.dtype == dtype
    assert loss == pytest.approx(math.log(k), rel=4 * eps)
    expected = np.full((n, k), 1 / k)
    expected[np.arange(n), y] -= 1
    np.testing.assert_allclose(grad.astype(np.float64), expected / n, rtol=0, atol=8 * eps / n)


def _round(x, dtype):
    return np.asarray(x, np.float64).astype(dtype).astype(np.float64)


def test_bfloat16_row_sum_rounds_once():
    # e = [1, exp(-6.25) x 9]: summed in bfloat16 one addition at a time every 1 + 0.0019 rounds back to 1
    # (half its spacing at 1 is 0.0039); summed in float32 and rounded once, s = bf16(1.0174) = 1.015625
    z = np.full((1, 10), -6.25, BF16)
    z[0, 0] = 0
    e = _round(np.exp(np.float32(-6.25)), BF16)  # exp in float32, rounded: what ml_dtypes computes
    s = _round(np.float32(1) + np.float32(e) * 9, BF16)
    assert s == 1.015625
    p = softmax(z)
    assert p.dtype == BF16
    assert float(p[0, 0]) == _round(1 / s, BF16) and float(p[0, 1]) == _round(e / s, BF16)


@pytest.mark.parametrize("dtype", [F16, BF16], ids=lambda d: d.name)
def test_low_precision_softmax_is_the_op_by_op_rounding(dtype):
    # an independent replay: each op in float64 and rounded to the dtype; exp rounds from float32 in the
    # library (float16 and ml_dtypes loops), so an exp may sit one spacing away where float64 and float32
    # exp straddle a rounding boundary; the rest must be the same
    rng = np.random.default_rng(3)
    z = (rng.standard_normal((50, 10)) * 4).astype(dtype)
    z64 = z.astype(np.float64)
    shifted = _round(z64 - z64.max(axis=1, keepdims=True), dtype)  # exact difference, rounded
    e = _round(np.exp(shifted), dtype)
    s = _round(e.sum(axis=1, keepdims=True), dtype)  # one rounding of the (float64) sum
    want = _round(e / s, dtype)
    got = softmax(z).astype(np.float64)
    spacing = np.spacing(np.abs(want).astype(dtype)).astype(np.float64)
    assert (np.abs(got - want) <= 2 * spacing).all()
    assert np.mean(got == want) > 0.9


def test_float16_clipped_is_exactly_naive():
    # 1e-10 rounds to 0 in float16 (smallest subnormal 6e-8): clip(p, 0, 1) = p and passes every gradient
    assert F16.type(CLIP_MIN) == 0
    rng = np.random.default_rng(7)
    z = (rng.standard_normal((60, 10)) * 8).astype(F16)
    y = rng.integers(0, 10, 60)
    z[:5, 0] = 30  # past the float16 underflow limit of 17.3: zeros, 0 * log 0 = NaN
    z[5:10, 1], y[5:10] = -12, 1  # the target at least 12 below the max: (-1/n)/p overflows for n = 1
    for rows in (slice(None), slice(5, 6)):
        ln, gn = naive(z[rows], y[rows])
        lc, gc = clipped(z[rows], y[rows])
        assert not np.isfinite(gn).all()  # both break ...
        assert ln == lc or (math.isnan(ln) and math.isnan(lc))
        np.testing.assert_array_equal(gn, gc)  # ... with NaNs in the same places and every other bit equal


def test_bfloat16_clip_floor_is_representable():
    lo = float(BF16.type(CLIP_MIN))
    assert lo > 0 and lo == pytest.approx(CLIP_MIN, rel=2.0**-8)  # rounded to 8 significant bits
    z = np.zeros((1, 10), BF16)
    z[0, 0] = 100  # past the bfloat16 limit of 92.9: p[1] = 0, clipped to the floor
    loss, grad = clipped(z, np.array([1]))
    assert loss == pytest.approx(-math.log(lo), rel=2.0**-7)
    assert (grad == 0).all()  # dead gradient: clip passes nothing below its floor


@pytest.mark.parametrize("dtype", ALL, ids=lambda d: np.dtype(d).name)
def test_fused_beyond_the_float_range_is_silent_and_infinite_only_at_the_target(dtype):
    big = float(finfo(dtype).max) * 0.9
    z = np.array([[big, -big], [big, -big]], np.float64).astype(dtype)  # max - min = 1.8 max: overflows
    with np.errstate(all="raise"):
        loss_min, grad_min = fused(z[:1], np.array([1]))  # the target is the far logit
        loss_max, grad_max = fused(z[:1], np.array([0]))
        LOSSES["naive"](z, np.array([0, 1]))
        LOSSES["clipped"](z, np.array([0, 1]))
        log_softmax(z)
    assert loss_min == np.inf  # the exact loss, 1.8 max, is beyond the range too
    assert loss_max == 0.0
    np.testing.assert_array_equal(grad_min, [[1, -1]])  # p = [1, 0]: softmax - onehot, finite
    np.testing.assert_array_equal(grad_max, [[0, 0]])


@pytest.mark.parametrize("dtype", [F16, BF16], ids=lambda d: d.name)
@pytest.mark.parametrize("seed", range(3))
def test_low_precision_naive_equals_fused_where_finite(dtype, seed):
    # moderate logits: both are the same gradient (p - onehot)/n to a few eps at the scale 1/n
    eps = float(finfo(dtype).eps)
    z, y = random_batch(seed, n=50, scale=2.0, dtype=dtype)
    ln, gn = naive(z, y)
    lf, gf = fused(z, y)
    assert ln == pytest.approx(lf, rel=8 * eps, abs=8 * eps)
    np.testing.assert_allclose(gn.astype(np.float64), gf.astype(np.float64), rtol=0, atol=8 * eps / 50)


def test_batch_size_is_exact_beyond_what_bfloat16_holds():
    # bfloat16 holds integers exactly only up to 256: 1/257 must not become 1/256
    n = 257
    z = np.zeros((n, 10), BF16)
    _, grad = fused(z, np.zeros(n, int))
    p_minus_1 = _round(_round(0.1, BF16) - 1, BF16)  # softmax = bf16(1/10), minus 1, rounded
    want = np.float32(p_minus_1) / np.float32(n)  # divided by the exact n in float32
    assert float(grad[0, 0]) == _round(want, BF16) != _round(np.float32(p_minus_1) / 256, BF16)


# --- the record of each loss ------------------------------------------------------------------------


@pytest.mark.parametrize("name", __import__("mnist_cli.settings", fromlist=["LOSS_NAMES"]).LOSS_NAMES)
def test_every_setting_loss_has_a_whole_record(name):
    """Adding a loss means its record here (and its sentences in report.explain): every facet is there and
    the stacked form is the reference's formula on the other layout."""
    from mnist_cli.losses import Loss

    rec = LOSSES[name]
    assert isinstance(rec, Loss) and rec.name == name
    assert callable(rec.reference) and callable(rec.stacked) and isinstance(rec.promised_finite, bool)
    assert rec.fast is None or callable(rec.fast)
    assert all(isinstance(rec.breaks(d), bool) for d in ALL)
    z, y = random_batch(3, n=5)
    loss, dz = rec(z, y)  # the record is the loss
    sl, sdz, p = rec.stacked((z - z.max(axis=1, keepdims=True)).T[None], (slice(None), y, np.arange(5)),
                             (np.arange(10)[:, None] == y).astype(z.dtype))
    assert sl[0] == pytest.approx(loss, rel=1e-12) and np.allclose(sdz[0].T, dz, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(p[0].T, softmax(z), rtol=1e-12)


def test_the_records_promises_and_breaks_are_the_documented_ones():
    assert [n for n, r in LOSSES.items() if r.promised_finite] == ["fused"]
    assert [n for n, r in LOSSES.items() if r.fast is not None] == ["fused"]
    assert {n: r.breaks(F16) for n, r in LOSSES.items()} == {"fused": False, "naive": True, "clipped": True}
    assert {n: r.breaks(np.dtype(np.float32)) for n, r in LOSSES.items()} == {"fused": False, "naive": True,
                                                                             "clipped": False}


@pytest.mark.parametrize("name", ["naive", "clipped"])
@pytest.mark.parametrize("gap", [89.0, 90.0, 91.0, 92.0])
def test_stacked_gradient_overflows_exactly_where_the_reference_does(name, gap):
    """In the 1/p-overflow window (float32, batch 100: (1/n)/p overflows from a gap near 91, 1/p alone near 88.7)
    the stacked form divides by n first, in autograd's order, as the reference does: the same NaN pattern."""
    B = 100
    z = np.zeros((B, 10), np.float32)
    z[:, 1:] = gap  # the target, class 0, is `gap` below 9 tied maxima
    y = np.zeros(B, np.intp)
    with np.errstate(all="ignore"):
        ref_loss, ref_dz = LOSSES[name](z, y)
        loss, dz, _ = LOSSES[name].stacked((z - z.max(axis=1, keepdims=True)).T[None].copy(),
                                           (slice(None), y, np.arange(B)), (np.arange(10)[:, None] == y).astype(z.dtype))
    np.testing.assert_array_equal(np.isfinite(dz[0].T), np.isfinite(ref_dz))
    assert np.isfinite(loss[0]) == np.isfinite(ref_loss)
