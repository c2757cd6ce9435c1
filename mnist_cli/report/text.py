"""Every word the tool prints: the reports of train, evaluate and compare, the conclusion, sparklines.

    >>> value_text(float("nan")), value_text(float("inf")), value_text(0.25, ".2f"), value_text(None)
    ('NaN', 'inf', '0.25', '-')
    >>> sparkline([3.0, 2.0, 1.5, 1.0, 1.0])
    '█▅▃▁▁'
    >>> sparkline([2.3, float("nan"), float("nan")])
    '▁××'

Pure functions from the documents the library builds (``train --json``, ``evaluate --json``,
``compare --json``) to text: nothing here computes a result, and nothing else in the package words
one. :mod:`mnist_cli.report.plots` draws from the same documents.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import textwrap
from collections.abc import Sequence

from mnist_cli.data.load import describe_data
from mnist_cli.settings import HALF_NAMES

WIDTH = 100  # wrap prose for an ordinary terminal
SPARK = 16  # characters of the loss sparkline
NONFINITE = "×"  # a NaN or infinite value in a sparkline
FORENSICS_BRIEF = 6  # failing runs named one line each after the first explained in full


def value_text(x, fmt: str = "g") -> str:
    """A number in ``fmt``; ``None`` as ``-``; NaN and infinities spelt ``NaN``, ``inf``, ``-inf`` (the one spelling)."""
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return "NaN" if x != x else ("inf" if x > 0 else "-inf")
    return format(x, fmt)


def accuracy_text(acc: float, meaningful: bool = True, weights_finite: bool = False) -> str:
    """An accuracy to 4 places, or ``n/a`` with the reason when a logit was non-finite (argmax of a NaN
    row is 0, so the number would only count the zeros among the labels)."""
    if meaningful:
        return f"{acc:.4f}"
    return f"n/a (non-finite {'logits' if weights_finite else 'weights'})"


def plural(n: int, word: str) -> str:
    """``1 step``, ``2 steps``."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def number_text(x: float) -> str:
    """``x`` as short as ``:g`` writes it when that reads back as ``x``, else with every digit needed
    (``0.1000001``, not ``0.1``): distinct values always get distinct labels and file names."""
    short = f"{x:g}"
    return short if float(short) == x else repr(float(x))


def _grid_cells(m: dict, row_axes: list[str], col_axis: str) -> tuple[dict, list[tuple]]:
    """``{(row, col): first_nonfinite}`` of the map's cells, and the rows in the axes' order that hold at
    least one cell (no float32 "mixed" row, say, where the grid has no such cell)."""
    found = {(tuple(c[a] for a in row_axes), c[col_axis]): c["first_nonfinite"] for c in m["cells"]}
    seen = {r for r, _ in found}
    return found, [r for r in itertools.product(*(m["values"][a] for a in row_axes)) if r in seen]


def map_grid(m: dict) -> dict:
    """Lay a :func:`stability_map` out as a 2-D table: one varying axis across (seed first, then input
    scale, lr, dtype), the others down. ``steps[loss][row][col]`` is the first non-finite step
    (None = never); ``ran[row][col]`` is False for a combination the grid did not contain, and a row
    with no cell at all is left out."""
    col_axis = next((a for a in ("seed", "input_scale", "lr", "dtype") if a in m["axes"]), "input_scale")
    row_axes = [a for a in m["axes"] if a != col_axis]
    cols = m["values"][col_axis]
    found, rows = _grid_cells(m, row_axes, col_axis)
    return {
        "col_axis": col_axis, "row_axes": row_axes, "cols": cols, "rows": rows,
        "ran": [[(r, v) in found for v in cols] for r in rows],
        "steps": {loss: [[found[(r, v)][loss] if (r, v) in found else None for v in cols] for r in rows]
                  for loss in m["losses"]},
    }


# --- sparklines --------------------------------------------------------------------------------


BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int | None = None) -> str:
    """One character per value (or per bucket of values when ``width`` is smaller than their
    number): the finite ones scaled between their min and max, the non-finite ones as ``×``."""
    values = [float(v) for v in values]
    if width is not None and 0 < width < len(values):
        size = len(values) / width
        buckets = [values[int(i * size) : int((i + 1) * size)] for i in range(width)]
        values = [sum(b) / len(b) if all(math.isfinite(v) for v in b) else math.nan for b in buckets]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return NONFINITE * len(values)
    lo, hi = min(finite), max(finite)
    span = (hi - lo) or 1.0
    top = len(BARS) - 1
    return "".join(BARS[round((v - lo) / span * top)] if math.isfinite(v) else NONFINITE for v in values)


# --- train and evaluate --------------------------------------------------------------------------


def data_lines(r: dict) -> list[str]:
    """The report's line naming the data directory and whether it is verified MNIST (if known)."""
    data = r.get("data") or {}
    return [describe_data(data["dir"], data["verified"])] if "dir" in data else []


def provenance_text(p: dict | None) -> str:
    """One line naming what computed a result: threads, BLAS library and kernel, NumPy, CPU."""
    if not isinstance(p, dict) or not p:  # a model saved before provenance was recorded (or tampered with)
        return "not recorded"
    libs = p.get("blas") if isinstance(p.get("blas"), list) else []
    blas = ", ".join(f"{b.get('library')} {b.get('version')} {b.get('kernel') or ''}".rstrip()
                     for b in libs if isinstance(b, dict))
    threads = p.get("threads")
    return (f"{threads} thread{'s' if threads != 1 else ''} (BLAS {p.get('blas_threads', '?')}), "
            f"{blas or 'BLAS unknown'}, numpy {p.get('numpy')}, {p.get('cpu')}")


