"""The classification report and calibration (mnist_cli/metrics.py), beside tests/test_metrics.py: against
their definitions on hand-made confusion matrices and confidences."""

import numpy as np
import pytest

from mnist_cli.metrics import calibration, precision_recall_f1


def test_precision_recall_f1_follow_their_definitions():
    cm = np.array([[3, 1, 0], [2, 2, 0], [0, 0, 0]])  # class 2: never true, never predicted
    r = precision_recall_f1(cm)
    c0, c1, c2 = r["classes"]
    assert (c0["precision"], c0["recall"], c0["support"]) == (3 / 5, 3 / 4, 4)
    assert (c1["precision"], c1["recall"]) == (2 / 3, 2 / 4)
    assert c0["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert (c2["precision"], c2["recall"], c2["f1"], c2["support"]) == (0.0, 0.0, 0.0, 0)  # zero_division=0
    assert r["accuracy"] == 5 / 8
    assert r["macro"]["recall"] == pytest.approx((0.75 + 0.5 + 0) / 3)
    assert r["weighted"]["recall"] == pytest.approx(r["accuracy"])  # support-weighted recall is accuracy


def test_calibration_error_closed_forms():
    conf = np.array([0.95, 0.95, 0.95, 0.95, 0.55, 0.55])
    hit = np.array([1, 1, 1, 0, 1, 0], bool)
    c = calibration(conf, hit, bins=10)
    assert sum(b["count"] for b in c["bins"]) == 6 == c["n"]
    assert c["ece"] == pytest.approx(4 / 6 * abs(0.75 - 0.95) + 2 / 6 * abs(0.5 - 0.55))
    perfect = calibration(np.array([1.0, 1.0, 0.5, 0.5]), np.array([1, 1, 1, 0], bool), bins=2)
    assert perfect["ece"] == 0.0 and [b["count"] for b in perfect["bins"]] == [2, 2]
