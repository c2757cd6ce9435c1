"""Scoring a model: its logits, one small score, the full evaluation, and many models at once.

    s = score(model, data.test_images, data.test_labels, input_scale=1.0)
    s.accuracy, s.meaningful
    # -> (0.9187, True)

:func:`score` is the one way a model is scored while training and after (accuracy of ``argmax(logits)``,
whether that means anything, the mean cross-entropy); :func:`evaluate_model` is everything
``mnist-softmax evaluate`` reports of the logits; :func:`evaluate_stack` evaluates many models, the
images converted once per block for all of them (:func:`mnist_cli.model.logits_of`). BLAS runs on one
thread throughout (:func:`mnist_cli.threads.blas_pinned`), and the tool's own ``threads`` share out the
blocks without changing a number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mnist_cli.frameworks import profile
from mnist_cli.losses import LOSSES, log_softmax
from mnist_cli.metrics import accuracy, argmax_agreement, confusion_matrix, per_class_accuracy
from mnist_cli.model import Model, logits_of
from mnist_cli.rounding import flush, is_half
from mnist_cli.settings import DEFAULT_THREADS
from mnist_cli.threads import blas_pinned

__all__ = ["Score", "score", "predict_logits", "cross_entropy", "evaluate_model", "evaluate_logits",
           "rounding_report", "evaluate_stack", "logits_and_evaluation", "softmax_logits", "framework_logits",
           "model_profile"]


def predict_logits(model: Model, images: np.ndarray, input_scale: float, block: int = 2048,
                   threads: int = DEFAULT_THREADS, framework: str | None = None) -> np.ndarray:
    """:meth:`Model.logits` with BLAS on one thread and the blocks shared out over ``threads`` threads:
    bit-identical for any thread count. ``framework``: the product as that profile rounds it in the model's
    dtype (TensorFlow's float16 ``Dense``: the product, then the bias, as its training computed them)."""
    bias_after = _bias_after(framework, model.compute_dtype)
    with blas_pinned():
        if threads <= 1:
            return model.logits(images, input_scale, block, bias_after=bias_after)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads, thread_name_prefix="mnist-softmax-eval") as pool:
            return model.logits(images, input_scale, block, lanes=threads, map_blocks=pool.map, bias_after=bias_after)


def model_profile(model: Model, framework: str | None = None):
    """The profile ``model`` is computed as, ``framework`` or by default the one it was trained under
    (:attr:`Model.framework`), and the name the functions here take for it: None for numpy, the plain IEEE
    arithmetic (the loss in float64)."""
    prof = profile(framework or model.framework)
    return prof, None if prof.name == "numpy" else prof.name


def _bias_after(framework: str | None, dtype) -> bool:
    """Whether ``framework``'s product in ``dtype`` rounds ``x @ W`` before it adds the bias (TF's float16 ``Dense``)."""
    return framework is not None and profile(framework).rules(dtype).bias_after


def cross_entropy(z: np.ndarray, labels: np.ndarray) -> float:
    """``mean(-log_softmax(z)[i, y_i])`` over all rows, computed in float64 (NaN if a logit is NaN)."""
    if not labels.size:
        return float("nan")
    with np.errstate(all="ignore"):
        log_p = log_softmax(z.astype(np.float64))  # (n, k)
        return float(-np.mean(log_p[np.arange(labels.size), labels.astype(np.intp)]))


@dataclass(frozen=True)
class Score:
    """A model's score on some examples: ``accuracy`` of ``argmax(x @ W + b)``; whether it is
    ``meaningful`` (every logit finite: ``argmax`` of a NaN row is 0, so a broken model "predicts" class 0
    and scores the share of zeros in the labels); the mean cross-entropy ``loss``."""

    accuracy: float
    meaningful: bool
    loss: float


def score(model: Model, images: np.ndarray, labels: np.ndarray, input_scale: float,
          threads: int = DEFAULT_THREADS, framework: str | None = None) -> Score:
    """The :class:`Score` of ``model`` on uint8 ``images`` (n, d) and ``labels`` (n,) at ``input_scale``; ``framework``:
    its logits as that profile computes them (:func:`framework_logits`; a run is scored in the arithmetic it trained in,
    :func:`mnist_cli.engine.base.emulated_framework`)."""
    z = framework_logits(predict_logits(model, images, input_scale, threads=threads, framework=framework), framework)
    return Score(accuracy(labels, np.argmax(z, axis=1)), bool(np.isfinite(z).all()), cross_entropy(z, labels))


