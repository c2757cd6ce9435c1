"""The report of ``predict``: one line per image.

    print(format_predict(doc))   # doc: predict --json's document
"""

from __future__ import annotations

import math

from mnist_cli.report.text import class_name, data_lines, foreign_lines, number_text


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
                     + ", ".join(f"{class_name(r, c)}: {p[c]:.4f}" for c in top) + mark + wrong)
    if r.get("plot"):
        lines.append(f"Wrote plot: {r['plot']} (the 28x28 inputs the model saw)")
    if r.get("out"):
        lines.append(f"predictions of {len(r['predictions'])} images written to {r['out']}")
    return "\n".join([*lines, *foreign_lines(r), *data_lines(r)])
