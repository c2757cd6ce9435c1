"""Evaluate a model on a split: accuracy, per-class accuracy, confusion matrix and the argmax question.

    report = evaluate_model(model, data.test_images, data.test_labels, input_scale=1.0)
    report["accuracy"], report["argmax"]["differ"]
    # -> (0.9187, 0)
"""

from __future__ import annotations

import numpy as np

from mnist_cli.losses import log_softmax
from mnist_cli.metrics import (
    accuracy,
    argmax_agreement,
    calibration,
    confusion_matrix,
    per_class_accuracy,
    precision_recall_f1,
    top_confusions,
)
from mnist_cli.model import Model
from mnist_cli.precision import LOW_PRECISION
from mnist_cli.settings import DEFAULT_THREADS
from mnist_cli.threads import blas_pinned


def predict_logits(model: Model, images: np.ndarray, input_scale: float, block: int = 2048,
                   threads: int = DEFAULT_THREADS) -> np.ndarray:
    """:meth:`Model.logits` with BLAS on one thread and the blocks shared out over ``threads`` threads:
    bit-identical for any thread count."""
    with blas_pinned():
        if threads <= 1:
            return model.logits(images, input_scale, block)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads, thread_name_prefix="mnist-softmax-eval") as pool:
            return model.logits(images, input_scale, block, lanes=threads, map_blocks=pool.map)


def evaluate_accuracy(model: Model, images: np.ndarray, labels: np.ndarray, input_scale: float,
                      threads: int = DEFAULT_THREADS) -> float:
    """Accuracy of ``argmax(x @ W + b)``."""
    return scored_accuracy(model, images, labels, input_scale, threads)[0]


def scored_accuracy(model: Model, images: np.ndarray, labels: np.ndarray, input_scale: float,
                    threads: int = DEFAULT_THREADS) -> tuple[float, bool]:
    """The accuracy of ``argmax(x @ W + b)`` and whether it means anything: False when a logit is
    non-finite (``argmax`` of a NaN row is 0, so a broken model "predicts" class 0 and scores the share
    of zeros in the labels)."""
    s = score(model, images, labels, input_scale, threads)
    return s["accuracy"], s["meaningful"]


def cross_entropy(z: np.ndarray, labels: np.ndarray) -> float:
    """``mean(-log_softmax(z)[i, y_i])`` over all rows, computed in float64 (NaN if a logit is NaN)."""
    if not labels.size:
        return float("nan")
    with np.errstate(all="ignore"):
        log_p = log_softmax(z.astype(np.float64))  # (n, k)
        return float(-np.mean(log_p[np.arange(labels.size), labels.astype(np.intp)]))


def score(model: Model, images: np.ndarray, labels: np.ndarray, input_scale: float,
          threads: int = DEFAULT_THREADS) -> dict:
    """``accuracy`` of ``argmax(x @ W + b)``, whether it is ``meaningful`` (every logit finite, see
    :func:`scored_accuracy`) and the mean cross-entropy ``loss`` over all the examples."""
    z = predict_logits(model, images, input_scale, threads=threads)  # (n, k)
    return {"accuracy": accuracy(labels, np.argmax(z, axis=1)), "meaningful": bool(np.isfinite(z).all()),
            "loss": cross_entropy(z, labels)}


def evaluate_model(model: Model, images: np.ndarray, labels: np.ndarray, input_scale: float,
                   threads: int = DEFAULT_THREADS) -> dict:
    """Everything ``mnist-softmax evaluate`` reports, as plain JSON-able values.

    ``accuracy`` is from ``argmax(logits)`` (what the tutorial does after dropping softmax);
    ``accuracy_softmax`` from ``argmax(softmax(logits))`` (what it did before). A model with
    non-finite weights is evaluated, not refused: its non-finite logits are counted, and
    ``accuracy_meaningful`` is False (the accuracies stay, for the record, but only count zeros). ``threads``
    share out the logits (:func:`mnist_cli.engine.predict_logits`) and change no number.
    """
    return _evaluated(model, images, labels, input_scale, threads)[1]


def _evaluated(model: Model, images: np.ndarray, labels: np.ndarray, input_scale: float,
               threads: int) -> tuple[np.ndarray, dict]:
    """The logits of ``model`` and :func:`evaluate_model`'s report of them (with ``rounding`` in half precision)."""
    z = predict_logits(model, images, input_scale, threads=threads)  # (n, k)
    report = evaluate_logits(model, z, labels)
    if model.compute_dtype in LOW_PRECISION:
        report["rounding"] = rounding_report(model, z, images, labels, input_scale, threads)
    return z, report


def rounding_report(model: Model, z: np.ndarray, images: np.ndarray, labels: np.ndarray, input_scale: float,
                    threads: int = DEFAULT_THREADS) -> dict:
    """What computing in a half format changed, against the same weights in float32: the predictions whose
    ``argmax`` differs (``predictions_changed``), and the float32 accuracy."""
    z32 = predict_logits(model.as_dtype("float32"), images, input_scale, threads=threads)
    pred, pred32 = np.argmax(z, axis=1), np.argmax(z32, axis=1)
    return {"dtype": model.compute_dtype, "precision": model.precision,
            "predictions_changed": int(np.count_nonzero(pred != pred32)),
            "accuracy_float32": accuracy(labels.astype(np.int64), pred32)}


