"""The report of ``predict``: one line per image.

    print(format_predict(doc))   # doc: predict --json's document
"""

from __future__ import annotations

import math

from mnist_cli.report.text import class_name, data_lines, fitted, foreign_lines, number_text


@fitted
def format_predict(r: dict) -> str:
    """One line per image: index, label, argmax(logits) vs argmax(softmax), the top probabilities."""
    form = r.get("computed_as") or {"dtype": "float32", "precision": "pure"}
    lines = [f"{r['model']} on {r['source']} (input scale {number_text(r['input_scale'])}, computed in "
             f"{form['dtype']}" + (", mixed precision" if form["precision"] == "mixed" else "")
             + (f", as {form['framework']}" if form.get("framework", "numpy") != "numpy" else "") + "):",
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
        total = math.fsum(p)  # rounded probabilities (bfloat16 keeps ~3 digits) need not sum to 1
        off = f"  (sum {total:.4f}: rounded in {form['dtype']})" if round(total, 4) != 1 else ""
        lines.append(f"  {row['index']:>5}  {label:>5}  {row['predicted']:>9}  {row['predicted_softmax']:>9}  "
                     + ", ".join(f"{class_name(r, c)}: {p[c]:.4f}" for c in top) + mark + wrong + off)
    if r.get("plot"):
        lines.append(f"Wrote plot: {r['plot']} (the 28x28 inputs the model saw)")
    if r.get("out"):
        lines.append(f"predictions of {len(r['predictions'])} images written to {r['out']}")
    return "\n".join([*lines, *foreign_lines(r), *data_lines(r)])
