"""The report of ``compare``: the per-run table, the stability map, the forensics, the conclusion.

    print(format_report(doc))            # doc: the compare document (compare --json)
    print(format_table(doc, "csv"))      # every run, for a spreadsheet

Pure functions of the document :func:`mnist_cli.compare.to_document` builds; :func:`conclusion` is the
paragraph the document itself carries.
"""

from __future__ import annotations

import itertools
import math
import os
import textwrap

from mnist_cli.report.explain import format_explanation, half_backward_clause
from mnist_cli.report.text import (
    WIDTH,
    accuracy_text,
    clip,
    data_lines,
    fitted,
    number_text,
    plural,
    sparkline,
    terminal_width,
    value_text,
    wrap,
)

SPARK = 16  # characters of the loss sparkline
FORENSICS_BRIEF = 6  # failing runs named one line each after the first explained in full
#: More cells than this make a dense sweep: the report prints the map and a summary, not every run.
DENSE_CELLS = 16


# --- the per-run table ----------------------------------------------------------------------------


def failed_checks_line(doc: dict, option: str, code: int) -> str:
    """The stderr line of ``compare --smoke``/``--check`` exiting ``code``: how many expectations failed,
    and the first of them."""
    failed = [c for c in doc["checks"] if not c["ok"]]
    first = failed[0]
    return (f"{option}: {len(failed)} of {plural(len(doc['checks']), 'expectation')} failed, first {first['scenario']} "
            f"/ {first['loss']}: expected {first['expect']}, observed {first['observed']}: exit {code}")


def run_line(done: int, total: int, label: str) -> str:
    """``compare: run 3/26 done (f16 / naive)``: progress where no bar can be drawn (a CI log)."""
    return f"compare: run {done}/{total} done ({label})"


def _settings(s: dict) -> str:
    return f"lr {number_text(s['lr'])}, input x{number_text(s['input_scale'])}, {s['dtype']}, seed {s['seed']}"


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
                "label": s["label"], "lr": number_text(s["lr"]), "input_scale": number_text(s["input_scale"]),
                "dtype": s["dtype"], "seed": s["seed"], "loss": loss,
                "acc": accuracy_text(r["test_accuracy"], r.get("accuracy_meaningful", r["weights_finite"]),
                                     r["weights_finite"]),
                "final loss": value_text(r["final_loss"], ".4g"), "NaN": str(nan["steps_nan_loss"]),
                "inf": str(nan["steps_inf_loss"]), "grad": str(nan["steps_nonfinite_grad"]),
                "first": value_text(r["first_nonfinite_step"], "d"), "weights": "finite" if r["weights_finite"] else "NaN",
                "argmax!=": str(r["argmax"]["differ"]) if r["weights_finite"] else "-", "time": f"{r['seconds']:.2f}s",
                "loss curve": sparkline(r["loss_curve"], SPARK),
                # last, so that the CSV columns before them keep the order scripts already read them in
                "precision": s.get("precision", "pure"), "loss_scale": s.get("loss_scale", "none"),
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
        out.append(clip(s["label"] + about, width))
        out += [line([r[h] for h, _, _ in cols]) for r in rows if r["label"] == s["label"]]
    legend = wrap(
        "acc: test accuracy; NaN / inf / grad: steps with a NaN loss / an infinite loss / a non-finite gradient; "
        "first: the first such step; weights: after the last step; argmax!=: test predictions where "
        "argmax(logits) != argmax(softmax(logits)); loss curve: the training loss over the steps, x = non-finite."
        + (f" Not shown at this width: {', '.join(dropped)} (the csv format and the JSON document have them)."
           if dropped else ""), width)
    return [*out, *legend]


