"""Metrics against hand-computed truths."""

import numpy as np

from mnist_cli.metrics import accuracy, argmax_agreement, confusion_matrix, per_class_accuracy


def test_accuracy_and_confusion():
    y = np.array([0, 1, 2, 2, 1])
    p = np.array([0, 2, 2, 2, 1])
    assert accuracy(y, p) == 0.8
    cm = confusion_matrix(y, p, k=3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 2]]
    np.testing.assert_allclose(per_class_accuracy(cm), [1.0, 0.5, 1.0])


def test_argmax_agrees_on_ordinary_logits():
    z = np.random.default_rng(0).standard_normal((1000, 10)).astype(np.float32)
    r = argmax_agreement(z)
    assert r["differ"] == 0 and r["ties_in_probs"] == 0
    assert (r["pred_logits"] == np.argmax(z, axis=1)).all()


def test_float_ties_can_flip_argmax():
    # exp(-1e-9) rounds to 1.0 in float32: both probabilities are 0.5, argmax picks the first
    z = np.array([[0.0, 1e-9], [200.0, 200.0001]], dtype=np.float32)
    r = argmax_agreement(z)
    assert r["pred_logits"].tolist()[0] == 1 and r["pred_probs"].tolist()[0] == 0
    assert r["differ"] >= 1 and r["ties_in_probs"] >= 1


def test_exact_logit_ties_are_not_counted_as_softmax_ties():
    r = argmax_agreement(np.array([[1.0, 1.0, 0.0]]))
    assert r["differ"] == 0 and r["ties_in_probs"] == 0


def test_nonfinite_counts():
    z = np.array([[np.nan, 0.0], [1000.0, 0.0]], dtype=np.float32)
    r = argmax_agreement(z)
    assert r["nonfinite_logits"] == 1
    assert r["nonfinite_probs"] == 2  # the whole NaN row
    assert r["zero_probs"] == 1  # exp(-1000) underflows
