"""The report of ``evaluate``: the two argmaxes, per-class accuracy, confusion matrix, scores, calibration.

    print(format_evaluate(report, "test"))   # report: evaluate --json's document
"""

from __future__ import annotations

from mnist_cli.report.text import (
    accuracy_text,
    class_name,
    data_lines,
    fitted,
    foreign_lines,
    plural,
    provenance_text,
    value_text,
)
from mnist_cli.report.train import changed_text


@fitted
def format_evaluate(r: dict, split: str) -> str:
    """The terminal report of ``evaluate``: accuracy, the argmax question, per-class table, confusion matrix."""
    a = r["argmax"]
    k = len(r["per_class_accuracy"])
    ok, finite = r.get("accuracy_meaningful", True), r["nonfinite_params"] == 0
    lines = [
        f"split {split}: {r['n']} examples" + _held_out_text(r.get("validation")) + _classes_text(r),
        f"  accuracy, argmax(logits)           {accuracy_text(r['accuracy'], ok, finite)}",
        f"  accuracy, argmax(softmax(logits))  {accuracy_text(r['accuracy_softmax'], ok, finite)}",
        f"  predictions that differ            {a['differ']}"
        + ("  (softmax is strictly increasing: only floating-point ties can do this)" if a["differ"] else ""),
        f"  rows where softmax made a tie      {a['ties_in_probs']}",
        f"  probabilities exactly 0            {a['zero_probs']}",
        f"  non-finite params/logits/probs     {r['nonfinite_params']}/{r['nonfinite_logits']}/{r['nonfinite_probs']}",
        *_rounding_lines(r.get("rounding")),
        *([f"  computed as                        {r['framework']['framework']} ({r['framework']['measured_with']})"]
          if r.get("framework") else []),
        "",
        "per-class accuracy:",
        "  " + " ".join(f"{d:>6}" for d in range(k)),
        "  " + (" ".join(f"{acc:6.3f}" for acc in r["per_class_accuracy"]) if ok
                else accuracy_text(0, ok, finite) + ": argmax of a NaN row is 0, so every such row 'predicts' 0"),
        "",
        *confusion_lines(r, ok),
    ]
    if "classification_report" in r:
        lines += ["", *(_details(r) if ok else [f"loss, precision/recall, calibration: {accuracy_text(0, ok, finite)}"])]
    if r.get("training") and r["training"].get("config"):
        lines += ["", f"model settings       {_training_text(r['training'])}"]
    trained_on, scored_on = (r.get("training") or {}).get("dataset"), (r.get("data") or {}).get("dataset")
    if trained_on and scored_on and trained_on != scored_on:
        lines += ["", f"NOTE: the model was trained on {trained_on}, scored here on {scored_on}"]
    lines += ["", *foreign_lines(r), f"model trained with   {provenance_text(r.get('training_provenance'))}",
              f"evaluated with       {provenance_text(r.get('provenance'))}", *data_lines(r)]
    if "plot" in r:
        lines.append(f"Wrote plot: {r['plot']}")
    return "\n".join(lines)


#: What each --normalize divides by (scikit-learn's confusion_matrix(normalize=...)).
NORMALIZED_BY = {"true": "over each true class (each row sums to 1)",
                 "pred": "over each predicted class (each column sums to 1)",
                 "all": "over all examples (the matrix sums to 1)"}


def confusion_title(r: dict) -> str:
    """What the confusion matrix shown holds: counts, or normalized over what (the text and the plot)."""
    norm = r.get("confusion_normalized")
    return "confusion matrix" + (f" normalized {NORMALIZED_BY[norm['normalize']]}" if norm else "")


def confusion_lines(r: dict, ok: bool = True) -> list[str]:
    """The confusion matrix, rows true class, columns predicted: counts, or the normalized fractions (3
    decimals) with ``--normalize``."""
    norm = r.get("confusion_normalized")
    k = len(r["confusion_matrix"])
    head = ("confusion matrix (rows: true class, columns: predicted)"
            + (f", normalized {NORMALIZED_BY[norm['normalize']]}" if norm else "")
            + (":" if ok else ", non-finite rows counted as predicting 0:"))
    rows = norm["matrix"] if norm else r["confusion_matrix"]
    cell = (lambda v: f"{v:5.3f}") if norm else (lambda v: f"{v:5d}")
    return [head, "     " + " ".join(f"{d:>5}" for d in range(k)),
            *(f"  {i:>2} " + " ".join(cell(v) for v in row) for i, row in enumerate(rows))]


