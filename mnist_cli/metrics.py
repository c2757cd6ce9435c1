"""Accuracy, confusion matrix and the argmax question, in pure NumPy.

    >>> import numpy as np
    >>> r = argmax_agreement(np.array([[0.0, 1e-9]], dtype=np.float32))  # exp(-1e-9) rounds to 1.0
    >>> r["ties_in_probs"], r["differ"]       # p = [0.5, 0.5]: argmax(p) = 0, argmax(z) = 1
    (1, 1)
"""

from __future__ import annotations

import numpy as np

from mnist_cli.losses import softmax


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """``mean(predictions == labels)``; 0.0 for an empty set."""
    return float(np.mean(predictions == labels)) if labels.size else 0.0


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, k: int = 10) -> np.ndarray:
    """``C[i, j]`` = number of examples of true class i predicted as j; shape (k, k), int64."""
    return np.bincount(labels.astype(np.int64) * k + predictions, minlength=k * k).reshape(k, k)


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """``diag(C) / rowsum(C)``: the recall of each class (nan for a class with no examples)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(cm) / cm.sum(axis=1)


def argmax_agreement(logits: np.ndarray) -> dict:
    """Compare ``argmax(z)`` with ``argmax(softmax(z))`` row by row.

    Softmax is strictly increasing in each logit, so in exact arithmetic both argmaxes agree. In
    floating point two different logits can round to the same probability (both 1.0, or both 0.5
    when two leaders are far ahead of the rest); ``np.argmax`` then picks the first, which may not
    be the logits' winner. Returns the counts of rows where the predictions differ, where the top
    probability is shared by more than one class although the top logit is unique, and of
    non-finite logits and probabilities.
    """
    probs = softmax(logits)  # (n, k)
    pred_z = np.argmax(logits, axis=1)  # (n,)
    pred_p = np.argmax(probs, axis=1)  # (n,)
    with np.errstate(invalid="ignore"):
        z_top = np.sum(logits == np.max(logits, axis=1, keepdims=True), axis=1)  # leaders per row
        p_top = np.sum(probs == np.max(probs, axis=1, keepdims=True), axis=1)
    return {
        "n": int(logits.shape[0]),
        "differ": int(np.count_nonzero(pred_z != pred_p)),
        "ties_in_probs": int(np.count_nonzero((p_top > 1) & (z_top == 1))),
        "nonfinite_logits": int(logits.size - np.count_nonzero(np.isfinite(logits))),
        "nonfinite_probs": int(probs.size - np.count_nonzero(np.isfinite(probs))),
        "zero_probs": int(np.count_nonzero(probs == 0)),
        "pred_logits": pred_z,
        "pred_probs": pred_p,
    }
