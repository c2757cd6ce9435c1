"""compare's CSV and markdown tables tell pure from mixed runs and keep numeric columns numeric (issue 21, 6)."""

import csv
import io
import math


def test_csv_has_precision_and_loss_scale_and_no_words_in_numeric_columns(cli):
    result = cli("compare", "--scenarios", "tutorial,raw-pixels,f16,f16-mixed", "--steps", "5", "--train-limit", "500",
                 "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    forms = {(r["label"], r["precision"], r["loss_scale"]) for r in rows}
    assert ("f16", "pure", "none") in forms and ("f16-mixed", "mixed", "dynamic") in forms
    for r in rows:
        for key in ("lr", "input_scale", "acc", "final loss", "first", "argmax!=", "NaN", "grad"):
            assert r[key] == "" or not math.isnan(float(r[key])) or r[key] == "NaN", (key, r[key])
        assert r["input_scale"] in ("1", "255") and r["lr"] == "0.5"
    broken = [r for r in rows if r["label"] == "raw-pixels" and r["loss"] == "naive"][0]
    assert broken["acc"] == "" and broken["argmax!="] == "" and broken["first"] != ""
    markdown = cli("compare", "--scenarios", "f16,f16-mixed", "--steps", "5", "--train-limit", "500",
                   "--format", "markdown").stdout
    assert "| precision | loss_scale |" in markdown.splitlines()[0]  # (last: the columns before keep their order)
