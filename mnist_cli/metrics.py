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


def normalize_confusion(cm: np.ndarray, normalize: str) -> np.ndarray:
    """scikit-learn's ``confusion_matrix(normalize=...)`` of counts ``C[true, pred]`` (k, k), float64:

        true:  C[i, j] / sum_j' C[i, j']     (each row sums to 1: row i is recall's denominator)
        pred:  C[i, j] / sum_i' C[i', j]     (each column sums to 1: column j is precision's)
        all:   C[i, j] / sum_i'j' C[i', j']  (the whole matrix sums to 1)

    A row (column) with no examples divides 0 by 0: 0 there, as scikit-learn's ``nan_to_num``."""
    cm = np.asarray(cm, dtype=np.float64)  # (k, k)
    totals = {"true": cm.sum(axis=1, keepdims=True), "pred": cm.sum(axis=0, keepdims=True), "all": cm.sum()}
    with np.errstate(invalid="ignore", divide="ignore"):
        out = cm / totals[normalize]  # (k, k); 0/0 only where the whole row/column/matrix is 0
    return np.where(np.isnan(out), 0.0, out)


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """``diag(C) / rowsum(C)``: the recall of each class (nan for a class with no examples)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(cm) / cm.sum(axis=1)


def argmax_agreement(logits: np.ndarray, framework=None) -> dict:
    """Compare ``argmax(z)`` with ``argmax(softmax(z))`` row by row.

    Softmax is strictly increasing in each logit, so in exact arithmetic both argmaxes agree. In
    floating point two different logits can round to the same probability (both 1.0, or both 0.5
    when two leaders are far ahead of the rest); ``np.argmax`` then picks the first, which may not
    be the logits' winner. Returns the counts of rows where the predictions differ, where the top
    probability is shared by more than one class although the top logit is unique, and of
    non-finite logits and probabilities. ``framework``: softmax as that profile computes it
    (:func:`mnist_cli.losses.softmax`: TensorFlow's flushes probabilities below the smallest normal to 0).
    """
    probs = softmax(logits, framework)  # (n, k)
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


def precision_recall_f1(cm: np.ndarray) -> dict:
    """scikit-learn's ``classification_report`` from a confusion matrix ``C[true, pred]`` (k, k):
    per class ``precision`` (diag / column sum), ``recall`` (diag / row sum), ``f1`` (their harmonic
    mean) and ``support`` (row sum), 0.0 where a ratio is 0/0 (sklearn's ``zero_division=0``); the
    ``macro`` (unweighted) and ``weighted`` (by support) averages, and ``accuracy``."""
    tp = np.diag(cm).astype(np.float64)  # (k,)
    support = cm.sum(axis=1).astype(np.float64)  # (k,) true examples per class
    predicted = cm.sum(axis=0).astype(np.float64)  # (k,) predictions per class
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    total = support.sum()

    def avg(weights):
        return {name: float(np.average(v, weights=weights)) for name, v in
                (("precision", precision), ("recall", recall), ("f1", f1))} | {"support": int(total)}

    return {
        "classes": [{"class": c, "precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                     "support": int(support[c])} for c in range(cm.shape[0])],
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro": avg(None),
        "weighted": avg(support) if total else avg(None),
    }


def top_confusions(cm: np.ndarray, n: int = 5) -> list[dict]:
    """The ``n`` most frequent mistakes (true class, predicted class, count), most frequent first."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:n]
    k = cm.shape[1]
    return [{"true": int(i // k), "predicted": int(i % k), "count": int(off.flat[i])} for i in order if off.flat[i] > 0]


def calibration(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> dict:
    """Expected calibration error (Guo et al. 2017): the examples binned by their top probability into
    ``bins`` equal-width bins of (0, 1]; ECE = sum over bins of (count / n) * |accuracy - mean confidence|.
    Non-finite confidences are left out (``n`` counts the rest)."""
    ok = np.isfinite(confidence)
    conf, hit = confidence[ok], correct[ok].astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)  # (lo, hi] bins; 0 joins the first
    out, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        count = int(np.count_nonzero(inside))
        row = {"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": count, "confidence": None, "accuracy": None}
        if count:
            row["confidence"], row["accuracy"] = float(conf[inside].mean()), float(hit[inside].mean())
            ece += count / conf.size * abs(row["accuracy"] - row["confidence"])
        out.append(row)
    return {"ece": float(ece) if conf.size else float("nan"), "n": int(conf.size), "bins": out}
