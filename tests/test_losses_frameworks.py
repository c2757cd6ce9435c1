"""The losses computed as each framework profile computes them (issue 19): truths measured in the real
frameworks (scripts/probes.json), checked here without them."""

import math

import numpy as np
import pytest

from mnist_cli.frameworks import PROFILES
from mnist_cli.losses import LOSSES, healthy_gap, softmax, underflow_limit
from mnist_cli.rounding import DTYPES, finfo, flush

F32 = np.float32


def _row(gap: float, k: int = 10, dtype=F32) -> np.ndarray:
    """One row: 9 logits at 0 and one (the last) at -gap."""
    z = np.zeros((1, k), dtype)
    z[0, -1] = -gap
    return z


def test_tensorflow_flushes_the_float32_softmax_past_87_3_torch_does_not():
    z = _row(90.0)  # between TF's 87.3 and IEEE's 104: the tutorial's gap window
    assert softmax(z, "tensorflow")[0, -1] == 0
    assert 0 < softmax(z, "torch")[0, -1] < finfo("float32").smallest_normal  # a subnormal probability
    assert softmax(z)[0, -1] == softmax(z, "torch")[0, -1]


@pytest.mark.parametrize("target, want_tf", [(9, math.inf), (0, math.nan)])
def test_the_naive_loss_breaks_in_tensorflow_between_gaps_87_3_and_104(target, want_tf):
    z, y = _row(95.0), np.array([target])
    tf_loss, tf_grad = LOSSES["naive"](z, y, framework="tensorflow")
    torch_loss, torch_grad = LOSSES["naive"](z, y, framework="torch")
    assert math.isfinite(torch_loss)  # (a low target's gradient overflows past 86.5 anyway: 1/p at n = 1)
    assert (math.isinf(tf_loss) if math.isinf(want_tf) else math.isnan(tf_loss))
    assert not np.isfinite(tf_grad).all()
    if target == 0:  # the target at the max: PyTorch's gradient is finite, TF's NaN
        assert np.isfinite(torch_grad).all() and np.isnan(tf_grad).all()


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_under_tensorflow_no_result_is_subnormal(dtype):
    dt = DTYPES[dtype]
    lim = underflow_limit(dt, "tensorflow")
    z = np.stack([_row(g, dtype=dt)[0] for g in np.linspace(lim - 3, lim + 3, 61)])
    p = softmax(z, "tensorflow").astype(np.float64)
    tiny = float(finfo(dtype).smallest_normal)
    assert not ((p > 0) & (p < tiny)).any()
    assert (p[:, -1] == 0).any() and (p[:, -1] > 0).any()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_torchs_half_softmax_is_float32_rounded_once(dtype):
    """PyTorch's CPU kernel (measured: 22890 of 22890 entries): the float32 softmax, one rounding."""
    dt = DTYPES[dtype]
    z = (np.random.default_rng(3).standard_normal((500, 10)) * 8).astype(F32).astype(dt)
    z32 = z.astype(F32)
    e = np.exp(z32 - z32.max(axis=1, keepdims=True))
    want = (e / e.sum(axis=1, keepdims=True)).astype(dt)
    got = softmax(z, "torch")
    assert got.dtype == dt and np.array_equal(got.view(np.uint16), want.view(np.uint16))
    assert not np.array_equal(softmax(z).view(np.uint16), want.view(np.uint16))  # the lab's per-op rounding


def test_torchs_float16_nll_loss_sum_overflows_where_the_mean_fits():
    z = np.zeros((8, 10), np.float16)
    z[:, 1] = 10000.0  # every example's loss is 10000: the mean fits, the sum (80000) passes 65504
    y = np.zeros(8, int)
    assert math.isinf(LOSSES["fused"](z, y, framework="torch")[0])
    assert LOSSES["fused"](z, y)[0] == pytest.approx(10000.0, rel=1e-3)


