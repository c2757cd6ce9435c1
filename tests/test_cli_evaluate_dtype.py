"""``evaluate --dtype`` reports the model's training settings as saved and its own compute form apart
(issue 21, item 2)."""

import json

import pytest


@pytest.mark.parametrize("flags, evaluated", [((), ("float16", "mixed")), (("--dtype", "bfloat16"), ("bfloat16", "pure")),
                                              (("--dtype", "float32"), ("float32", "pure"))])
def test_evaluate_dtype_keeps_the_training_config_and_says_how_it_computed(cli, tmp_path, flags, evaluated):
    model = tmp_path / "m16.npz"
    trained = cli("train", "--dtype", "float16", "--precision", "mixed", "--loss-scale", "dynamic", "--steps", "5",
                  "--train-limit", "500", "--save", model)
    assert trained.exit_code == 0, trained.output
    result = cli("evaluate", model, *flags, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    config = doc["training"]["config"]
    assert (config["dtype"], config["precision"], config["loss_scale"]) == ("float16", "mixed", "dynamic")
    assert (doc["evaluated_as"]["dtype"], doc["evaluated_as"]["precision"]) == evaluated