def _first(step) -> str:
    return f" (first at step {step})" if step else ""


def nan_lines(nan: dict, steps: int) -> list[str]:
    """Readable NaN accounting: one line per kind of event, or 'none'."""
    if not nan["any_nonfinite"]:
        return ["none: every loss, gradient and parameter stayed finite"]
    lines = []
    if nan["steps_nan_loss"]:
        lines.append(f"NaN loss in {nan['steps_nan_loss']} of {plural(steps, 'step')}{_first(nan['first_nan_loss_step'])}")
    if nan["steps_inf_loss"]:
        lines.append(f"infinite loss in {nan['steps_inf_loss']} of {plural(steps, 'step')}"
                     f"{_first(nan['first_inf_loss_step'])}")
    if nan["steps_nonfinite_grad"]:
        lines.append(
            f"non-finite gradient in {plural(nan['steps_nonfinite_grad'], 'step')}{_first(nan['first_nonfinite_grad_step'])}"
        )
    if nan["params_nonfinite"]:
        lines.append(f"parameters non-finite from step {nan['first_nonfinite_params_step']} on")
    return lines


#: How the report words a setting that differs from the tutorial (default: ``name value``).
_CHANGED = {"average_epochs": "averaged over the last {} epochs", "fast": "the plain reference loop",
            "stop_on_nan": "stop at the first NaN", "full_batch": "full batch", "input_scale": "input scale {}",
            "lr_decay": "lr decay {}", "weight_decay": "weight decay {}", "train_limit": "first {} examples",
            "batch_size": "batch {}", "init_std": "init std {}",
            "val_split": "the last {} training images held out for validation"}


def changed_text(changed: dict, preset: str = "tutorial") -> str:
    """``preset best: epochs 12, lr 1, averaged over the last 8 epochs``; ``as the tutorial`` if nothing changed."""
    parts = [_CHANGED.get(k, k.replace("_", " ") + " {}").format(v if not isinstance(v, float) else f"{v:g}")
             for k, v in changed.items()]
    head = f"preset {preset}" if preset != "tutorial" else ""
    if not parts:
        return head or "as the tutorial"
    return (f"{head}: " if head else "") + ", ".join(parts)


def _softmax_dtype(c: dict) -> str:
    """The dtype softmax runs in: float32 under mixed precision (autocast), else the run's."""
    return "float32" if c.get("precision") == "mixed" else c["dtype"]


def half_lines(c: dict, nan: dict) -> list[str]:
    """The report lines of a half-precision run: overflowed logits, and the loss scaler's skips and scale."""
    if c["dtype"] not in HALF_NAMES:
        return []
    lines = [f"  overflow        {nan['overflow_logits']} logits were +-inf (past the largest {c['dtype']})"
             f"{_first(nan['first_overflow_step'])}"] if nan.get("overflow_logits") else []
    if nan.get("loss_scale") is not None:
        lines.append(f"  loss scale      {short_number(nan['loss_scale'])} at the end ({c['loss_scale']}); "
                     f"{plural(nan['steps_skipped'], 'update')} skipped for a non-finite gradient"
                     f"{_first(nan['first_skipped_step'])}")
    return lines


def format_train(s: dict, explain: bool = False) -> str:
    """The terminal report of ``train`` (with the explanation of its first non-finite step when ``explain``)."""
    c = s["config"]
    nan = s["nan"]
    head = (
        f"loss={c['loss']} lr={c['lr']:g} batch={c['batch_size']} steps={s['steps']} dtype={c['dtype']} "
        f"input-scale={c['input_scale']:g} init={c['init']} seed={c['seed']}"
    )
    rate = f", {s['steps_per_second']:,.0f} steps/s" if s["steps_per_second"] else ""
    underflow = (
        f"{nan['underflow_probs']} softmax probabilities were exactly 0 in {plural(nan['steps_with_underflow'], 'step')}"
        f"{_first(nan['first_underflow_step'])}; largest logit gap {nan['max_logit_gap']:.4g} "
        f"({_softmax_dtype(c)} exp underflows past {s['underflow_limit']:.1f})"
    )
    nl = nan_lines(nan, s["steps"])
    ok, finite = s.get("accuracy_meaningful", True), not nan["params_nonfinite"]
    rows = [
        head,
        f"  settings        {changed_text(s.get('changed', {}), s.get('preset', 'tutorial'))}",
        f"  test accuracy   {accuracy_text(s['test_accuracy'], ok, finite)}  ({s['n_test']} examples)",
        f"  train accuracy  {accuracy_text(s['train_accuracy'], ok, finite)}  ({s['n_train']} examples)",
        f"  last batch loss {value_text(s['final_loss'], '.6g')}  (step {s['steps']}'s mini-batch of "
        f"{c['batch_size']})",
        *([f"  training loss   {value_text(s['train_loss'], '.6g')}  (mean cross-entropy over the {s['n_train']} "
           "training examples, final model)"] if "train_loss" in s else []),
        f"  NaN / inf       {nl[0]}",
        *[f"                  {line}" for line in nl[1:]],
        f"  underflow       {underflow}",
        *half_lines(c, nan),
        f"  time            {s['seconds']:.3f} s training{rate}",
        f"  computed with   {provenance_text(s.get('provenance'))}",
    ]
    if s["stopped_early"]:
        rows.append(f"  stopped         at step {s['steps']}, before its update (stop on NaN)")
    if s.get("validation"):
        rows += validation_lines(s["validation"], s.get("accuracy_meaningful", True))
    rows += data_lines(s)
    if explain:
        rows += ["", format_explanation(s["explanation"]) if s.get("explanation") else "No non-finite step to explain."]
    if "saved" in s:
        rows.append(f"  saved           {s['saved']}")
    if "plot" in s:
        rows.append(f"  plot            {s['plot']}")
    return "\n".join(rows)


