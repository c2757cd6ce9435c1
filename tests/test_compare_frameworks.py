"""compare's framework axis and the scenarios where the frameworks differ (issue 19): the grid; and how a run is scored."""

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


def test_each_run_is_scored_in_its_own_profiles_arithmetic(mnist):
    """compare (stacked and alone) and train score a run as its profile computes, as ``evaluate --framework`` does
    the saved model: TensorFlow's float16 ``Dense`` rounds ``x @ W`` before the bias, its float32 logits and
    probabilities are flushed. (The only module here that trains: four 300-step runs.)"""
    from dataclasses import replace

    from mnist_cli.compare import run_compare
    from mnist_cli.scoring import evaluate_model, score
    from mnist_cli.train import run_session

    X, y, Xt, yt = mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels
    config = compare_config(lrs=[0.5], input_scales=[1.0, 255.0], dtypes=["float32", "float16"],
                            frameworks=["tensorflow"], losses=["fused"], steps=300)
    changed = []
    for engine in ("stack", "alone"):
        for run in run_compare(X, y, Xt, yt, replace(config, engine=engine)).runs:
            model, scale = run.result.model, run.cell.input_scale
            assert run.evaluation == evaluate_model(model, Xt, yt, scale, framework="tensorflow")
            changed.append(run.evaluation != evaluate_model(model, Xt, yt, scale))
    assert any(changed)  # the profile's arithmetic changes the counts of some run here (not a no-op)
    tc = config.train_config(config.cells()[2], "fused")  # float16, pixels in [0, 1]
    summary = run_session(mnist, tc).summary
    model = run_compare(X, y, Xt, yt, replace(config, engine="alone")).runs[2].result.model
    assert summary["test_loss"] == score(model, Xt, yt, 1.0, framework="tensorflow").loss
    assert summary["test_loss"] != score(model, Xt, yt, 1.0).loss
