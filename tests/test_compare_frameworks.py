"""compare's framework axis and the scenarios where the frameworks differ (issue 19): the grid, no training."""

import pytest

from mnist_cli.compare import CompareConfig, compare_config
from mnist_cli.errors import SettingsError
from mnist_cli.scenarios import SCENARIOS, expectations


def test_the_framework_is_a_sweep_axis():
    config = compare_config(lrs=[3.0], frameworks=["torch", "tensorflow"])
    cells = config.cells()
    assert [c.framework for c in cells] == ["torch", "tensorflow"]
    assert [c.label for c in cells] == ["lr=3 x1 float32 torch", "lr=3 x1 float32 tensorflow"]
    assert {config.train_config(c, "naive").framework for c in cells} == {"torch", "tensorflow"}


def test_a_framework_listed_twice_or_unknown_is_a_settings_error():
    with pytest.raises(SettingsError, match="listed twice"):
        compare_config(frameworks=["torch", "torch"])
    with pytest.raises(SettingsError, match="framework must be one of numpy, torch, tensorflow"):
        compare_config(frameworks=["jax"])


def test_the_default_story_has_a_scenario_where_the_frameworks_differ():
    by_name = {s.name: s for s in SCENARIOS}
    torch, tf = by_name["lr-2-torch"], by_name["lr-2-tensorflow"]
    assert (torch.lr, torch.dtype, torch.input_scale) == (tf.lr, tf.dtype, tf.input_scale)
    assert (torch.framework, tf.framework) == ("torch", "tensorflow")
    cells = {c.label: c for c in CompareConfig().cells()}
    assert expectations(cells["lr-2-tensorflow"], ("naive", "fused"))["naive"]["nonfinite"] is True
    assert "naive" not in expectations(cells["lr-2-torch"], ("naive", "fused"))  # seed-dependent in torch


def test_the_default_scenarios_still_compute_as_numpy():
    cells = CompareConfig().cells()
    assert all(c.framework == "numpy" for c in cells if not c.label.startswith("lr-2-"))
