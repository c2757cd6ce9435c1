"""``predict`` says the form it computed in, has evaluate's --dtype/--precision, and does not let rounded
probabilities pass for ones that sum to 1 (issue 21, item 4)."""

import json
import math


def test_predict_names_its_compute_form_and_takes_dtype_and_precision(cli, tmp_path):
    model = tmp_path / "bf16.npz"
    assert cli("train", "--dtype", "bfloat16", "--steps", "50", "--train-limit", "500", "--save", model).exit_code == 0
    text = cli("predict", model, "--index", "0,1,2,3")
    assert text.exit_code == 0, text.output
    assert "computed in bfloat16" in text.output.splitlines()[0]
    doc = json.loads(cli("predict", model, "--index", "0,1,2,3", "--json").output)
    assert doc["computed_as"] == {"dtype": "bfloat16", "precision": "pure", "framework": "numpy"}
    sums = [math.fsum(row["probabilities"]) for row in doc["predictions"]]
    rows = text.output.splitlines()[2:6]
    for total, row in zip(sums, rows):  # a row whose rounded probabilities miss 1 says so
        assert ("rounded in bfloat16" in row) == (round(total, 4) != 1), (total, row)
    for flags, form in ((("--dtype", "float32"), ("float32", "pure")), (("--precision", "mixed"), ("bfloat16", "mixed"))):
        result = cli("predict", model, "--index", "0", *flags, "--json")
        assert result.exit_code == 0, result.output
        out = json.loads(result.output)
        assert (out["computed_as"]["dtype"], out["computed_as"]["precision"]) == form
        assert math.isclose(math.fsum(out["predictions"][0]["probabilities"]), 1, abs_tol=1e-2)
