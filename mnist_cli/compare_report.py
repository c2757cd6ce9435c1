"""The terminal report of ``compare``, rendered from :func:`mnist_cli.compare.to_document`'s dict.

    >>> print(format_report(to_document(result)))                     # doctest: +SKIP
"""

from __future__ import annotations

import math
import textwrap

from mnist_cli.compare import map_grid, number_text
from mnist_cli.forensics import format_explanation
from mnist_cli.report import data_lines
from mnist_cli.sparkline import sparkline

WIDTH = 100  # wrap prose for an ordinary terminal
SPARK = 16  # characters of the loss sparkline


def _value(x, fmt: str) -> str:
    """A number, or NaN/inf/-inf spelled out."""
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return "NaN" if x != x else ("inf" if x > 0 else "-inf")
    return format(x, fmt)


def _settings(s: dict) -> str:
    return f"lr {s['lr']:g} x{s['input_scale']:g} " + s["dtype"].replace("float", "f")


def _table(doc: dict) -> list[str]:
    """One row per (scenario, loss); the scenario's settings under its name."""
    head = ["scenario", "loss", "acc", "final loss", "NaN", "inf", "grad", "first", "weights", "argmax!=", "time",
            "loss curve"]
    rows = []
    for s in doc["scenarios"]:
        names = [s["label"]] + ([_settings(s)] if s["name"] else [])  # a generated label holds the settings
        for i, (loss, r) in enumerate(s["runs"].items()):
            nan = r["nan"]
            rows.append([
                names[i] if i < len(names) else "", loss, _value(r["test_accuracy"], ".4f"),
                _value(r["final_loss"], ".4g"), str(nan["steps_nan_loss"]), str(nan["steps_inf_loss"]),
                str(nan["steps_nonfinite_grad"]), _value(r["first_nonfinite_step"], "d"),
                "finite" if r["weights_finite"] else "NaN",
                str(r["argmax"]["differ"]) if r["weights_finite"] else "-",
                f"{r['seconds']:.2f}s", sparkline(r["loss_curve"], SPARK),
            ])
        if len(s["runs"]) < len(names):  # one loss and a named scenario: still show the settings
            rows.append([names[1]] + [""] * (len(head) - 1))
    widths = [max(len(str(r[c])) for r in [head, *rows]) for c in range(len(head))]
    left = {0, 1, 8, 11}  # text columns; numbers are right-aligned

    def line(cells):
        return "  ".join(str(v).ljust(w) if c in left else str(v).rjust(w)
                         for c, (v, w) in enumerate(zip(cells, widths))).rstrip()

    legend = _wrap(
        "acc: test accuracy; NaN / inf / grad: steps with a NaN loss / an infinite loss / a non-finite gradient; "
        "first: the first such step; weights: after the last step; argmax!=: test predictions where "
        "argmax(logits) != argmax(softmax(logits)); loss curve: the training loss over the steps, x = non-finite."
    )
    return [line(head), *[line(r) for r in rows], *legend]


_AXIS = {"dtype": "dtype", "lr": "lr", "input_scale": "scale", "seed": "seed"}


def _axis_value(axis: str, v) -> str:
    if axis == "input_scale":
        return f"x{number_text(v)}"
    if axis == "lr":
        return number_text(v)
    return f"s{v}" if axis == "seed" else str(v)