def progress_line(step: int, total: int, loss: float, nonfinite: int) -> str:
    """``train: step 300/1000, batch loss 0.3707, 0 non-finite steps``: progress where no bar can be drawn."""
    return (f"train: step {step}/{total}, batch loss {value_text(loss, '.4g')}, "
            f"{plural(nonfinite, 'non-finite step')}")


def interrupted_text(done: dict | None) -> str:
    """What an interrupted ``train`` or ``compare`` had done (``exc.done`` of the KeyboardInterrupt)."""
    if not done:
        return ""
    if done["command"] == "train":
        lines = nan_lines(done["nan"], max(done["steps"], 1))
        return (f"Done before the interrupt: {plural(done['steps'], 'step')} of {done['of']}; NaN / inf so far: "
                + "; ".join(lines))
    finished = done["finished"]
    return (f"Done before the interrupt: {len(finished)} of {plural(done['runs'], 'run')}"
            + (f" finished: {', '.join(finished)}." if finished else ", none finished."))


def validation_lines(v: dict, meaningful: bool = True) -> list[str]:
    """The held-out score of the final model, and train vs validation per epoch (else per logged step)."""
    acc = accuracy_text(v["accuracy"], meaningful)
    lines = [f"  validation      accuracy {acc}, loss {value_text(v['loss'], '.4f')}  (final model, {v['n']} held-out "
             "examples)"]
    history = v["history"]
    epochs = [r for r in history if float(r["epoch"]).is_integer()] or history
    if epochs:
        lines.append("    epoch     step  train loss  train acc  val loss  val acc")
        lines += [f"    {r['epoch']:5.4g} {r['step']:8d}  {value_text(r['train_loss'], '10.4f')}  "
                  f"{value_text(r['train_accuracy'], '9.4f')}  {value_text(r['val_loss'], '8.4f')}  "
                  f"{value_text(r['val_accuracy'], '7.4f')}" for r in epochs]
    return lines


def format_evaluate(r: dict, split: str) -> str:
    """The terminal report of ``evaluate``: accuracy, the argmax question, per-class table, confusion matrix."""
    a = r["argmax"]
    k = len(r["per_class_accuracy"])
    ok, finite = r.get("accuracy_meaningful", True), r["nonfinite_params"] == 0
    lines = [
        f"split {split}: {r['n']} examples",
        f"  accuracy, argmax(logits)           {accuracy_text(r['accuracy'], ok, finite)}",
        f"  accuracy, argmax(softmax(logits))  {accuracy_text(r['accuracy_softmax'], ok, finite)}",
        f"  predictions that differ            {a['differ']}"
        + ("  (softmax is strictly increasing: only floating-point ties can do this)" if a["differ"] else ""),
        f"  rows where softmax made a tie      {a['ties_in_probs']}",
        f"  probabilities exactly 0            {a['zero_probs']}",
        f"  non-finite params/logits/probs     {r['nonfinite_params']}/{r['nonfinite_logits']}/{r['nonfinite_probs']}",
        *_rounding_lines(r.get("rounding")),
        "",
        "per-class accuracy:",
        "  " + " ".join(f"{d:>6}" for d in range(k)),
        "  " + (" ".join(f"{acc:6.3f}" for acc in r["per_class_accuracy"]) if ok
                else accuracy_text(0, ok, finite) + ": argmax of a NaN row is 0, so every such row 'predicts' 0"),
        "",
        "confusion matrix (rows: true class, columns: predicted)" + (":" if ok else
                                                                      ", non-finite rows counted as predicting 0:"),
        "     " + " ".join(f"{d:>5}" for d in range(k)),
    ]
    lines += [f"  {i:>2} " + " ".join(f"{v:5d}" for v in row) for i, row in enumerate(r["confusion_matrix"])]
    if "classification_report" in r:
        lines += ["", *(_details(r) if ok else [f"loss, precision/recall, calibration: {accuracy_text(0, ok, finite)}"])]
    if r.get("training") and r["training"].get("config"):
        lines += ["", f"model settings       {_training_text(r['training'])}"]
    lines += ["", f"model trained with   {provenance_text(r.get('training_provenance'))}",
              f"evaluated with       {provenance_text(r.get('provenance'))}", *data_lines(r)]
    if "plot" in r:
        lines.append(f"Wrote plot: {r['plot']}")
    return "\n".join(lines)


def _rounding_lines(rd: dict | None) -> list[str]:
    """What computing in float16/bfloat16 changed against the same weights in float32 (evaluate)."""
    if not rd:
        return []
    how = f"{rd['dtype']}, {rd['precision']} precision" + (" (softmax in float32)" if rd["precision"] == "mixed" else "")
    return [f"  computed in                        {how}",
            f"  predictions rounding changed       {rd['predictions_changed']} vs the same weights in float32 "
            f"(accuracy {rd['accuracy_float32']:.4f} there)"]


