"""``mnist-softmax evaluate``: a saved model scored on a split, with everything the report adds.

    report = evaluate_file("model.npz", load_mnist)
    report["accuracy"], report["argmax"]["differ"]
    # -> (0.9187, 0)

The scoring itself is :mod:`mnist_cli.scoring`'s; this pipeline loads the model (checked first) and the
data, and adds the details (loss, classification report, confusions, confident mistakes, calibration),
where the model came from, and the plot.
"""

from __future__ import annotations

import numpy as np

from mnist_cli.errors import SettingsError
from mnist_cli.frameworks import profile
from mnist_cli.losses import LOSSES
from mnist_cli.metrics import calibration, normalize_confusion, precision_recall_f1, top_confusions
from mnist_cli.model import Model
from mnist_cli.scoring import cross_entropy, logits_and_evaluation, model_profile, softmax_logits
from mnist_cli.settings import DEFAULT_THREADS, held_out, val_split_ok


def evaluate_file(path, load_data, *, split: str = "test", input_scale: float | None = None,
                  threads: int = DEFAULT_THREADS, plot=None, dtype: str | None = None, precision: str | None = None,
                  normalize: str | None = None, val_split: int | float | None = None, foreign: bool = False,
                  framework: str | None = None) -> dict:
    """``mnist-softmax evaluate``: load the model at ``path`` (checked before any array is read, see
    :meth:`Model.load`, and before the data: a bad model file costs no data load), then the data
    (``load_data()``, a :class:`mnist_cli.data.MNIST`), score the model on its ``split`` at the model's
    own input scale unless one is given, and
    add where it came from: ``split``, ``model``, ``input_scale``, this evaluation's ``provenance``, the
    ``training_provenance`` its metadata holds (None for a model saved without it) and the ``data``
    (directory, whether verified MNIST). With ``plot`` (a path) it also draws the templates and the
    most confident mistakes there (:func:`mnist_cli.report.plots.plot_evaluation`). ``dtype`` (and ``precision``)
    evaluate the weights computing in another dtype than the model's own (:meth:`Model.as_dtype`): the report's
    ``evaluated_as`` says how this evaluation computed, ``training`` the model's settings as saved. ``normalize``
    (true, pred, all) adds ``confusion_normalized`` {``normalize``, ``matrix``}: scikit-learn's normalized
    confusion matrix (:func:`mnist_cli.metrics.normalize_confusion`), which the report and the plot show.
    ``split="val"`` scores the training images the model was validated on (:func:`split_examples`);
    ``foreign`` accepts an archive of just W and b (:meth:`Model.load`), the report's ``foreign`` True.
    ``framework`` computes as that profile does (:mod:`mnist_cli.frameworks`: TensorFlow's flushed logits and
    probabilities, the loss as its fused kernel computes it in the model's dtype; numpy: the plain IEEE arithmetic
    with the loss in float64); None: the model's own (:attr:`Model.framework`, the one it was trained under).
    ``evaluated_as["framework"]`` and ``framework`` (the profile) say which computed."""
    from mnist_cli.settings import check_input_scale
    from mnist_cli.threads import provenance

    profile(framework)  # an unknown name is refused before the model or the data is read
    model = Model.load(path, foreign=foreign)
    prof, framework = model_profile(model, framework)  # by default the model's own
    scale = model.input_scale if input_scale is None else input_scale
    check_input_scale(scale, dtype or model.compute_dtype)
    if split == "val" and val_split is None and not isinstance(model.meta.get("validation"), dict):
        raise SettingsError(("split", "val_split"), f"{path} records no validation split (it was trained without "
                            "one): give {val_split} N or a fraction to say which training images to score")
    data = load_data()
    images, labels, where = split_examples(data, split, model.meta, val_split, path)
    if dtype is not None or precision is not None:  # --precision alone: the model's own dtype, computed so
        model = model.as_dtype(dtype or model.compute_dtype, precision)
    z, report = logits_and_evaluation(model, images, labels, scale, threads, framework)
    report.update(details(softmax_logits(model, z, framework) if framework else z, labels,
                          report["confusion_matrix"], framework=framework))
    if normalize is not None:
        report["confusion_normalized"] = {"normalize": normalize,
                                          "matrix": normalize_confusion(report["confusion_matrix"], normalize).tolist()}
    meta = _printable(model.meta)  # what a model file says is shown, never obeyed: no terminal escapes
    report.update(split=split, model=str(path), input_scale=scale, provenance=provenance(threads),
                  evaluated_as={"dtype": model.compute_dtype, "precision": model.precision,  # not the training's
                                "framework": prof.name},
                  framework=prof.describe(),
                  training_provenance=meta.get("provenance"),
                  training={key: meta.get(key) for key in ("config", "steps", "test_accuracy", "mnist_softmax_version",
                                                          "numpy_version", "dataset_checksums", "dataset")},
                  data=data.where, foreign=bool(meta.get("foreign")),
                  **where)
    if plot is not None:
        from mnist_cli.report.plots import plot_evaluation

        shown = [m["index"] for m in report["confident_mistakes"]]
        report["plot"] = str(plot_evaluation(plot, model.W, report, images[shown]))
    return report


