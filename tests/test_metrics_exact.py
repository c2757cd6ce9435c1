"""The scores `evaluate` prints and writes with `--json`, against hand-computed tables (issue 23's mutants):
sklearn's precision/recall/F1 semantics (``zero_division=0``) on a small matrix done with fractions, the
confusions listed, the calibration bins, and the count of probabilities that are exactly 0."""

import json
from fractions import Fraction as F

import numpy as np
import pytest

from mnist_cli.fileio import jsonable
from mnist_cli.metrics import (
    accuracy,
    argmax_agreement,
    calibration,
    confusion_matrix,
    per_class_accuracy,
    precision_recall_f1,
    top_confusions,
)

# C[true, pred]: class 1 is predicted once (and right), class 2 never (0/0 precision), class 3 has
# precision + recall = 5/6 < 1 (its F1 must still be the harmonic mean).
CM = np.array([[3, 0, 0, 1],
               [1, 1, 0, 0],
               [1, 0, 0, 0],
               [2, 0, 0, 1]])
# by hand: column sums 7, 1, 0, 2; row sums (support) 4, 2, 1, 3; diagonal 3, 1, 0, 1
PRECISION = [F(3, 7), F(1), F(0), F(1, 2)]
RECALL = [F(3, 4), F(1, 2), F(0), F(1, 3)]
F1 = [F(6, 11), F(2, 3), F(0), F(2, 5)]  # 2 P R / (P + R), 0 where P + R = 0
SUPPORT = [4, 2, 1, 3]


def test_precision_recall_f1_per_class_against_a_hand_computed_matrix():
    r = precision_recall_f1(CM)
    for c, row in enumerate(r["classes"]):
        assert row == {"class": c, "precision": pytest.approx(float(PRECISION[c]), abs=1e-15),
                       "recall": pytest.approx(float(RECALL[c]), abs=1e-15),
                       "f1": pytest.approx(float(F1[c]), abs=1e-15), "support": SUPPORT[c]}
    assert r["accuracy"] == pytest.approx(0.5, abs=1e-15)  # (3 + 1 + 0 + 1) / 10


def test_precision_recall_f1_averages_against_a_hand_computed_matrix():
    r = precision_recall_f1(CM)
    macro = {k: float(sum(v) / 4) for k, v in (("precision", PRECISION), ("recall", RECALL), ("f1", F1))}
    weighted = {k: float(sum(s * x for s, x in zip(SUPPORT, v, strict=True)) / 10)
                for k, v in (("precision", PRECISION), ("recall", RECALL), ("f1", F1))}
    assert r["macro"] == {**{k: pytest.approx(v, abs=1e-15) for k, v in macro.items()}, "support": 10}
    assert r["weighted"] == {**{k: pytest.approx(v, abs=1e-15) for k, v in weighted.items()}, "support": 10}
    assert r["weighted"]["recall"] == pytest.approx(0.5, abs=1e-15)  # weighted recall is the accuracy


def test_a_class_predicted_once_and_right_has_precision_one():
    r = precision_recall_f1(np.array([[1, 0], [1, 0]]))  # class 0 predicted twice, class 1 never
    assert [c["precision"] for c in r["classes"]] == [0.5, 0.0]
    r = precision_recall_f1(np.array([[1, 0], [0, 1]]))
    assert [(c["precision"], c["recall"], c["f1"]) for c in r["classes"]] == [(1.0, 1.0, 1.0)] * 2