def classification_report_text(cr: dict) -> list[str]:
    """scikit-learn's ``classification_report`` layout (2 decimals, support as a count)."""
    def row(name, m):
        return f"{name:>12}  {m['precision']:9.2f} {m['recall']:9.2f} {m['f1']:9.2f} {m['support']:9d}"

    total = cr["macro"]["support"]
    return [f"{'':>12}  {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}", "",
            *(row(str(c["class"]), c) for c in cr["classes"]), "",
            f"{'accuracy':>12}  {'':>9} {'':>9} {cr['accuracy']:9.2f} {total:9d}",
            row("macro avg", cr["macro"]), row("weighted avg", cr["weighted"])]


def _details(r: dict) -> list[str]:
    """Test loss, the classification report, frequent confusions, confident mistakes and calibration."""
    cal = r["calibration"]
    lines = [f"cross-entropy (mean over the {r['n']} examples)  {value_text(r['loss'], '.4f')}", "",
             *classification_report_text(r["classification_report"]), "",
             "most frequent confusions:  " + ", ".join(f"{c['true']} as {c['predicted']} ({c['count']})"
                                                       for c in r["confusions"]),
             "most confident mistakes (index: label -> predicted, probability):",
             *(f"  #{m['index']:<6} {m['label']} -> {m['predicted']}  p = {m['probability']:.4f}"
               for m in r["confident_mistakes"]),
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


def format_predict(r: dict) -> str:
    """One line per image: index, label, argmax(logits) vs argmax(softmax), the top probabilities."""
    lines = [f"{r['model']} on {r['source']} (input scale {number_text(r['input_scale'])}):",
             "  index  label  argmax(z)  argmax(p)  probabilities (top 3)"]
    for row in r["predictions"]:
        p = row["probabilities"]
        top = sorted(range(len(p)), key=lambda c: -p[c] if math.isfinite(p[c]) else 1.0)[:3]
        label = "-" if row["label"] is None else str(row["label"])
        if not row["logits_finite"]:
            lines.append(f"  {row['index']:>5}  {label:>5}  n/a (non-finite logits)")
            continue
        mark = "" if row["predicted"] == row["predicted_softmax"] else "  (argmaxes differ: a tie in p)"
        wrong = "" if row["label"] is None or row["label"] == row["predicted"] else "  WRONG"
        lines.append(f"  {row['index']:>5}  {label:>5}  {row['predicted']:>9}  {row['predicted_softmax']:>9}  "
                     + ", ".join(f"{c}: {p[c]:.4f}" for c in top) + mark + wrong)
    return "\n".join([*lines, *data_lines(r)])


# --- compare ------------------------------------------------------------------------------------


def _settings(s: dict) -> str:
    return f"lr {number_text(s['lr'])}, input x{number_text(s['input_scale'])}, {s['dtype']}, seed {s['seed']}"


def terminal_width() -> int:
    """The width to lay the report out in: the terminal's (``COLUMNS`` first), at most :data:`WIDTH`."""
    return min(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns)


#: (header, text column?, droppable?) of the per-run table, in order; columns marked droppable go,
#: from the right, when the terminal is too narrow (the legend says which).
_COLUMNS = (("loss", True, False), ("acc", False, False), ("final loss", False, False), ("NaN", False, False),
            ("inf", False, False), ("grad", False, False), ("first", False, False), ("weights", True, True),
            ("argmax!=", False, True), ("time", False, True), ("loss curve", True, True))


_DROP_ORDER = ("time", "argmax!=", "weights", "loss curve")


def run_rows(doc: dict) -> list[dict]:
    """One flat record per (cell, loss): the table's cells, for text, markdown and CSV alike."""
    rows = []
    for s in doc["scenarios"]:
        for loss, r in s["runs"].items():
            nan = r["nan"]
            rows.append({
                "label": s["label"], "lr": s["lr"], "input_scale": s["input_scale"], "dtype": s["dtype"],
                "seed": s["seed"], "loss": loss,
                "acc": accuracy_text(r["test_accuracy"], r.get("accuracy_meaningful", r["weights_finite"]),
                                     r["weights_finite"]),
                "final loss": value_text(r["final_loss"], ".4g"), "NaN": str(nan["steps_nan_loss"]),
                "inf": str(nan["steps_inf_loss"]), "grad": str(nan["steps_nonfinite_grad"]),
                "first": value_text(r["first_nonfinite_step"], "d"), "weights": "finite" if r["weights_finite"] else "NaN",
                "argmax!=": str(r["argmax"]["differ"]) if r["weights_finite"] else "-", "time": f"{r['seconds']:.2f}s",
                "loss curve": sparkline(r["loss_curve"], SPARK),
            })
    return rows


def _table(doc: dict, width: int) -> list[str]:
    """One line per run under a line naming its scenario and settings; as many columns as ``width`` holds."""
    rows = run_rows(doc)
    cols = list(_COLUMNS)

    def widths(cols):
        return [max(len(h), *(len(r[h]) for r in rows)) for h, _, _ in cols]

    dropped = []
    for name in _DROP_ORDER:
        if 2 + sum(widths(cols)) + 2 * (len(cols) - 1) <= width:
            break
        cols = [c for c in cols if c[0] != name]
        dropped.append(name)
    w = widths(cols)

    def line(cells):
        return ("  " + "  ".join(v.ljust(n) if text else v.rjust(n)
                                 for v, n, (_, text, _) in zip(cells, w, cols))).rstrip()

    out = [line([h for h, _, _ in cols])]
    for s in doc["scenarios"]:
        about = f" ({_settings(s)})" if s["name"] else (f" (seed {s['seed']})" if "seed=" not in s["label"] else "")
        out.append(_clip(s["label"] + about, width))
        out += [line([r[h] for h, _, _ in cols]) for r in rows if r["label"] == s["label"]]
    legend = _wrap(
        "acc: test accuracy; NaN / inf / grad: steps with a NaN loss / an infinite loss / a non-finite gradient; "
        "first: the first such step; weights: after the last step; argmax!=: test predictions where "
        "argmax(logits) != argmax(softmax(logits)); loss curve: the training loss over the steps, x = non-finite."
        + (f" Not shown at this width: {', '.join(dropped)} (the csv format and the JSON document have them)."
           if dropped else ""), width)
    return [*out, *legend]


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(doc: dict, fmt: str) -> str:
    """Every run of ``doc`` as a ``markdown`` or ``csv`` table (all columns but the sparkline)."""
    import csv
    import io

    rows = run_rows(doc)
    keys = [k for k in rows[0] if k != "loss curve"] if rows else []
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, keys, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({**r, "time": r["time"].rstrip("s")} for r in rows)
        return buf.getvalue().rstrip("\n")
    head = "| " + " | ".join(keys) + " |"
    rule = "|" + "|".join("---" for _ in keys) + "|"
    return "\n".join([head, rule, *("| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows)])


_AXIS = {"dtype": "dtype", "precision": "precision", "lr": "lr", "input_scale": "scale", "seed": "seed"}


def _axisvalue_text(axis: str, v) -> str:
    if axis == "input_scale":
        return f"x{number_text(v)}"
    if axis == "lr":
        return number_text(v)
    return f"s{v}" if axis == "seed" else str(v)


def _map(m: dict) -> list[str]:
    """First non-finite step per cell, one block of columns per loss ("-" never, blank: not run)."""
    g = map_grid(m)
    col_axis, row_axes, cols = g["col_axis"], g["row_axes"], g["cols"]
    cell_w = max(5, *(len(_axisvalue_text(col_axis, v)) for v in cols))
    row_w = [max(len(_AXIS[a]), *(len(_axisvalue_text(a, v)) for v in m["values"][a])) for a in row_axes]
    block_w = len(cols) * (cell_w + 1) - 1

    def line(head: list[str], blocks: list[str]) -> str:
        return ("  ".join(h.ljust(w) for h, w in zip(head, row_w)) + "   " + "   ".join(blocks)).rstrip()

    def cell(step, ran: bool) -> str:
        return ("-" if step is None else str(step)) if ran else ""

    lines = [
        line([""] * len(row_axes), [loss.center(block_w) for loss in m["losses"]]),
        line([_AXIS[a] for a in row_axes],
             [" ".join(_axisvalue_text(col_axis, v).rjust(cell_w) for v in cols) for _ in m["losses"]]),
    ]
    for i, r in enumerate(g["rows"]):
        blocks = [" ".join(cell(s, ran).rjust(cell_w) for s, ran in zip(g["steps"][loss][i], g["ran"][i]))
                  for loss in m["losses"]]
        lines.append(line([_axisvalue_text(a, v) for a, v in zip(row_axes, r)], blocks))
    return lines


def _forensics(doc: dict, width: int = WIDTH) -> list[str]:
    """The full explanation for the first failing run of each loss; one line for each other one."""
    out, shown = [], set()
    brief = []
    for f in doc["forensics"]:
        if f["loss"] not in shown:
            shown.add(f["loss"])
            text = format_explanation(f, width - 2).splitlines()  # then indented by two
            out += [f"{f['scenario']} / {f['loss']}:", *("  " + line if line else "" for line in text), ""]
            continue
        c = f["culprits"][0] if f["culprits"] else None
        what = (f"example #{c['index']} (label {c['label']}), gap max-min {value_text(c['gap_max_minus_min'], '.1f')} "
                f"> {f['underflow_limit']:.1f}, p[{c['underflowed_class']}] = 0 -> {f['batch_loss_kind']} loss"
                if c and c["logits_finite"] else _half_backward_text(f["half_backward"]) if f.get("half_backward")
                else "the logits were already non-finite")
        brief.append(textwrap.fill(
            f"{f['scenario']} / {f['loss']}, step {f['step']}: {what}; {f['rows_with_zero_prob']}/{f['batch_size']} "
            "examples with a zero probability", width, initial_indent="  ", subsequent_indent="    ",
            break_on_hyphens=False))
    if brief:
        more = len(brief) - FORENSICS_BRIEF
        out += ["other runs:", *brief[:FORENSICS_BRIEF]]
        out += [f"  ... and {more} more (the JSON document has them all)"] if more > 0 else []
    return out


def _half_backward_text(h: dict) -> str:
    """One clause: a mixed-precision step whose half backward product overflowed."""
    scale = f" at loss scale {short_number(h['loss_scale'])}" if h.get("loss_scale") not in (None, 1.0) else ""
    return f"losses finite, the {h['dtype']} product x.T @ dL/dz overflowed{scale}"


def _wrap(text: str, width: int = WIDTH) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False)


#: More cells than this make a dense sweep: the report prints the map and a summary, not every run.
DENSE_CELLS = 16


def _agreement(cells: list[dict], loss: str, where: tuple) -> str:
    """``k/n sS`` for the seeds of one (dtype, lr, input scale): broke in k of n, the earliest at step S."""
    steps = [c["first_nonfinite"][loss] for c in cells if (c["dtype"], c["lr"], c["input_scale"]) == where]
    broke = [t for t in steps if t is not None]
    return f"{len(broke)}/{len(steps)} s{min(broke)}" if broke else ("-" if steps else "")


def _agreement_map(doc: dict, width: int) -> list[str]:
    """Seed agreement per (dtype, lr, input scale) and loss: ``k/n sS`` = broke in k of n seeds, the
    earliest at step S; ``-`` = never."""
    cells = doc["stability_map"]["cells"]
    losses, values = doc["stability_map"]["losses"], doc["stability_map"]["values"]
    seeds = len(values["seed"])
    out = []
    for dtype in values["dtype"]:
        table = [[dtype, *(f"{loss} x{number_text(v)}" for loss in losses for v in values["input_scale"])]]
        for lr in values["lr"]:
            row = [f"lr {number_text(lr)}"]
            row += [_agreement(cells, loss, (dtype, lr, scale)) for loss in losses for scale in values["input_scale"]]
            table.append(row)
        w = [max(len(r[c]) for r in table) for c in range(len(table[0]))]
        lines = ["  ".join(v.ljust(n) if c == 0 else v.rjust(n) for c, (v, n) in enumerate(zip(r, w))).rstrip()
                 for r in table]
        out += [_clip(line, width) for line in lines] + [""]
    return [*_wrap(f"Stability map: runs that went non-finite, of {seeds} seed{'s' if seeds != 1 else ''} per "
                   "cell ('2/3 s5': in 2 of 3 seeds, the earliest at step 5; '-': never)", width), *out[:-1]]


def _report_head(doc: dict, width: int) -> list[str]:
    """What was compared, on what data, and whether the runs of a cell saw the same init and batches."""
    st, data = doc["settings"], doc["data"]
    same = all(s["same_init"] and s["same_batches"] for s in doc["scenarios"])
    seeds = ",".join(str(s) for s in st["seeds"])
    return [*_wrap(
        f"{' vs '.join(st['losses'])} cross-entropy on MNIST: {data['n_train']} training / {data['n_test']} test "
        f"images, {plural(st['steps'], 'SGD step')} of {st['batch_size']}, {st['init']} init, seed {seeds}. Within each "
        "scenario every loss starts from the same parameters and sees the same batches ("
        + ("checked: the digests of the initial parameters and of the examples each run consumed agree)."
           if same else "NOT the case here: the digests of the init or of the examples consumed differ)."), width),
        *data_lines(doc), ""]


def _report_map(doc: dict, width: int) -> list[str]:
    """The stability map: seed agreement with several seeds, else the first non-finite step per cell."""
    if len(doc["settings"]["seeds"]) > 1:
        return [*_agreement_map(doc, width), ""]
    g = map_grid(doc["stability_map"])
    across = ", ".join(_AXIS[a] for a in g["row_axes"])
    head = (f"Stability map: first non-finite step of {doc['settings']['steps']} ('-' = never); columns: "
            f"{_AXIS[g['col_axis']]}" + (f", rows: {across}" if across else ""))
    return [*_wrap(head, width),
            *(_clip(line, width) for line in _map(doc["stability_map"])), ""]


def _report_checks(doc: dict, width: int) -> list[str]:
    """How many expectations hold, and each that does not."""
    bad = [c for c in doc["checks"] if not c["ok"]]
    if not doc["checks"]:
        return _wrap("Expectations: none apply here (fused is checked in every setting, naive in the named "
                     "scenarios).", width)
    return [f"Expectations: {len(doc['checks']) - len(bad)} of {len(doc['checks'])} hold" + ("." if not bad else ":"),
            *(f"  FAILED {c['scenario']} / {c['loss']}: expected {c['expect']}, observed {c['observed']}" for c in bad)]


def _report_tail(doc: dict) -> list[str]:
    """What was written, and how long training and drawing took."""
    lines = []
    if doc.get("metrics_files"):
        lines.append(f"Wrote per-run curves: {os.path.dirname(doc['metrics_files'][0])}")
    if "plot" in doc:
        lines.append(f"Wrote plot: {doc['plot']}")
    n_runs = sum(len(s["runs"]) for s in doc["scenarios"])
    drawing = f", drawing {doc['plot_seconds']:.1f} s" if "plot_seconds" in doc else ""
    return [*lines, f"{plural(n_runs, 'run')}: training {doc['seconds']:.1f} s{drawing}."]


def format_report(doc: dict, *, width: int | None = None, all_runs: bool = False) -> str:
    """Tables, stability map, forensics, conclusion and checks, as the terminal shows them, laid out in
    ``width`` columns (default: the terminal's, :func:`terminal_width`). A dense sweep (more than
    :data:`DENSE_CELLS` cells) prints its map and summary without the per-run table unless ``all_runs``."""
    width = width or terminal_width()
    lines = _report_head(doc, width)
    if len(doc["scenarios"]) <= DENSE_CELLS or all_runs:
        lines += [*_table(doc, width), ""]
    else:
        n_runs = sum(len(s["runs"]) for s in doc["scenarios"])
        lines += _wrap(f"{n_runs} runs: the per-run table is left out (ask for all runs to print it, or for the csv "
                       "or markdown format to have it for a spreadsheet or a report).", width) + [""]
    lines += _report_map(doc, width)
    if doc["forensics"]:
        lines += ["Forensics: the first non-finite step of each failing run", *_forensics(doc, width), ""]
    lines += ["Conclusion:", *_wrap(doc["conclusion"], width), "", *_report_checks(doc, width), *_report_tail(doc)]
    return "\n".join(lines)


# --- the conclusion, computed from a compare document --------------------------------------------


def _cause(why: list[dict]) -> str:
    """Why the failures of one loss happened, when every one was a probability underflowing to 0."""
    if not (why and all(f["rows_with_zero_prob"] for f in why)):
        return ""
    gap = max((f["max_gap_max_minus_min"] for f in why if math.isfinite(f["max_gap_max_minus_min"])), default=None)
    limits = ", ".join(sorted({f"{f['underflow_limit']:.0f} in {f['dtype']}" for f in why}))
    return (f": each time a softmax probability underflowed to exactly 0 (logit gaps up to {value_text(gap, '.3g')}, "
            f"past the limit of {limits})")


def _where(failed: list[dict], loss: str) -> str:
    """The settings where ``loss`` failed and at which step; for a dense sweep (the map shows where) how early."""
    if len(failed) > DENSE_CELLS:
        first = [s["runs"][loss]["first_nonfinite_step"] for s in failed]
        return f"first at step {min(first)}" + (f" to {max(first)}" if max(first) != min(first) else "")
    return ", ".join(f"{s['label']} (step {s['runs'][loss]['first_nonfinite_step']})" for s in failed)


def _loss_sentence(doc: dict, loss: str) -> str:
    """Where ``loss`` went non-finite (and why, from the forensics), or that it never did."""
    scen = doc["scenarios"]
    failed = [s for s in scen if s["runs"][loss]["first_nonfinite_step"] is not None]
    if not failed:
        return f"The {loss} loss stayed finite in all {plural(len(scen), 'setting')}."
    where = _where(failed, loss)
    cause = _cause([f for f in doc["forensics"] if f["loss"] == loss])
    broken = [s for s in failed if not s["runs"][loss]["weights_finite"]]
    after = (f"; the weights ended non-finite in {len(broken)} of them (test accuracy n/a: argmax of a NaN row is "
             "0, so it only counts the zeros)" if broken else "")
    return f"The {loss} loss went non-finite in {len(failed)} of {plural(len(scen), 'setting')}: {where}{cause}{after}."


def _accuracy_sentences(doc: dict) -> list[str]:
    """How far apart the losses' accuracies were where all stayed finite; a warning if batches differed."""
    losses, scen = doc["settings"]["losses"], doc["scenarios"]
    both = [s for s in scen if all(s["runs"][loss]["first_nonfinite_step"] is None for loss in losses)]
    if both:
        worst = max(max(s["runs"][loss]["test_accuracy"] for loss in losses)
                    - min(s["runs"][loss]["test_accuracy"] for loss in losses) for s in both)
        verdict = "identical" if worst == 0 else f"within {worst:.4f} of each other"
        out = [f"Where every loss stayed finite ({plural(len(both), 'setting')}), test accuracies were {verdict}."]
    else:
        out = ["No setting kept every loss finite, so accuracies cannot be compared like for like."]
    mismatch = [s["label"] for s in scen if not (s["same_init"] and s["same_batches"])]
    if mismatch:
        out.append(f"Warning: the losses did not see identical init and batches in {', '.join(mismatch)}.")
    return out


def _argmax_sentence(doc: dict) -> list[str]:
    """Whether argmax(logits) and argmax(softmax(logits)) agreed, over the models whose test logits are all
    finite (finite weights can still overflow a float16 logit, and softmax of an inf row is NaN)."""
    finite = [r for s in doc["scenarios"] for r in s["runs"].values()
              if r["weights_finite"] and not r["argmax"].get("nonfinite_logits")]
    if not finite:
        return []
    differ = sum(r["argmax"]["differ"] for r in finite)
    ties = sum(r["argmax"]["ties_in_probs"] for r in finite)
    if differ == 0:
        return [f"For all {plural(len(finite), 'finite model')}, argmax(logits) and argmax(softmax(logits)) agreed on "
                f"every one of the {doc['data']['n_test']} test images, so dropping softmax at prediction time costs "
                "nothing."]
    return [f"Across {plural(len(finite), 'finite model')}, argmax(logits) and argmax(softmax(logits)) differed on "
            f"{plural(differ, 'test prediction')} ({ties} floating-point ties in the probabilities): softmax can only "
            "lose information at prediction time."]


def conclusion(doc: dict) -> str:
    """One paragraph from the results: which losses failed where (and why), whether accuracy
    differed where they did not, whether argmax(logits) and argmax(softmax) agreed."""
    losses = doc["settings"]["losses"]
    parts = [_loss_sentence(doc, loss) for loss in losses]
    if len(losses) > 1:
        parts += _accuracy_sentences(doc)
    return " ".join(parts + _argmax_sentence(doc))


# --- forensics: the explanation of a first non-finite step -------------------------------------------


def short_number(x) -> str:
    """One decimal for ordinary numbers, 4 significant digits beyond a million (float32's 3e38)."""
    if isinstance(x, float) and not math.isfinite(x):
        return value_text(x)
    if not isinstance(x, (int, float)):
        return str(x)
    return f"{x:.1f}" if abs(x) < 1e6 else f"{x:.4g}"


def _para(head: str, text: str, indent: int, width: int = WIDTH) -> str:
    """``head`` + ``text`` wrapped to ``width``, continuation lines under the text."""
    first = " " * indent + head
    return textwrap.fill(text, width=width, initial_indent=first, subsequent_indent=" " * len(first),
                         break_on_hyphens=False)


def _explanation_head(e: dict, width: int = WIDTH) -> list[str]:
    """Which limits the dtype sets, and what the whole batch did."""
    from mnist_cli.losses import CLIP_MIN, breaks_like_naive, gradient_overflow_limit
    from mnist_cli.precision import DTYPES, finfo

    dtype = DTYPES[e["dtype"]]
    lines = [_para("", f"Step {e['step']}, {e['loss']} loss, {e['dtype']}: exp() underflows to 0 past a logit gap of "
                   f"{e['underflow_limit']:.1f} (smallest subnormal {e['smallest_subnormal']:.3g})", 0, width)]
    if breaks_like_naive(e["loss"], e["dtype"]):
        n = e["batch_size"]
        lines.append(_para("", f"the gradient (-y_ / n) / p[target] can break earlier: 1/p overflows (largest "
                           f"{e['dtype']} {float(finfo(dtype).max):.3g}) from a gap max - target of "
                           f"{gradient_overflow_limit(dtype, n):.1f} (9 logits tied at the max) to "
                           f"{gradient_overflow_limit(dtype, n, 1):.1f} (one) at batch {n}", 2, width))
        if e["loss"] == "clipped":
            lines.append(_para("", f"clip floor: {CLIP_MIN:g} rounds to 0 in {e['dtype']} (unrepresentable), so "
                               "clipped behaves exactly like naive", 2, width))
    batch_loss = e["batch_loss_kind"] if e["batch_loss_kind"] != "finite" else short_number(e["batch_loss"])
    lines.append(_para("batch: ", f"loss {batch_loss}, gradient {'finite' if e['batch_grad_finite'] else 'non-finite'}; "
                       f"{e['rows_with_zero_prob']} of {e['batch_size']} examples have a probability of exactly 0 "
                       f"({e['rows_nan_loss']} give a NaN loss, {e['rows_inf_loss']} an infinite one, "
                       f"{e['rows_nonfinite_grad']} a non-finite gradient row)", 2, width))
    return lines


def _probability_lines(e: dict, c: dict, width: int = WIDTH) -> list[str]:
    """What became of the culprit's probability that broke the step."""
    j = c["underflowed_class"]
    if not c["logits_finite"]:
        return []
    if c["underflowed_log_p"] < -1e6:  # too far for a power of ten
        return [f"    p[{j}] = exp({short_number(c['underflowed_log_p'])}) -> exactly 0 in {e['dtype']}"]
    zero = j in c["zero_prob_classes"]
    lines = [f"    p[{j}] = exp({short_number(c['underflowed_log_p'])}) ~ 1e{c['underflowed_log10_p']:.0f} -> "
             + ("rounds to exactly 0" if zero else f"rounds to {c['underflowed_p']:.3g}, not 0") + f" in {e['dtype']}"]
    if not zero and not c["row_grad_finite"]:
        lines.append(_para("", f"the gap {short_number(c['gap_max_minus_target'])} is below the underflow limit "
                           f"{e['underflow_limit']:.1f}: the loss is finite, the gradient breaks because "
                           f"1/p overflows", 4, width))
    return lines


SHADES = " ░▒▓█"  # ink 0-255 in five steps


def digit_lines(c: dict) -> list[str]:
    """The culprit's digit (14x14 block characters) beside its ten logits, label and prediction marked."""
    logits = c.get("logits") or []
    rows = []
    for r, row in enumerate(c["digit"]):
        art = "".join(SHADES[min(len(SHADES) - 1, v * len(SHADES) // 256)] * 2 for v in row)
        side = ""
        if r < len(logits):
            mark = ("  <- label" if r == c["label"] else "") + ("  <- max" if r == c["predicted"] else "")
            side = f"   z[{r}] = {short_number(logits[r]):>10}{mark}"
        rows.append(f"    |{art}|{side}".rstrip())
    return rows


def format_explanation(e: dict, width: int = WIDTH) -> str:
    """The readable form of :func:`mnist_cli.forensics.explain`'s dict (several lines, no trailing newline),
    wrapped to ``width``."""
    lines = _explanation_head(e, width)
    if not e["culprits"]:
        if e.get("half_backward"):
            return "\n".join([*lines, _para("", e["half_backward"]["text"], 2, width)])
        return "\n".join([*lines, "  no example in this batch explains it"])
    c = e["culprits"][0]
    lines += [
        f"  culprit: training example #{c['index']} (batch row {c['batch_row']}), label {c['label']}, "
        f"predicted {c['predicted']}",
        f"    logits: max {short_number(c['logit_max'])}, target {short_number(c['logit_target'])}, "
        f"min {short_number(c['logit_min'])}",
        f"    gap max - target {short_number(c['gap_max_minus_target'])}, max - min "
        f"{short_number(c['gap_max_minus_min'])} (limit {e['underflow_limit']:.1f})",
        *_probability_lines(e, c, width),
        *(_para(f"{name + ':':<10}", c["chain"][name], 2, width) for name in ("loss", "gradient")),
    ]
    if c.get("digit"):
        lines += digit_lines(c)
    rest = e["culprits"][1:]
    if rest:
        more = ", ".join(f"#{r['index']} (label {r['label']}, gap {short_number(r['gap_max_minus_min'])})" for r in rest)
        extra = e["n_culprits"] - len(e["culprits"])
        lines.append(_para("also: ", more + (f" and {extra} more" if extra > 0 else ""), 2, width))
    if e["loss"] == "naive":
        lines.append("  fix: the fused loss (softmax_cross_entropy_with_logits) never forms log(p)")
    return "\n".join(lines)