def split_examples(data, split: str, meta: dict, val_split=None, path="model") -> tuple:
    """``(images, labels, extra)`` of ``split``: the test or training set, or (``val``) the held-out
    training images, ``val_split`` if given (as ``train --val-split`` holds them out) else those the model's
    metadata records (``meta["validation"]``, checked: a slice of a training set of the same size);
    ``extra`` is ``{"validation": {split, n, start, stop, of, recorded}}`` for ``val``, else empty."""
    if split == "test":
        return data.test_images, data.test_labels, {}
    if split == "train":
        return data.train_images, data.train_labels, {}
    n = len(data.train_labels)
    if val_split is not None:
        where = {**held_out(val_split, n), "recorded": False}
    else:
        rec = meta["validation"]
        given, of = rec.get("split"), rec.get("of")
        try:
            if not (val_split_ok(given) and type(of) is int and given):
                raise SettingsError("val_split", "not a split")
            where = {**held_out(given, of), "recorded": True}
        except SettingsError:
            raise SettingsError("val_split", f"{path} records a validation split that is not one ({rec!r}); give "
                                "{val_split} to say which training images to score") from None
        if of != n:
            raise SettingsError("val_split", f"{path} was validated on the last {where['n']} of {of} training "
                                f"images, but this training set has {n}: use the data it was trained on, or choose "
                                "the images with {val_split}")
    return data.train_images[where["start"]:], data.train_labels[where["start"]:], {"validation": where}


def _printable(obj):
    """``obj`` (a model's metadata) with every string passed through
    :func:`mnist_cli.data.directory.printable` (control characters, OSC and C1 sequences shown escaped)."""
    from mnist_cli.data.directory import printable

    if isinstance(obj, dict):
        return {printable(k): _printable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_printable(v) for v in obj]
    return printable(obj) if isinstance(obj, str) else obj


def details(z: np.ndarray, labels: np.ndarray, cm, mistakes: int = 5, bins: int = 10, framework=None) -> dict:
    """What ``evaluate`` adds to the accuracies: the mean cross-entropy ``loss``, scikit-learn's
    ``classification_report``, the most frequent ``confusions``, the ``mistakes`` most confident
    wrong predictions (index, label, prediction, its probability) and the ``calibration``. ``framework``: the
    probabilities and the loss (its fused kernel) as that profile computes them in z's dtype; None: in float64."""
    from mnist_cli.losses import softmax

    with np.errstate(all="ignore"):
        p = (softmax(z, framework) if framework else softmax(z.astype(np.float64))).astype(np.float64)  # (n, k)
    pred = np.argmax(z, axis=1)  # (n,)
    conf = p[np.arange(len(pred)), pred]  # (n,) the probability of the prediction
    y = labels.astype(np.int64)
    wrong = np.flatnonzero((pred != y) & np.isfinite(conf))
    worst = wrong[np.argsort(-conf[wrong], kind="stable")[:mistakes]]
    cm = np.asarray(cm)
    return {
        "loss": LOSSES["fused"](z, labels.astype(np.intp), framework=framework)[0] if framework
        else cross_entropy(z, labels),
        "classification_report": precision_recall_f1(cm),
        "confusions": top_confusions(cm),
        "confident_mistakes": [{"index": int(i), "label": int(y[i]), "predicted": int(pred[i]),
                                "probability": float(conf[i])} for i in worst],
        "calibration": calibration(conf, pred == y, bins),
    }
