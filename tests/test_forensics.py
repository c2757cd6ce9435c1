"""Forensics of the first non-finite step, against an independent replay of what autodiff computes
for ``mean(-sum(y_ * log(softmax(z))))``, and on the real raw-pixel failure."""

import math

import numpy as np
import pytest

from mnist_cli.engine import Snapshot, TrainConfig, train
from mnist_cli.forensics import explain
from mnist_cli.losses import naive, softmax, underflow_limit
from mnist_cli.report.explain import format_explanation


def snap(rows, labels, dtype=np.float32, step=7):
    z = np.array(rows, dtype=dtype)
    return Snapshot(step=step, indices=np.arange(100, 100 + len(z)), labels=np.array(labels), logits=z)


def replay(z_row, label):
    """Autodiff through the naive graph for one example, written out op by op (no library code)."""
    z = np.asarray(z_row)
    with np.errstate(all="ignore"):
        e = np.exp(z - z.max())
        p = e / e.sum()
        y_ = np.zeros_like(z)
        y_[label] = 1
        terms = y_ * np.log(p)  # (k,) y_[j] * log(p[j])
        g = -y_ / p  # dL/dp, n = 1
        dz = p * (g - np.sum(g * p))  # softmax backward
    return p, terms, g, dz


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_underflow_limit_is_where_exp_reaches_zero(dtype):
    limit = underflow_limit(dtype)
    assert limit == pytest.approx({np.float32: 103.972, np.float64: 745.133}[dtype], abs=1e-3)
    # independent of the formula: exp 0.01 past the limit is 0, 0.01 before it is not (a scalar, and
    # an array, which NumPy may run through another, SIMD, exp)
    for x in (dtype(-(limit - 0.01)), np.full(64, -(limit - 0.01), dtype)):
        assert (np.exp(x) > 0).all()
    for x in (dtype(-(limit + 0.01)), np.full(64, -(limit + 0.01), dtype)):
        assert (np.exp(x) == 0).all()


def test_nontarget_underflow_chain_matches_autodiff():
    # label 2 leads by 150 > 104.0: every other p underflows; class 7 is farthest below
    row = [0.0] * 10
    row[2], row[7] = 150.0, -5.0
    e = explain(snap([row, [0.0] * 10], [2, 4]), "float32", "naive")
    assert e["n_culprits"] == 1 and e["rows_with_zero_prob"] == 1
    c = e["culprits"][0]
    assert (c["batch_row"], c["index"], c["label"]) == (0, 100, 2)
    assert c["gap_max_minus_min"] == pytest.approx(155.0) and c["gap_max_minus_min"] > e["underflow_limit"]
    assert c["underflowed_class"] == 7 and c["underflowed_log_p"] == pytest.approx(-155.0, abs=1e-6)
    # the derivation, replayed op by op: p[7] = 0, y_[7] * log(p[7]) = 0 * -inf = NaN, dL/dp[7] = 0/0
    p, terms, g, dz = replay(np.array(row, np.float32), 2)
    assert p[7] == 0 and np.isnan(terms[7]) and np.isnan(g[7]) and np.isnan(dz).all()
    assert "p[7] = 0 -> log(p[7]) = -inf -> y_[7] * log(p[7]) = 0 * -inf = NaN" in c["chain"]["loss"]
    assert "-0/0 = NaN" in c["chain"]["gradient"] and "all 10 entries of dL/dz" in c["chain"]["gradient"]
    # and what the library loss observed agrees with the derivation
    assert c["row_loss_kind"] == "NaN" and not c["row_grad_finite"]
    assert e["batch_loss_kind"] == "NaN" and not e["batch_grad_finite"]
    assert math.isnan(naive(np.array([row], np.float32), np.array([2]))[0])


def test_target_only_underflow_gives_inf_chain():
    # the target sits 120 below two leaders, nothing else underflows: -1 * log(0) = +inf
    row = [0.0] * 10
    row[5] = -120.0
    e = explain(snap([row], [5]), np.float32, "naive")
    c = e["culprits"][0]
    assert c["target_prob_zero"] and c["zero_prob_classes"] == [5] and c["underflowed_class"] == 5
    p, terms, g, dz = replay(np.array(row, np.float32), 5)
    assert p[5] == 0 and terms[5] == -np.inf and g[5] == -np.inf and np.isnan(dz).all()
    assert c["row_loss_kind"] == "inf" and e["rows_inf_loss"] == 1 and e["rows_nan_loss"] == 0
    assert "-1 * -inf = +inf" in c["chain"]["loss"] and "-inf * 0 = NaN" in c["chain"]["gradient"]