def test_tensorflows_fused_kernel_is_nan_for_a_non_target_minus_inf_logit():
    z = np.array([[0.0, -np.inf, 1.0]], F32)
    assert math.isnan(LOSSES["fused"](z, np.array([0]), framework="tensorflow")[0])
    assert math.isfinite(LOSSES["fused"](z, np.array([0]), framework="torch")[0])


def test_tensorflows_log_backward_multiplies_by_the_reciprocal_in_float16():
    """``g * rnd(1 / p)`` rounds twice where ``g / p`` rounds once: some float16 gradients differ."""
    z = (np.random.default_rng(5).standard_normal((400, 10)) * 3).astype(np.float16)
    y = np.random.default_rng(6).integers(0, 10, 400)
    g_tf = LOSSES["naive"](z, y, framework="tensorflow")[1]
    p = softmax(z, "tensorflow")
    # the same probabilities through PyTorch's order differ somewhere
    from mnist_cli.losses import naive_from_probs

    g_div = naive_from_probs(p, y)[1]
    assert not np.array_equal(g_tf, g_div)


@pytest.mark.parametrize("name", ["naive", "clipped", "fused"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_the_default_is_the_numpy_profile_bit_for_bit(name, dtype):
    dt = DTYPES[dtype]
    z = (np.random.default_rng(1).standard_normal((50, 10)) * 40).astype(F32).astype(dt)
    y = np.random.default_rng(2).integers(0, 10, 50)
    a, b = LOSSES[name](z, y), LOSSES[name](z, y, framework="numpy")
    assert (a[0] == b[0] or (math.isnan(a[0]) and math.isnan(b[0])))
    assert np.array_equal(a[1], b[1], equal_nan=True) and a[1].dtype == b[1].dtype


def test_the_healthy_gap_under_flushing_keeps_every_probability_positive():
    """Within healthy_gap(..., 'tensorflow') no probability is flushed (worst case: 9 ties at the max)."""
    h = healthy_gap("float32", 10, "tensorflow")
    assert h < underflow_limit("float32", "tensorflow") < healthy_gap("float32", 10)
    z = np.stack([_row(g)[0] for g in np.linspace(h - 1, h, 101)])
    assert (softmax(z, "tensorflow") > 0).all()


def test_flush_zeroes_subnormals_keeps_the_sign_and_leaves_the_rest():
    tiny = F32(finfo("float32").smallest_normal)
    x = np.array([tiny, tiny / 2, -tiny / 4, 0.0, np.inf, np.nan, 1.0], F32)
    got = flush(x)
    assert got[0] == tiny and got[1] == 0 and got[2] == 0 and np.signbit(got[2])
    assert np.isinf(got[4]) and np.isnan(got[5]) and got[6] == 1
    assert flush(x, False) is x


def test_every_profile_names_its_versions():
    assert "2.13.0" in PROFILES["torch"].measured_with and "2.21.0" in PROFILES["tensorflow"].measured_with


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_tensorflows_reciprocal_softmax_is_the_softmax_to_its_roundings(dtype):
    """TF's half softmax divides as ``e * (1 / s)`` (Eigen's ``sum.inverse()``): still the softmax of the dtype's
    logits, to a few of its roundings (the shift, exp, sum, reciprocal and product: at most 5 half-ulps, plus
    exp's own error; 8 eps allowed) wherever the probability is well inside the range."""
    from mnist_cli.losses import softmax
    from mnist_cli.rounding import DTYPES, finfo

    rng = np.random.default_rng(3)
    z = rng.normal(0, 3, (300, 10)).astype(np.float32).astype(DTYPES[dtype])
    p = np.asarray(softmax(z, "tensorflow"), np.float64)
    z64 = z.astype(np.float64)
    e = np.exp(z64 - z64.max(axis=1, keepdims=True))
    exact = e / e.sum(axis=1, keepdims=True)
    inside = exact > 1e-3
    assert inside.sum() > 1000
    assert np.all(np.abs(p[inside] - exact[inside]) <= 8 * float(finfo(dtype).eps) * exact[inside])