def test_an_empty_matrix_scores_zero_everywhere():
    r = precision_recall_f1(np.zeros((2, 2), np.int64))
    assert r["accuracy"] == 0.0
    assert r["macro"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert r["weighted"] == r["macro"]


def test_top_confusions_lists_only_mistakes_that_happened():
    cm = np.array([[5, 2, 0], [0, 4, 0], [1, 0, 3]])
    assert top_confusions(cm, n=5) == [{"true": 0, "predicted": 1, "count": 2},
                                       {"true": 2, "predicted": 0, "count": 1}]
    assert top_confusions(cm, n=1) == [{"true": 0, "predicted": 1, "count": 2}]
    assert top_confusions(np.diag([3, 4, 5]), n=5) == []


def test_calibration_bins_and_ece_against_a_hand_computed_table():
    conf = np.array([0.05, 0.1, 0.15, 0.95, 1.0, 0.0, np.nan])
    correct = np.array([1, 0, 1, 1, 1, 0, 1], bool)
    r = calibration(conf, correct)
    assert r["n"] == 6  # the NaN confidence is left out
    # bins (lo, hi], 0 joins the first: bin 0 holds 0.05, 0.1 (0.1 * 10 is exactly 1) and 0.0; bin 1
    # holds 0.15; bin 9 holds 0.95 and 1.0
    counts = [3, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert [b["count"] for b in r["bins"]] == counts
    for b, row in enumerate(r["bins"]):
        assert row["lo"] == pytest.approx(b / 10, abs=1e-15) and row["hi"] == pytest.approx((b + 1) / 10, abs=1e-15)
    assert (r["bins"][0]["confidence"], r["bins"][0]["accuracy"]) == (pytest.approx(0.05), pytest.approx(1 / 3))
    assert (r["bins"][9]["confidence"], r["bins"][9]["accuracy"]) == (pytest.approx(0.975), 1.0)
    assert r["bins"][5]["confidence"] is None and r["bins"][5]["accuracy"] is None
    ece = 3 / 6 * abs(1 / 3 - 0.05) + 1 / 6 * abs(1 - 0.15) + 2 / 6 * abs(1 - 0.975)
    assert r["ece"] == pytest.approx(ece, rel=1e-12)
    doc = json.loads(json.dumps(jsonable(r)))  # what `evaluate --json` writes
    assert [(b["lo"], b["hi"]) for b in doc["bins"]] == [(pytest.approx(b / 10), pytest.approx((b + 1) / 10))
                                                         for b in range(10)]


def test_calibration_of_nothing_is_nan():
    r = calibration(np.array([np.nan]), np.array([True]))
    assert r["n"] == 0 and r["ece"] != r["ece"] and [b["count"] for b in r["bins"]] == [0] * 10


def test_argmax_agreement_counts_probabilities_that_are_exactly_zero():
    # float32: exp(-200) underflows to 0 (below 1.4e-45); exp(-20) = 2e-9 does not, but 1 + 9 of it rounds
    # to 1, so row 1 has a probability of exactly 1 and none of exactly 0
    z = np.array([[0.0, 0.0, -200.0],  # p = [0.5, 0.5, 0]: one zero, a tie
                  [0.0, -20.0, -20.0],  # p = [1, 2e-9, 2e-9]: no zero
                  [-200.0, -200.0, 0.0]], np.float32)  # p = [0, 0, 1]: two zeros
    r = argmax_agreement(z)
    assert r["zero_probs"] == 3
    assert (r["n"], r["differ"], r["ties_in_probs"], r["nonfinite_logits"], r["nonfinite_probs"]) == (3, 0, 0, 0, 0)
    assert list(r["pred_logits"]) == [0, 0, 2] and list(r["pred_probs"]) == [0, 0, 2]


def test_argmax_agreement_counts_nonfinite_logits_and_probabilities():
    z = np.array([[np.inf, 0.0, 0.0], [1.0, 2.0, 3.0]], np.float32)  # inf - inf = nan: the whole row
    r = argmax_agreement(z)
    assert (r["nonfinite_logits"], r["nonfinite_probs"], r["zero_probs"]) == (1, 3, 0)


def test_accuracy_against_counts_and_of_nothing():
    assert accuracy(np.array([1, 2, 3, 4]), np.array([1, 0, 3, 0])) == 0.5
    assert accuracy(np.array([], np.int64), np.array([], np.int64)) == 0.0


def test_confusion_matrix_is_ten_by_ten_by_default_whatever_the_labels_reach():
    labels, predictions = np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2])
    want = np.zeros((10, 10), np.int64)
    for i, j in [(0, 0), (0, 1), (1, 1), (2, 2), (2, 0), (2, 2)]:
        want[i, j] += 1
    np.testing.assert_array_equal(confusion_matrix(labels, predictions), want)
    np.testing.assert_array_equal(confusion_matrix(labels, predictions, k=3), want[:3, :3])
    np.testing.assert_array_equal(per_class_accuracy(want[:3, :3]), [0.5, 1.0, 2 / 3])