def test_float64_tolerates_the_gap_that_breaks_float32():
    row = [0.0] * 10
    row[2] = 150.0
    e32 = explain(snap([row], [2], np.float32), None, "naive")
    e64 = explain(snap([row], [2], np.float64), None, "naive")
    assert e32["dtype"] == "float32" and e32["rows_nan_loss"] == 1
    assert e64["dtype"] == "float64" and e64["rows_with_zero_prob"] == 0 and e64["n_culprits"] == 0
    assert "no example" in format_explanation(e64)


def test_tiny_target_probability_overflows_the_gradient_without_a_zero():
    # p[target] ~ exp(-95) ~ 5e-42: a float32 subnormal, not 0; the loss is finite but 1/p overflows
    row = [0.0] * 10
    row[0] = 95.0
    e = explain(snap([row], [3]), "float32", "naive")
    c = e["culprits"][0]
    p, terms, g, dz = replay(np.array(row, np.float32), 3)
    assert p[3] > 0 and np.isfinite(terms).all() and g[3] == -np.inf
    assert np.isnan(dz[3]) and not np.isfinite(dz).any()  # NaN at the target, +inf elsewhere
    assert c["zero_prob_classes"] == [] and c["row_loss_kind"] == "finite" and not c["row_grad_finite"]
    assert "not 0" in c["chain"]["loss"] and "overflows" in c["chain"]["gradient"]
    assert "dL/dz[3] = p[3] * (-inf - -inf) = NaN" in c["chain"]["gradient"]


def test_fused_and_clipped_explain_the_same_zero_without_nan():
    row = [0.0] * 10
    row[2] = 150.0
    fused = explain(snap([row], [2]), "float32", "fused")
    clipped = explain(snap([row], [2]), "float32", "clipped")
    for e in (fused, clipped):
        assert e["batch_loss_kind"] == "finite" and e["batch_grad_finite"] and e["rows_with_zero_prob"] == 1
    assert "never logged" in fused["chain"]["loss"]
    assert "dead gradient" in clipped["chain"]["gradient"]


def test_nonfinite_logits_are_named_as_such():
    row = [0.0] * 10
    row[1] = np.inf
    e = explain(snap([row], [1]), "float32", "fused")
    assert not e["logits_finite"] and not e["culprits"][0]["logits_finite"]
    assert "already non-finite" in e["chain"]["loss"] and "already non-finite" in e["summary"]


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown loss"):
        explain(snap([[0.0] * 10], [0]), "float32", "hinge")


def test_real_raw_pixels_failure_names_a_sample_past_the_float32_limit(mnist):
    r = train(mnist.train_images, mnist.train_labels, TrainConfig(loss="naive", input_scale=255, steps=5))
    assert r.snapshot is not None and r.snapshot.step <= 3
    e = explain(r.snapshot, "float32", "naive")
    c = e["culprits"][0]
    assert e["step"] == r.nan.first_nonfinite_step
    assert c["gap_max_minus_min"] > underflow_limit(np.float32) > 100
    assert c["label"] == mnist.train_labels[c["index"]]  # the index points into the training set
    # the gap and the zero, recomputed from the kept logits without the library
    z = r.snapshot.logits[c["batch_row"]]
    assert float(np.ptp(z.astype(np.float64))) == pytest.approx(c["gap_max_minus_min"], rel=1e-6)
    p, terms, g, dz = replay(z, c["label"])
    assert p[c["underflowed_class"]] == 0 and np.isnan(dz).all()
    assert e["batch_loss_kind"] == "NaN" and e["rows_nan_loss"] >= 1
    text = format_explanation(e)
    for needle in (f"#{c['index']}", f"label {c['label']}", "limit 104.0", "= 0 * -inf = NaN", "0/0"):
        assert needle in text
    assert all(len(line) <= 100 for line in text.splitlines())


# --- float16 / bfloat16, and the gradient's own threshold ---------------------------------------------

from mnist_cli.losses import gradient_overflow_limit  # noqa: E402
from mnist_cli.rounding import DTYPES, finfo  # noqa: E402

F16, BF16 = DTYPES["float16"], DTYPES["bfloat16"]


