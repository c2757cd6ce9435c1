"""`evaluate MODEL.npz --json` on a model file written by hand whose every score follows from the test labels
alone (issue 23): W = 0 and b = e_3 predict class 3 for every image with probability 1 / (1 + 9 / e)."""

import json
import math

import numpy as np
import pytest

from mnist_cli.model import Model

CLASS = 3


@pytest.fixture
def constant_model(tmp_path):
    b = np.zeros(10)
    b[CLASS] = 1.0
    return Model(np.zeros((784, 10)), b).save(tmp_path / "constant.npz")


def test_evaluate_json_of_a_constant_model(cli, constant_model, mnist):
    r = cli("evaluate", constant_model, "--json")
    assert r.exit_code == 0, r.output
    ev = json.loads(r.output)
    counts = np.bincount(mnist.test_labels, minlength=10)  # (10,) images per class
    n = int(counts.sum())
    assert ev["n"] == n and ev["accuracy"] == pytest.approx(counts[CLASS] / n, abs=1e-15)
    cm = np.zeros((10, 10), np.int64)
    cm[:, CLASS] = counts
    assert ev["confusion_matrix"] == cm.tolist()
    assert ev["argmax"]["zero_probs"] == 0 and ev["argmax"]["differ"] == 0
    report = ev["classification_report"]
    for c, row in enumerate(report["classes"]):  # sklearn with zero_division=0: 0 for a class never predicted
        want = (counts[CLASS] / n, 1.0, 2 * (counts[CLASS] / n) / (counts[CLASS] / n + 1)) if c == CLASS else (0, 0, 0)
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx(want, abs=1e-15)
        assert row["support"] == counts[c]
    assert report["macro"]["recall"] == pytest.approx(0.1, abs=1e-15)
    assert report["weighted"]["recall"] == pytest.approx(counts[CLASS] / n, abs=1e-15)
    # the mistakes: every other class predicted as 3, the five most frequent first (stable order on ties)
    others = [c for c in np.argsort(-counts, kind="stable") if c != CLASS][:5]
    assert ev["confusions"] == [{"true": int(c), "predicted": CLASS, "count": int(counts[c])} for c in others]
    confidence = 1 / (1 + 9 * math.exp(-1))  # 0.232: bin (0.2, 0.3]
    bins = ev["calibration"]["bins"]
    assert [b["count"] for b in bins] == [0, 0, n, 0, 0, 0, 0, 0, 0, 0]
    assert [(b["lo"], b["hi"]) for b in bins] == [(pytest.approx(i / 10), pytest.approx((i + 1) / 10)) for i in range(10)]
    assert bins[2]["confidence"] == pytest.approx(confidence, rel=1e-12)
    assert bins[2]["accuracy"] == pytest.approx(counts[CLASS] / n, abs=1e-15)
    assert ev["calibration"]["ece"] == pytest.approx(abs(counts[CLASS] / n - confidence), rel=1e-9)
