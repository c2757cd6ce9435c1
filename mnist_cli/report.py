"""Turn results into plain dicts (for ``--json``) and readable text (for the terminal).

``--json`` output goes through :func:`mnist_cli.fileio.jsonable`: strict JSON, non-finite floats as
the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``.
"""

from __future__ import annotations

from dataclasses import asdict

from mnist_cli.fileio import jsonable  # noqa: F401  (re-exported: the JSON conversion of every report)
from mnist_cli.store import describe_data
from mnist_cli.train import UNDERFLOW_GAP, TrainResult


def train_summary(result: TrainResult, test_accuracy: float, train_accuracy: float, n_test: int, n_train: int) -> dict:
    """The report of one training run (``train --json``)."""
    steps_per_s = result.steps / result.seconds if result.seconds > 0 else None
    return {
        "config": asdict(result.config),
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "test_accuracy": test_accuracy,
        "train_accuracy": train_accuracy,
        "n_test": n_test,
        "n_train": n_train,
        "final_loss": result.final_loss,
        "nan": result.nan.to_dict(),
        "underflow_gap_limit": UNDERFLOW_GAP[result.config.dtype],
        "seconds": result.seconds,
        "steps_per_second": steps_per_s,
    }


def _first(step) -> str:
    return f" (first at step {step})" if step else ""


def nan_lines(nan: dict, steps: int) -> list[str]:
    """Readable NaN accounting: one line per kind of event, or 'none'."""
    if not nan["any_nonfinite"]:
        return ["none: every loss, gradient and parameter stayed finite"]
    lines = []
    if nan["steps_nan_loss"]:
        lines.append(f"NaN loss in {nan['steps_nan_loss']} of {steps} steps{_first(nan['first_nan_loss_step'])}")
    if nan["steps_inf_loss"]:
        lines.append(f"infinite loss in {nan['steps_inf_loss']} of {steps} steps{_first(nan['first_inf_loss_step'])}")
    if nan["steps_nonfinite_grad"]:
        lines.append(
            f"non-finite gradient in {nan['steps_nonfinite_grad']} steps{_first(nan['first_nonfinite_grad_step'])}"
        )
    if nan["params_nonfinite"]:
        lines.append(f"parameters non-finite from step {nan['first_nonfinite_params_step']} on")
    return lines


def format_train(s: dict) -> str:
    """The terminal report of ``train``."""
    c = s["config"]
    nan = s["nan"]
    head = (
        f"loss={c['loss']} lr={c['lr']:g} batch={c['batch_size']} steps={s['steps']} dtype={c['dtype']} "
        f"input-scale={c['input_scale']:g} init={c['init']} seed={c['seed']}"
    )
    rate = f", {s['steps_per_second']:,.0f} steps/s" if s["steps_per_second"] else ""
    underflow = (
        f"{nan['underflow_probs']} softmax probabilities were exactly 0 in {nan['steps_with_underflow']} steps"
        f"{_first(nan['first_underflow_step'])}; largest logit gap {nan['max_logit_gap']:.4g} "
        f"({c['dtype']} exp underflows past {s['underflow_gap_limit']:.1f})"
    )
    nl = nan_lines(nan, s["steps"])
    rows = [
        head,
        f"  test accuracy   {s['test_accuracy']:.4f}  ({s['n_test']} examples)",
        f"  train accuracy  {s['train_accuracy']:.4f}  ({s['n_train']} examples)",
        f"  final loss      {s['final_loss']:.6g}",
        f"  NaN / inf       {nl[0]}",
        *[f"                  {line}" for line in nl[1:]],
        f"  underflow       {underflow}",
        f"  time            {s['seconds']:.3f} s training{rate}",
    ]
    if s["stopped_early"]:
        rows.append(f"  stopped         at step {s['steps']} (--stop-on-nan)")
    return "\n".join(rows + data_lines(s))


def data_lines(r: dict) -> list[str]:
    """The report's line naming the data directory and whether it is verified MNIST (if known)."""
    data = r.get("data") or {}
    return [describe_data(data["dir"], data["verified"])] if "dir" in data else []


def format_evaluate(r: dict, split: str) -> str:
    """The terminal report of ``evaluate``: accuracy, the argmax question, per-class table, confusion matrix."""
    a = r["argmax"]
    k = len(r["per_class_accuracy"])
    lines = [
        f"split {split}: {r['n']} examples",
        f"  accuracy, argmax(logits)           {r['accuracy']:.4f}",
        f"  accuracy, argmax(softmax(logits))  {r['accuracy_softmax']:.4f}",
        f"  predictions that differ            {a['differ']}"
        + ("  (softmax is strictly increasing: only floating-point ties can do this)" if a["differ"] else ""),
        f"  rows where softmax made a tie      {a['ties_in_probs']}",
        f"  probabilities exactly 0            {a['zero_probs']}",
        f"  non-finite params/logits/probs     {r['nonfinite_params']}/{r['nonfinite_logits']}/{r['nonfinite_probs']}",
        "",
        "per-class accuracy:",
        "  " + " ".join(f"{d:>6}" for d in range(k)),
        "  " + " ".join(f"{acc:6.3f}" for acc in r["per_class_accuracy"]),
        "",
        "confusion matrix (rows: true class, columns: predicted):",
        "     " + " ".join(f"{d:>5}" for d in range(k)),
    ]
    lines += [f"  {i:>2} " + " ".join(f"{v:5d}" for v in row) for i, row in enumerate(r["confusion_matrix"])]
    return "\n".join(lines + data_lines(r))