@pytest.mark.parametrize("name, bits", [("float16", 25), ("bfloat16", 134)])
def test_low_precision_underflow_limit(name, bits):
    # the smallest subnormal is 2^-24 (float16) or 2^-133 (bfloat16): the limit is log(2^(bits))
    dtype = DTYPES[name]
    limit = underflow_limit(dtype)
    assert limit == pytest.approx(bits * math.log(2), rel=1e-12)
    # measured with the dtype's own exp, two spacings either side (the argument is rounded too)
    step = 2 * float(np.spacing(dtype.type(limit)))
    assert (np.exp(np.full(8, -(limit - step), dtype)) > 0).all()
    assert (np.exp(np.full(8, -(limit + step), dtype)) == 0).all()


def _sweep(dtype, n, layout, lo, hi):
    """The representable gaps in [lo, hi], and for each: is the naive gradient finite, is p[target] 0."""
    gaps = np.unique(np.linspace(lo, hi, 1601).astype(dtype)).astype(np.float64)  # (G,)
    rows = np.zeros((len(gaps), 10))
    if layout == "one max":  # the others halfway: p[target] ~ exp(-gap) / (1 + 8 exp(-gap / 2))
        rows[:] = -gaps[:, None] / 2
        rows[:, 0] = 0
    rows[:, 3] = -gaps
    z = rows.astype(dtype)
    grad_ok, p_zero = np.empty(len(gaps), bool), np.empty(len(gaps), bool)
    for start in range(0, len(gaps), n):  # n rows per call: each row's gradient has 1/n in it
        zb = z[start : start + n]
        if len(zb) < n:
            zb = np.concatenate([zb, np.zeros((n - len(zb), 10), dtype)])
        _, g = naive(zb, np.full(n, 3))
        m = min(n, len(gaps) - start)
        grad_ok[start : start + m] = np.isfinite(g[:m].astype(np.float64)).all(axis=1)
    p = softmax(z)
    p_zero[:] = p[:, 3] == 0
    return gaps, grad_ok, p_zero


def _first(gaps, broken):
    """The first gap at which ``broken`` holds, checking it holds for every larger gap."""
    i = int(np.argmax(broken))
    assert broken[i] and broken[i:].all(), "the threshold must be a single step"
    return gaps[i], gaps[i - 1]


@pytest.mark.parametrize("layout", ["9 ties", "one max"])
@pytest.mark.parametrize("n", [1, 100])
@pytest.mark.parametrize("name", list(DTYPES))
def test_gradient_overflow_limit_is_where_the_naive_gradient_breaks(name, n, layout):
    dtype = DTYPES[name]
    eps, sub = float(finfo(dtype).eps), float(finfo(dtype).smallest_subnormal)
    ties = 9.0
    if layout == "one max":
        g0 = gradient_overflow_limit(dtype, n, 1)
        ties = 1 + 8 * math.exp(-g0 / 2)
    predicted = gradient_overflow_limit(dtype, n, ties)
    u = underflow_limit(dtype)
    gaps, grad_ok, p_zero = _sweep(dtype, n, layout, min(predicted, u - math.log(ties)) - 1.5, u + 1)
    broke, before = _first(gaps, ~grad_ok)
    zero, _ = _first(gaps, p_zero)
    # tolerances from the rounding of p (three roundings, or the subnormal spacing) and of the gap itself
    p_star = math.exp(-predicted) / ties
    tol = (broke - before) + math.log1p(3 * eps + 3 * sub / p_star)
    # p[target] is 0 from u - log(ties): exp rounds to a subnormal multiple, the division by ties to 0
    assert zero == pytest.approx(u - math.log(ties), abs=(broke - before) + math.log1p(4 / ties) + 3 * eps * u)
    assert broke <= zero  # a zero target probability always breaks the gradient
    if predicted < zero - tol:  # the gradient breaks first, where 1/p overflows ...
        assert broke == pytest.approx(predicted, abs=tol)
        assert not p_zero[gaps == broke].any()  # ... with p[target] not 0
    else:  # bfloat16 at n = 100: the probability underflows first, the loss and gradient break together
        assert broke == zero