def evaluate_model(model: Model, images: np.ndarray, labels: np.ndarray, input_scale: float,
                   threads: int = DEFAULT_THREADS, framework: str | None = None) -> dict:
    """Everything ``mnist-softmax evaluate`` reports of the logits, as plain JSON-able values
    (:func:`evaluate_logits`), with ``rounding`` for a half-precision model (:func:`rounding_report`); ``framework``:
    computed as that profile computes (:func:`logits_and_evaluation`)."""
    return logits_and_evaluation(model, images, labels, input_scale, threads, framework)[1]


def logits_and_evaluation(model: Model, images: np.ndarray, labels: np.ndarray, input_scale: float,
               threads: int, framework: str | None = None) -> tuple[np.ndarray, dict]:
    """The logits of ``model`` and :func:`evaluate_model`'s report of them; ``framework``: computed as that
    profile computes (:func:`framework_logits`, :func:`evaluate_logits`)."""
    z = framework_logits(predict_logits(model, images, input_scale, threads=threads, framework=framework), framework)
    report = evaluate_logits(model, z, labels, framework)
    if is_half(model.compute_dtype):
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


def framework_logits(z: np.ndarray, framework: str | None) -> np.ndarray:
    """The logits as ``framework``'s product returns them: flushed to zero where its kernels flush subnormal
    results (:attr:`mnist_cli.frameworks.Rules.ftz`, TensorFlow's float32/float64/bfloat16); None: ``z``."""
    return z if framework is None else flush(z, profile(framework).rules(z.dtype).ftz)


def softmax_logits(model: Model, z: np.ndarray, framework: str | None = None) -> np.ndarray:
    """The logits in the dtype softmax takes them: a mixed-precision model's in float32 when its policy computes
    softmax in float32 (the default's, CUDA autocast's; under ``framework`` the model's own policy if it is that
    profile's, else the profile's default: Keras's keeps the half dtype), else as they are."""
    if model.precision != "mixed":
        return z
    if framework is None:
        return z.astype(np.float32)
    prof = profile(framework)
    own = (model.meta.get("config") or {}).get("mixed_policy")
    ops = prof.policy(own if own in prof.mixed_policies else "", model.compute_dtype)[1]
    return z.astype(np.float32) if LOSSES["naive"].mixed_dtype(ops, model.compute_dtype) == "float32" else z


def evaluate_logits(model: Model, z: np.ndarray, labels: np.ndarray, framework: str | None = None) -> dict:
    """The evaluation of the logits ``z`` (n, k) of ``model``: ``accuracy`` from ``argmax(logits)`` (what the
    tutorial does after dropping softmax); ``accuracy_softmax`` from ``argmax(softmax(logits))`` (what it did
    before); per-class accuracy, the confusion matrix, the argmax agreement, the non-finite counts. A model
    with non-finite weights is evaluated, not refused: ``accuracy_meaningful`` is then False. ``framework``: the
    softmax as that profile computes it, in the dtype its policy takes (:func:`softmax_logits`)."""
    k = model.b.shape[0]
    agree = argmax_agreement(softmax_logits(model, z, framework), framework)  # autocast: softmax in float32
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


#: Models evaluated per pass over the images by :func:`evaluate_stack` (their logits, 32 x 10000 x 10
#: float64, are 25 MB).
EVAL_MODELS = 32


def evaluate_stack(models: list[Model], scales: list[float], images: np.ndarray, labels: np.ndarray,
                   frameworks: list[str | None] | None = None) -> list[dict]:
    """:func:`evaluate_model` of every model at its input scale (and under its profile, ``frameworks``, None
    each by default) on uint8 ``images``, models of one compute form and profile :data:`EVAL_MODELS` at a time
    (:func:`mnist_cli.model.logits_of`): each model's logits are products of its own, of the same shapes whatever
    the other models, so its evaluation does not depend on them and equals :func:`evaluate_model`'s (a
    half-precision model's ``rounding`` too: :func:`rounding_report`)."""
    out: list[dict | None] = [None] * len(models)
    frameworks = frameworks or [None] * len(models)
    by_form: dict[tuple, list[int]] = {}
    for pos, (m, fw) in enumerate(zip(models, frameworks)):
        by_form.setdefault((m.form, m.W.dtype, fw), []).append(pos)
    with blas_pinned():
        for (_, _, fw), positions in by_form.items():
            bias_after = _bias_after(fw, models[positions[0]].compute_dtype)
            for g in range(0, len(positions), EVAL_MODELS):
                group = positions[g : g + EVAL_MODELS]
                zs = logits_of([models[p] for p in group], [scales[p] for p in group], images, bias_after=bias_after)
                for pos, z in zip(group, zs):
                    out[pos] = evaluate_logits(models[pos], framework_logits(z, fw), labels, fw)
                    if is_half(models[pos].compute_dtype):
                        out[pos]["rounding"] = rounding_report(models[pos], z, images, labels, scales[pos])
    return out