def _map(m: dict) -> list[str]:
    """First non-finite step per cell, one block of columns per loss ("-" never, blank: not run)."""
    g = map_grid(m)
    col_axis, row_axes, cols = g["col_axis"], g["row_axes"], g["cols"]
    cell_w = max(5, *(len(_axis_value(col_axis, v)) for v in cols))
    row_w = [max(len(_AXIS[a]), *(len(_axis_value(a, v)) for v in m["values"][a])) for a in row_axes]
    block_w = len(cols) * (cell_w + 1) - 1

    def line(head: list[str], blocks: list[str]) -> str:
        return ("  ".join(h.ljust(w) for h, w in zip(head, row_w)) + "   " + "   ".join(blocks)).rstrip()

    def cell(step, ran: bool) -> str:
        return ("-" if step is None else str(step)) if ran else ""

    lines = [
        line([""] * len(row_axes), [loss.center(block_w) for loss in m["losses"]]),
        line([_AXIS[a] for a in row_axes],
             [" ".join(_axis_value(col_axis, v).rjust(cell_w) for v in cols) for _ in m["losses"]]),
    ]
    for i, r in enumerate(g["rows"]):
        blocks = [" ".join(cell(s, ran).rjust(cell_w) for s, ran in zip(g["steps"][loss][i], g["ran"][i]))
                  for loss in m["losses"]]
        lines.append(line([_axis_value(a, v) for a, v in zip(row_axes, r)], blocks))
    return lines


def _forensics(doc: dict) -> list[str]:
    """The full explanation for the first failing run of each loss; one line for each other one."""
    out, shown = [], set()
    brief = []
    for f in doc["forensics"]:
        if f["loss"] not in shown:
            shown.add(f["loss"])
            out += [f"{f['scenario']} / {f['loss']}:", *("  " + ln for ln in format_explanation(f).splitlines()), ""]
            continue
        c = f["culprits"][0] if f["culprits"] else None
        what = (f"example #{c['index']} (label {c['label']}), gap max-min {_value(c['gap_max_minus_min'], '.1f')} "
                f"> {f['underflow_limit']:.1f}, p[{c['underflowed_class']}] = 0 -> {f['batch_loss_kind']} loss"
                if c and c["logits_finite"] else "the logits were already non-finite")
        brief.append(textwrap.fill(
            f"{f['scenario']} / {f['loss']}, step {f['step']}: {what}; {f['rows_with_zero_prob']}/{f['batch_size']} "
            "examples with a zero probability", WIDTH, initial_indent="  ", subsequent_indent="    ",
            break_on_hyphens=False))
    if brief:
        out += ["other runs:", *brief]
    return out


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, break_on_hyphens=False)


def format_report(doc: dict) -> str:
    """Tables, stability map, forensics, conclusion and checks, as the terminal shows them."""
    st, data = doc["settings"], doc["data"]
    same = all(s["same_init"] and s["same_batches"] for s in doc["scenarios"])
    seeds = ",".join(str(s) for s in st["seeds"])
    lines = _wrap(
        f"{' vs '.join(st['losses'])} cross-entropy on MNIST: {data['n_train']} training / {data['n_test']} test "
        f"images, {st['steps']} SGD steps of {st['batch_size']}, {st['init']} init, seed {seeds}. Within each "
        "scenario every loss starts from the same parameters and sees the same batches ("
        + ("checked: init and batch digests agree)." if same else "NOT the case here: digests differ).")
    )
    lines += [*data_lines(doc), "", *_table(doc), ""]
    g = map_grid(doc["stability_map"])
    across = ", ".join(_AXIS[a] for a in g["row_axes"])
    lines += [f"Stability map: first non-finite step of {st['steps']} ('-' = never); columns: {_AXIS[g['col_axis']]}"
              + (f", rows: {across}" if across else ""), *_map(doc["stability_map"]), ""]
    if doc["forensics"]:
        lines += ["Forensics: the first non-finite step of each failing run", *_forensics(doc), ""]
    lines += ["Conclusion:", *_wrap(doc["conclusion"]), ""]
    bad = [c for c in doc["checks"] if not c["ok"]]
    if not doc["checks"]:
        lines.append("Expectations: none apply here (fused is checked in every setting, naive in the named scenarios).")
    else:
        lines.append(f"Expectations: {len(doc['checks']) - len(bad)} of {len(doc['checks'])} hold"
                     + ("." if not bad else ":"))
    lines += [f"  FAILED {c['scenario']} / {c['loss']}: expected {c['expect']}, observed {c['observed']}" for c in bad]
    return "\n".join(lines)