def test_threshold_numbers_of_the_issue():
    # the earliest break (one example, 9 logits tied at the max) and the batch-100 window, per dtype
    want = {"float32": (86.5, 91.1, 93.3), "float64": (707.6, 712.2, 714.4), "float16": (8.9, 13.5, 15.7),
            "bfloat16": (86.5, 91.1, 93.3)}
    for name, (n1, n100, n100_one) in want.items():
        dtype = DTYPES[name]
        assert gradient_overflow_limit(dtype) == pytest.approx(n1, abs=0.05)
        assert gradient_overflow_limit(dtype, 100) == pytest.approx(n100, abs=0.05)
        assert gradient_overflow_limit(dtype, 100, 1) == pytest.approx(n100_one, abs=0.05)


def test_text_explains_a_gap_below_the_underflow_limit():
    # gap 90.9 < 104: p[target] ~ 3.7e-41 is a subnormal, not 0; alone, (-1/1)/p overflows float32
    row = [0.0] * 10
    row[3] = -90.9
    e = explain(snap([row], [3]), "float32", "naive")
    c = e["culprits"][0]
    assert c["zero_prob_classes"] == [] and c["row_loss_kind"] == "finite" and not c["row_grad_finite"]
    text = format_explanation(e)
    flat = " ".join(text.split())  # the paragraphs are wrapped to 100 columns
    for needle in ("below the underflow limit 104.0", "1/p overflows", "from a gap max - target of 86.5",
                   "breaks from a gap of 86.5 at batch 1", "overflows to -inf"):
        assert needle in flat, needle
    assert "no probability rounded to 0" in e["summary"] and "86.5" in e["summary"]
    assert all(len(line) <= 100 for line in text.splitlines())
    # in a batch of 100 the same row is finite: -0.01/p ~ -2.7e38 fits (the limit moves to 91.1)
    batch = explain(snap([row] + [[0.0] * 10] * 99, [3] * 100), "float32", "naive")
    assert batch["n_culprits"] == 0 and batch["batch_grad_finite"]
    assert "91.1" in format_explanation(batch)


def test_float16_clipped_names_the_unrepresentable_floor():
    row = [0.0] * 10
    row[2] = 20.0  # past the float16 limit of 17.3: every other p is 0
    e = explain(snap([row], [2], F16), None, "clipped")
    n = explain(snap([row], [2], F16), None, "naive")
    assert e["dtype"] == "float16" and e["underflow_limit"] == pytest.approx(17.33, abs=0.01)
    assert (e["rows_nan_loss"], e["batch_grad_finite"]) == (n["rows_nan_loss"], n["batch_grad_finite"]) == (1, False)
    assert "unrepresentable clip floor" in e["chain"]["loss"] and "exactly naive" in e["chain"]["loss"]
    assert n["chain"]["loss"] in e["chain"]["loss"]  # the rest of the chain is naive's
    text = " ".join(format_explanation(e).split())
    assert "rounds to 0 in float16" in text and "clipped behaves exactly like naive" in text
    assert "could not help" in e["summary"]


def test_bfloat16_clipped_keeps_its_floor():
    row = [0.0] * 10
    row[2] = 100.0  # past the bfloat16 limit of 92.9
    e = explain(snap([row], [2], BF16), None, "clipped")
    assert e["dtype"] == "bfloat16" and e["batch_loss_kind"] == "finite" and e["batch_grad_finite"]
    assert "dead gradient" in e["chain"]["gradient"] and "1.00044e-10" in e["chain"]["loss"]


def test_float16_logit_overflow_is_named_overflow():
    row = np.zeros(10)
    row[2] = 70000.0  # beyond 65504: rounds to +inf in float16
    with np.errstate(over="ignore"):
        z = row[None, :].astype(F16)
    e = explain(snap(z, [2], F16), None, "fused")
    c = e["culprits"][0]
    assert not c["logits_finite"]
    assert "overflow, not underflow" in c["chain"]["loss"] and "65504" in c["chain"]["loss"]
    assert "overflow, not underflow" in e["summary"] and "65504" in e["summary"]


def test_fused_beyond_the_float_range_is_explained_as_an_infinite_loss():
    z = [[3e38, -3e38] + [0.0] * 8]
    e = explain(snap(z, [1]), "float32", "fused")
    c = e["culprits"][0]
    assert e["batch_loss_kind"] == "inf" and e["batch_grad_finite"]
    assert "exceeds the largest float32" in c["chain"]["loss"] and "+inf" in c["chain"]["loss"]
    assert "loss is +inf" in e["summary"]
    assert all(len(line) <= 100 for line in format_explanation(e).splitlines())
