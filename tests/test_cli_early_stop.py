"""`train --early-stop PATIENCE` (Keras's EarlyStopping(monitor="val_loss", restore_best_weights=True)) and
`--checkpoint-every N` (ModelCheckpoint every N epochs, MODEL-epoch003.npz): the kept parameters are exactly those of
the step the report names, a non-finite loss is never the best, and every checkpoint is the model of its epoch."""

import json
import math

import numpy as np
import pytest

from mnist_cli.engine.schedule import _EarlyStop
from mnist_cli.model import Model

SMALL = ("--train-limit", "1000", "--val-split", "5000", "--batch-size", "100")  # 10 steps an epoch


def _run(losses, patience, finite=None):
    early = _EarlyStop(patience)
    for i, loss in enumerate(losses, start=1):
        if early.observe(i, loss, np.array([float(i)]), True if finite is None else finite[i - 1]):
            break
    return early


def test_patience_counts_evaluations_without_a_lower_loss():
    e = _run([1.0, 0.8, 0.9, math.nan, 0.85, 0.1], patience=3)  # 0.9, nan, 0.85: three without improvement
    assert (e.best_step, e.best_loss, e.stopped_at, e.evaluations) == (2, 0.8, 5, 5)
    assert e.best.tolist() == [2.0] and e.summary()["restored"]
    e = _run([1.0, 1.0, 0.5, 0.6], patience=2)  # an equal loss is no improvement (Keras's min_delta 0)
    assert (e.best_step, e.stopped_at) == (3, None) and e.wait == 1
    e = _run([0.9, 0.7], patience=1, finite=[True, False])  # a lower loss from non-finite parameters does not count
    assert (e.best_step, e.stopped_at) == (1, 2)


def test_a_non_finite_loss_is_never_the_best():
    e = _run([math.nan, math.inf, math.nan], patience=5)
    assert e.best is None and e.summary() == {"patience": 5, "evaluations": 3, "best_step": None,
                                              "best_val_loss": None, "stopped_at": None, "restored": False}


def test_the_saved_model_is_the_best_steps_model(cli, tmp_path):
    """The parameters kept are bit for bit those of a run stopped at the step the report names."""
    r = cli("train", *SMALL, "--epochs", "40", "--lr", "3", "--log-every", "5", "--early-stop", "2",
            "--save", tmp_path / "es.npz", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    e = doc["early_stop"]
    assert e["restored"] and e["stopped_at"] is not None and e["stopped_at"] < 400  # it did stop early
    assert e["stopped_at"] - e["best_step"] == 2 * 5  # two evaluations, five steps apart, without improvement
    history = {h["step"]: h["val_loss"] for h in doc["validation"]["history"]}
    assert e["best_val_loss"] == history[e["best_step"]] == min(history.values())
    assert doc["validation"]["loss"] == pytest.approx(e["best_val_loss"], rel=1e-12)
    assert cli("train", *SMALL, "--steps", e["best_step"], "--lr", "3", "--save", tmp_path / "best.npz").exit_code == 0
    kept, best = Model.load(tmp_path / "es.npz"), Model.load(tmp_path / "best.npz")
    np.testing.assert_array_equal(kept.W, best.W)
    np.testing.assert_array_equal(kept.b, best.b)
    assert kept.meta["early_stop"] == e
    text = cli("train", *SMALL, "--epochs", "40", "--lr", "3", "--log-every", "5", "--early-stop", "2").output
    assert (f"early stop      stopped at step {e['stopped_at']}: 2 evaluations without a lower validation loss; kept "
            f"the parameters of step {e['best_step']}") in text


def test_a_run_that_breaks_keeps_its_last_finite_best(cli, tmp_path):
    """The naive loss on raw pixels is NaN from step 2: the evaluation after step 1 is the only finite one."""
    r = cli("train", *SMALL, "--loss", "naive", "--input-scale", "255", "--steps", "50", "--log-every", "1",
            "--early-stop", "3", "--save", tmp_path / "m.npz", "--json")
    doc = json.loads(r.output)
    assert doc["nan"]["first_nan_loss_step"] == 2
    assert doc["early_stop"]["best_step"] == 1 and doc["early_stop"]["stopped_at"] == 4
    assert Model.load(tmp_path / "m.npz").finite


def test_with_no_finite_evaluation_nothing_is_called_best(cli):
    r = cli("train", *SMALL, "--loss", "naive", "--input-scale", "255", "--steps", "30", "--log-every", "10",
            "--early-stop", "5", "--json")
    e = json.loads(r.output)["early_stop"]
    assert e["restored"] is False and e["best_step"] is None and e["best_val_loss"] is None
    text = cli("train", *SMALL, "--loss", "naive", "--input-scale", "255", "--steps", "30", "--log-every", "10",
               "--early-stop", "5").output
    assert "no evaluation had a finite validation loss: the last parameters are kept, none is 'best'" in text


def test_checkpoints_are_each_epochs_model(cli, tmp_path):
    r = cli("train", *SMALL, "--epochs", "4", "--checkpoint-every", "2", "--save", tmp_path / "m.npz", "--json")
    assert r.exit_code == 0, r.output
    names = [tmp_path / "m-epoch002.npz", tmp_path / "m-epoch004.npz"]
    assert json.loads(r.output)["checkpoints"] == [str(p) for p in names]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-epoch002.npz", "m-epoch004.npz", "m.npz"]  # no .part
    assert cli("train", *SMALL, "--steps", "20", "--save", tmp_path / "twenty.npz").exit_code == 0
    two, twenty = Model.load(names[0]), Model.load(tmp_path / "twenty.npz")
    np.testing.assert_array_equal(two.W, twenty.W)
    assert two.meta["checkpoint"] == {"epoch": 2, "step": 20} and two.meta["steps"] == 20
    np.testing.assert_array_equal(Model.load(names[1]).W, Model.load(tmp_path / "m.npz").W)
    ev = cli("evaluate", names[0], "--json")
    assert ev.exit_code == 0 and json.loads(ev.output)["accuracy"] == json.loads(
        cli("evaluate", tmp_path / "twenty.npz", "--json").output)["accuracy"]


@pytest.mark.parametrize(("args", "needle"), [
    (["--early-stop", "3"], "--early-stop / --val-split: early stopping watches the validation loss"),
    (["--early-stop", "3", "--val-split", "100", "--average-epochs", "1"], "choose one"),
    (["--early-stop", "0", "--val-split", "100"], "--early-stop"),
    (["--checkpoint-every", "2"], "--checkpoint-every names its files after --save"),
])
def test_settings_that_cannot_work_are_refused(cli, args, needle):
    r = cli("train", "--steps", "10", *args)
    assert r.exit_code == 2 and needle in r.output, r.output