def _missing_empty(row: dict) -> dict:
    """A CSV row's numeric cells with no number (an accuracy of non-finite logits, no first non-finite step,
    no argmax count) as empty cells, which every CSV reader takes as missing (not ``n/a`` or ``-``)."""
    return {"acc": "" if row["acc"].startswith("n/a") else row["acc"],
            **{k: "" for k in ("first", "argmax!=") if row[k] == "-"}}


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
        writer.writerows({**r, **_missing_empty(r), "time": r["time"].rstrip("s")} for r in rows)
        return buf.getvalue().rstrip("\n")
    head = "| " + " | ".join(keys) + " |"
    rule = "|" + "|".join("---" for _ in keys) + "|"
    return "\n".join([head, rule, *("| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows)])


# --- the stability map ----------------------------------------------------------------------------


_AXIS = {"dtype": "dtype", "precision": "precision", "lr": "lr", "input_scale": "scale", "seed": "seed"}


def _axisvalue_text(axis: str, v) -> str:
    if axis == "input_scale":
        return f"x{number_text(v)}"
    if axis == "lr":
        return number_text(v)
    return f"s{v}" if axis == "seed" else str(v)


def _grid_cells(m: dict, row_axes: list[str], col_axis: str) -> tuple[dict, list[tuple]]:
    """``{(row, col): first_nonfinite}`` of the map's cells, and the rows in the axes' order that hold at
    least one cell (no float32 "mixed" row, say, where the grid has no such cell)."""
    found = {(tuple(c[a] for a in row_axes), c[col_axis]): c["first_nonfinite"] for c in m["cells"]}
    seen = {r for r, _ in found}
    return found, [r for r in itertools.product(*(m["values"][a] for a in row_axes)) if r in seen]


def map_grid(m: dict) -> dict:
    """Lay a :func:`mnist_cli.compare_document.stability_map` out as a 2-D table: one varying axis across (seed
    first, then input scale, lr, dtype), the others down. ``steps[loss][row][col]`` is the first non-finite step
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


def forms(m: dict) -> list[tuple[str, str]]:
    """The (dtype, precision) pairs of the map's cells, in order: one table (one row of heat maps) each."""
    return list(dict.fromkeys((c["dtype"], c.get("precision", "pure")) for c in m["cells"]))


def form_text(form: tuple[str, str]) -> str:
    """``float16`` (pure precision) or ``float16 mixed``."""
    return form[0] + (" mixed" if form[1] == "mixed" else "")


def seed_steps(m: dict) -> dict[tuple, dict[str, list]]:
    """``((dtype, precision), lr, input scale) -> loss ->`` the first non-finite step (None = never) of each
    seed run there: what the seed agreement of the text map and of the heat maps counts."""
    out: dict[tuple, dict[str, list]] = {}
    for c in m["cells"]:
        where = out.setdefault(((c["dtype"], c.get("precision", "pure")), c["lr"], c["input_scale"]), {})
        for loss, step in c["first_nonfinite"].items():
            where.setdefault(loss, []).append(step)
    return out


def _agreement(steps: list) -> str:
    """``k/n sS`` for the seeds of one cell: broke in k of n, the earliest at step S; ``-`` never; blank: not run."""
    broke = [t for t in steps if t is not None]
    return f"{len(broke)}/{len(steps)} s{min(broke)}" if broke else ("-" if steps else "")


def _agreement_map(doc: dict, width: int) -> list[str]:
    """Seed agreement per (dtype, precision), lr, input scale and loss: ``k/n sS`` = broke in k of n
    seeds, the earliest at step S; ``-`` = never. One table per dtype and precision."""
    m = doc["stability_map"]
    losses, values = m["losses"], m["values"]
    seeds = len(values["seed"])
    steps = seed_steps(m)
    out = []
    for form in forms(m):
        table = [[form_text(form), *(f"{loss} x{number_text(v)}" for loss in losses for v in values["input_scale"])]]
        for lr in values["lr"]:
            row = [f"lr {number_text(lr)}"]
            row += [_agreement(steps.get((form, lr, scale), {}).get(loss, []))
                    for loss in losses for scale in values["input_scale"]]
            table.append(row)
        w = [max(len(r[c]) for r in table) for c in range(len(table[0]))]
        lines = ["  ".join(v.ljust(n) if c == 0 else v.rjust(n) for c, (v, n) in enumerate(zip(r, w))).rstrip()
                 for r in table]
        out += [clip(line, width) for line in lines] + [""]
    return [*wrap(f"Stability map: runs that went non-finite, of {seeds} seed{'s' if seeds != 1 else ''} per "
                  "cell ('2/3 s5': in 2 of 3 seeds, the earliest at step 5; '-': never)", width), *out[:-1]]


# --- the report, section by section ---------------------------------------------------------------


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
                if c and c["logits_finite"] else half_backward_clause(f["half_backward"]) if f.get("half_backward")
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


def _report_head(doc: dict, width: int) -> list[str]:
    """What was compared, on what data, and whether the runs of a cell saw the same init and batches."""
    st, data = doc["settings"], doc["data"]
    same = all(s["same_init"] and s["same_batches"] for s in doc["scenarios"])
    seeds = ",".join(str(s) for s in st["seeds"])
    return [*wrap(
        f"{' vs '.join(st['losses'])} cross-entropy on {data.get('title', 'MNIST')}: {data['n_train']} training / "
        f"{data['n_test']} test images, {plural(st['steps'], 'SGD step')} of {st['batch_size']}, {st['init']} init, "
        f"seed {seeds}. Within each "
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
    return [*wrap(head, width),
            *(clip(line, width) for line in _map(doc["stability_map"])), ""]


def _measured_on(doc: dict) -> str:
    """Whose expectations were checked: "(measured on Fashion-MNIST)" (a document from before datasets: MNIST)."""
    from mnist_cli.data.datasets import dataset_spec

    return f"(measured on {dataset_spec(doc['settings'].get('expectations_of', 'mnist')).label})"


def _report_checks(doc: dict, width: int) -> list[str]:
    """How many expectations hold, and each that does not."""
    bad = [c for c in doc["checks"] if not c["ok"]]
    if not doc["checks"]:
        return wrap("Expectations: none apply here (fused is checked in every setting, naive in the named "
                    "scenarios).", width)
    return [f"Expectations {_measured_on(doc)}: {len(doc['checks']) - len(bad)} of {len(doc['checks'])} hold"
            + ("." if not bad else ":"),
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


@fitted
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
        lines += wrap(f"{n_runs} runs: the per-run table is left out (ask for all runs to print it, or for the csv "
                      "or markdown format to have it for a spreadsheet or a report).", width) + [""]
    lines += _report_map(doc, width)
    if doc["forensics"]:
        lines += ["Forensics: the first non-finite step of each failing run", *_forensics(doc, width), ""]
    lines += ["Conclusion:", *wrap(doc["conclusion"], width), "", *_report_checks(doc, width), *_report_tail(doc)]
    return "\n".join(lines)


# --- the conclusion, computed from a compare document ---------------------------------------------


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
