"""`train --init-from MODEL.npz`: a run starts from a saved model's parameters (full-batch gradient descent continued
is the longer run), records its parent (the digest of the W and b it started from) and the steps in all, and refuses
a model of another dtype, compute form or input scale, or with non-finite weights, in one line saying why."""

import hashlib
import json

import numpy as np
import pytest

from mnist_cli.model import Model

FULL = ("--full-batch", "--train-limit", "500", "--dtype", "float64", "--lr", "0.3")


def _digest(m: Model) -> str:
    return hashlib.sha256(m.W.tobytes() + m.b.tobytes()).hexdigest()


def test_continued_gradient_descent_is_the_longer_run(cli, tmp_path):
    """Full-batch steps do not depend on the batch order: 2 steps, then 2 more from the saved model, are the
    same 4 steps as one run (float64: only the engine's layout rounding apart)."""
    assert cli("train", *FULL, "--steps", "4", "--save", tmp_path / "four.npz").exit_code == 0
    assert cli("train", *FULL, "--steps", "2", "--save", tmp_path / "two.npz").exit_code == 0
    r = cli("train", *FULL, "--steps", "2", "--init-from", tmp_path / "two.npz", "--save", tmp_path / "more.npz",
            "--json")
    assert r.exit_code == 0, r.output
    four, two, more = (Model.load(tmp_path / f"{n}.npz") for n in ("four", "two", "more"))
    np.testing.assert_allclose(more.W, four.W, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(more.b, four.b, rtol=1e-12, atol=1e-15)
    assert not np.allclose(two.W, four.W)  # the two extra steps did move it
    doc = json.loads(r.output)
    assert doc["steps"] == 2 and doc["steps_total"] == 4
    assert more.meta["parent"] == {"path": str(tmp_path / "two.npz"), "params_sha256": _digest(two),
                                   "steps_total": 2, "test_accuracy": two.meta["test_accuracy"]}
    assert more.meta["steps_total"] == 4 and more.meta["config"]["init_from"] == str(tmp_path / "two.npz")


def test_the_engine_starts_from_the_parents_parameters(mnist, tmp_path):
    """The run's init digest is the parent's parameters' (what the engine consumed), for each engine."""
    from mnist_cli.engine import train
    from mnist_cli.settings import train_config
    from mnist_cli.train import run_session

    parent = run_session(mnist, train_config(steps=20)).save(tmp_path / "p.npz")
    for extra in ({}, {"fast": False}):
        result = train(mnist.train_images, mnist.train_labels, train_config(steps=1, init_from=str(parent), **extra))
        assert result.init_digest == _digest(Model.load(parent)), extra
    half = run_session(mnist, train_config(steps=20, dtype="bfloat16", precision="mixed")).save(tmp_path / "h.npz")
    result = train(mnist.train_images, mnist.train_labels,
                   train_config(steps=1, init_from=str(half), dtype="bfloat16", precision="mixed"))
    assert result.init_digest == _digest(Model.load(half)) and result.model.W.dtype == np.float32


def test_the_report_says_what_it_continued(cli, tmp_path):
    assert cli("train", "--steps", "30", "--save", tmp_path / "p.npz").exit_code == 0
    text = cli("train", "--steps", "20", "--init-from", tmp_path / "p.npz").output
    assert "started from" in text
    assert f"continued from  {tmp_path / 'p.npz'} (30 steps there + 20 here = 50; its W, b sha256 " in text


@pytest.mark.parametrize(("args", "needle"), [
    (["--dtype", "float64"], "computes in float32 pure, the run in float64 pure: give --dtype float32 --precision pure"),
    (["--dtype", "bfloat16", "--precision", "mixed"], "the run in bfloat16 mixed"),
    (["--input-scale", "255"], "was trained at input scale 1, the run uses 255: give --input-scale 1"),
    (["--init", "normal"], "drop --init"),
])
def test_a_parent_of_another_form_is_refused_saying_why(cli, tmp_path, args, needle):
    assert cli("train", "--steps", "5", "--save", tmp_path / "p.npz").exit_code == 0
    r = cli("train", "--steps", "1", "--init-from", tmp_path / "p.npz", *args, "--save", tmp_path / "c.npz")
    assert r.exit_code == 2 and needle in r.output and "--init-from" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "c.npz").exists()


def test_unsafe_or_broken_parents_are_refused(cli, tmp_path):
    nan = tmp_path / "nan.npz"
    assert cli("train", "--loss", "naive", "--input-scale", "255", "--steps", "5", "--save", nan).exit_code == 0
    r = cli("train", "--steps", "1", "--input-scale", "255", "--init-from", nan)
    assert r.exit_code == 2 and "non-finite parameters" in r.output
    np.savez(tmp_path / "foreign.npz", W=np.zeros((784, 10), np.float32), b=np.zeros(10, np.float32))
    for path, needle in ((tmp_path / "foreign.npz", "expected ['W', 'b', 'meta']"),
                         (tmp_path / "missing.npz", "No such file")):
        r = cli("train", "--steps", "1", "--init-from", path)
        assert r.exit_code == 1 and needle in r.output and "Traceback" not in r.output, r.output