def evaluate_logits(model: Model, z: np.ndarray, labels: np.ndarray) -> dict:
    """:func:`evaluate_model` from the logits ``z`` (n, k) of ``model`` already computed (e.g. for many
    models at once, :func:`mnist_cli.engine.stacked.evaluate_stack`)."""
    k = model.b.shape[0]
    agree = argmax_agreement(z.astype(np.float32) if model.precision == "mixed" else z)  # autocast: softmax in float32
    y = labels.astype(np.int64)
    cm = confusion_matrix(y, agree["pred_logits"], k)  # (k, k)
    per_class = per_class_accuracy(cm)
    return {
        "n": int(labels.shape[0]),
        "accuracy": accuracy(y, agree["pred_logits"]),
        "accuracy_softmax": accuracy(y, agree["pred_probs"]),
        "accuracy_meaningful": agree["nonfinite_logits"] == 0,  # argmax of a NaN row is 0: a count of zeros
        "per_class_accuracy": [float(a) for a in per_class],
        "confusion_matrix": cm.tolist(),
        "argmax": {key: agree[key] for key in ("differ", "ties_in_probs", "zero_probs")},
        "nonfinite_logits": agree["nonfinite_logits"],
        "nonfinite_probs": agree["nonfinite_probs"],
        "nonfinite_params": int(model.W.size + model.b.size - np.count_nonzero(np.isfinite(model.W))
                                - np.count_nonzero(np.isfinite(model.b))),
    }


def evaluate_file(path, load_data, *, split: str = "test", input_scale: float | None = None,
                  threads: int = DEFAULT_THREADS, plot=None, dtype: str | None = None, precision: str | None = None) -> dict:
    """``mnist-softmax evaluate``: load the model at ``path`` (checked before any array is read, see
    :meth:`Model.load`, and before the data: a bad model file costs no data load), then the data
    (``load_data()``, a :class:`mnist_cli.data.MNIST`), score the model on its ``split`` at the model's
    own input scale unless one is given, and
    add where it came from: ``split``, ``model``, ``input_scale``, this evaluation's ``provenance``, the
    ``training_provenance`` its metadata holds (None for a model saved without it) and the ``data``
    (directory, whether verified MNIST). With ``plot`` (a path) it also draws the templates and the
    most confident mistakes there (:func:`mnist_cli.report.plots.plot_evaluation`). ``dtype`` (and ``precision``)
    evaluate the weights computing in another dtype than the model's own (:meth:`Model.as_dtype`)."""
    from mnist_cli.settings import check_input_scale
    from mnist_cli.threads import provenance

    model = Model.load(path)
    scale = model.input_scale if input_scale is None else input_scale
    check_input_scale(scale, dtype or model.compute_dtype)
    data = load_data()
    images, labels = (data.test_images, data.test_labels) if split == "test" else (data.train_images, data.train_labels)
    if dtype is not None or precision is not None:  # --precision alone: the model's own dtype, computed so
        model = model.as_dtype(dtype or model.compute_dtype, precision)
    z, report = _evaluated(model, images, labels, scale, threads)
    report.update(details(z, labels, report["confusion_matrix"]))
    meta = model.meta
    report.update(split=split, model=str(path), input_scale=scale, provenance=provenance(threads),
                  training_provenance=meta.get("provenance"),
                  training={key: meta.get(key) for key in ("config", "steps", "test_accuracy", "mnist_softmax_version",
                                                          "numpy_version", "dataset_checksums")},
                  data={"dir": str(data.data_dir), "verified": data.verified})
    if plot is not None:
        from mnist_cli.report.plots import plot_evaluation

        shown = [m["index"] for m in report["confident_mistakes"]]
        report["plot"] = str(plot_evaluation(plot, model.W, report, images[shown]))
    return report


def details(z: np.ndarray, labels: np.ndarray, cm, mistakes: int = 5, bins: int = 10) -> dict:
    """What ``evaluate`` adds to the accuracies: the mean cross-entropy ``loss``, scikit-learn's
    ``classification_report``, the most frequent ``confusions``, the ``mistakes`` most confident
    wrong predictions (index, label, prediction, its probability) and the ``calibration``."""
    from mnist_cli.losses import softmax

    with np.errstate(all="ignore"):
        p = softmax(z.astype(np.float64))  # (n, k)
    pred = np.argmax(z, axis=1)  # (n,)
    conf = p[np.arange(len(pred)), pred]  # (n,) the probability of the prediction
    y = labels.astype(np.int64)
    wrong = np.flatnonzero((pred != y) & np.isfinite(conf))
    worst = wrong[np.argsort(-conf[wrong], kind="stable")[:mistakes]]
    cm = np.asarray(cm)
    return {
        "loss": cross_entropy(z, labels),
        "classification_report": precision_recall_f1(cm),
        "confusions": top_confusions(cm),
        "confident_mistakes": [{"index": int(i), "label": int(y[i]), "predicted": int(pred[i]),
                                "probability": float(conf[i])} for i in worst],
        "calibration": calibration(conf, pred == y, bins),
    }