def _classes_text(r: dict) -> str:
    """The class names of a dataset whose classes are not its digits (the tables below number them)."""
    classes = (r.get("data") or {}).get("classes") or []
    if all(name == str(c) for c, name in enumerate(classes)):
        return ""
    return "\n  classes: " + ", ".join(f"{c} {name}" for c, name in enumerate(classes))


def _held_out_text(v: dict | None) -> str:
    """Which training images ``--split val`` scored, and whether the model's metadata chose them."""
    if not v:
        return ""
    return (f", training images {v['start']}-{v['stop'] - 1} of {v['of']} (--val-split {v['split']:g}, "
            + ("as the model recorded)" if v["recorded"] else "as given)"))


def _rounding_lines(rd: dict | None) -> list[str]:
    """What computing in float16/bfloat16 changed against the same weights in float32 (evaluate)."""
    if not rd:
        return []
    how = f"{rd['dtype']}, {rd['precision']} precision" + (" (softmax in float32)" if rd["precision"] == "mixed" else "")
    return [f"  computed in                        {how}",
            f"  predictions rounding changed       {rd['predictions_changed']} vs the same weights in float32 "
            f"(accuracy {rd['accuracy_float32']:.4f} there)"]


def classification_report_text(cr: dict, names=None) -> list[str]:
    """scikit-learn's ``classification_report`` layout (2 decimals, support as a count); ``names``: its
    ``target_names`` (the dataset's class names)."""
    def row(name, m):
        return f"{name:>12}  {m['precision']:9.2f} {m['recall']:9.2f} {m['f1']:9.2f} {m['support']:9d}"

    total = cr["macro"]["support"]
    return [f"{'':>12}  {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}", "",
            *(row(names[c["class"]] if names else str(c["class"]), c) for c in cr["classes"]), "",
            f"{'accuracy':>12}  {'':>9} {'':>9} {cr['accuracy']:9.2f} {total:9d}",
            row("macro avg", cr["macro"]), row("weighted avg", cr["weighted"])]


def _details(r: dict) -> list[str]:
    """Test loss, the classification report, frequent confusions, confident mistakes and calibration."""
    cal = r["calibration"]
    lines = [f"cross-entropy (mean over the {r['n']} examples)  {value_text(r['loss'], '.4f')}", "",
             *classification_report_text(r["classification_report"], (r.get("data") or {}).get("classes")), "",
             "most frequent confusions:  " + ", ".join(f"{class_name(r, c['true'])} as {class_name(r, c['predicted'])} "
                                                       f"({c['count']})" for c in r["confusions"]),
             "most confident mistakes (index: label -> predicted, probability):",
             *(f"  #{m['index']:<6} {class_name(r, m['label'])} -> {class_name(r, m['predicted'])}  "
               f"p = {m['probability']:.4f}" for m in r["confident_mistakes"]),
             "", f"calibration: expected calibration error {value_text(cal['ece'], '.4f')} "
             f"({len(cal['bins'])} bins of the top probability; accuracy vs mean confidence per bin)",
             "  bin            count  confidence  accuracy"]
    lines += [f"  ({b['lo']:.1f}, {b['hi']:.1f}]  {b['count']:>8}  {value_text(b['confidence'], '10.4f')}  "
              f"{value_text(b['accuracy'], '8.4f')}" for b in cal["bins"] if b["count"]]
    return lines


def _training_text(t: dict) -> str:
    """The model's training settings from its metadata: what differs from the tutorial, steps, version."""
    from mnist_cli.settings import TUTORIAL, TrainConfig, changed_settings

    known = {k: v for k, v in t["config"].items() if k in TUTORIAL.__dataclass_fields__}
    try:
        changed = changed_text(changed_settings(TrainConfig(**known)))
    except TypeError:
        changed = "unreadable"
    steps = f"; {plural(t['steps'], 'step')} taken" if isinstance(t.get("steps"), int) else ""
    version = f"; mnist-softmax {t['mnist_softmax_version']}" if t.get("mnist_softmax_version") else ""
    return changed + steps + version
