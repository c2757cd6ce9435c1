"""Forensics of the first non-finite step, against an independent replay of what autodiff computes
for ``mean(-sum(y_ * log(softmax(z))))``, and on the real raw-pixel failure."""

import math

import numpy as np
import pytest

from mnist_cli.forensics import explain, format_explanation, underflow_limit
from mnist_cli.losses import naive
from mnist_cli.train import Snapshot, TrainConfig, train


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
