"""The loss scale: one typed value (mnist_cli.settings.LossScale), parsed once, from the CLI to the scaler."""

import numpy as np
import pytest

from mnist_cli.engine.half import INIT_SCALE, LossScaler
from mnist_cli.errors import SettingsError
from mnist_cli.settings import LossScale, TrainConfig


@pytest.mark.parametrize("text, kind, value, canonical", [
    ("none", "none", None, "none"), (" Dynamic ", "dynamic", None, "dynamic"), ("1024", "fixed", 1024.0, "1024"),
    ("1048576", "fixed", 1048576.0, "1048576"), ("0.5", "fixed", 0.5, "0.5"), ("3e38", "fixed", 3e38, "3e+38"),
])
def test_parsed_once_written_exactly(text, kind, value, canonical):
    scale = LossScale.parse(text)
    assert (scale.kind, scale.value, scale.text) == (kind, value, canonical)
    assert LossScale.parse(scale.text) == scale  # the canonical text reads back as the same scale


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "1e40", "dynamo", ""])
def test_what_a_float32_scale_cannot_be_is_refused(text):
    with pytest.raises(ValueError):
        LossScale.parse(text)
    with pytest.raises(SettingsError, match="loss scale"):
        TrainConfig(dtype="float16", precision="mixed", loss_scale=text).validate()


def test_the_scaler_reads_the_typed_scale():
    assert LossScaler(LossScale.parse("dynamic")).scale == np.float32(INIT_SCALE)
    fixed = LossScaler(TrainConfig(dtype="float16", precision="mixed", loss_scale="1048576").loss_scaling)
    assert fixed.scale == np.float32(1048576) and fixed.active and not fixed.dynamic


def test_the_cli_keeps_the_scale_it_was_given(cli):
    import json

    r = cli("train", "--dtype", "float16", "--precision", "mixed", "--loss-scale", "1048576", "--steps", "2",
            "--train-limit", "200", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["config"]["loss_scale"] == "1048576"  # was 1.04858e+06, read back as 1048580
    r = cli("train", "--dtype", "float16", "--precision", "mixed", "--loss-scale", "1e40", "--steps", "2")
    assert r.exit_code == 2 and "--loss-scale" in r.output
