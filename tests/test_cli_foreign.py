"""`evaluate/predict --foreign`: an archive of just W and b from elsewhere is scored like a saved model, the report
saying nothing is known of its training, and every safety check of Model.load still refuses what it refused."""

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def saved(tmp_path_factory, mnist):
    from mnist_cli.settings import train_config
    from mnist_cli.train import run_session

    return run_session(mnist, train_config(steps=100)).save(tmp_path_factory.mktemp("foreign") / "m.npz")


@pytest.fixture
def extra(saved, tmp_path):
    with np.load(saved) as m:
        np.savez(tmp_path / "extra.npz", W=m["W"], b=m["b"])  # what a user of another library writes
    return tmp_path / "extra.npz"


def test_refused_without_the_flag_with_a_hint(cli, extra):
    r = cli("evaluate", extra)
    assert r.exit_code == 1 and "expected ['W', 'b', 'meta']" in r.output and "add --foreign" in r.output


def test_scored_as_the_same_weights_saved_by_train(cli, saved, extra):
    ours = json.loads(cli("evaluate", saved, "--json").output)
    theirs = json.loads(cli("evaluate", extra, "--foreign", "--json").output)
    assert theirs["accuracy"] == ours["accuracy"] and theirs["confusion_matrix"] == ours["confusion_matrix"]
    assert theirs["foreign"] is True and ours["foreign"] is False
    assert theirs["training_provenance"] is None and theirs["training"]["config"] is None
    text = cli("evaluate", extra, "--foreign").output
    assert "model: W and b from elsewhere (--foreign): nothing is known of its training" in text
    p = json.loads(cli("predict", extra, "--foreign", "--index", "0,1", "--json").output)
    q = json.loads(cli("predict", saved, "--index", "0,1", "--json").output)
    assert p["predictions"] == q["predictions"] and p["foreign"] is True
    assert "nothing is known of its training" in cli("predict", extra, "--foreign", "--index", "0").output
    scaled = json.loads(cli("evaluate", extra, "--foreign", "--input-scale", "255", "--json").output)
    assert scaled["input_scale"] == 255 and "computed at input scale 255" in cli(
        "evaluate", extra, "--foreign", "--input-scale", "255").output


def _archive(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(("arrays", "needle"), [
    ({"W": np.zeros((784, 9), np.float32), "b": np.zeros(9, np.float32)}, "expected W(784, 10) and b(10,)"),
    ({"W": np.zeros((784, 10), np.int32), "b": np.zeros(10, np.int32)}, "expected float16, float32, float64"),
    ({"W": np.zeros((784, 10), np.uint16), "b": np.zeros(10, np.uint16)}, "uint16 W and b without metadata"),
    ({"W": np.zeros((784, 10), np.float32), "b": np.zeros(10, np.float64)}, "dtypes W float32, b float64"),
    ({"W": np.zeros((784, 10)), "b": np.zeros(10), "extra": np.zeros(1)}, "has arrays ['W', 'b', 'extra']"),
    ({"W": np.array([None] * 7840, dtype=object).reshape(784, 10), "b": np.zeros(10)}, "pickled objects"),
])
def test_every_safety_check_is_kept(cli, tmp_path, arrays, needle):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # (object arrays are pickled by savez: exactly what must never be loaded)
    r = cli("evaluate", path, "--foreign")
    assert r.exit_code == 1 and needle in r.output and "Traceback" not in r.output, r.output


def test_a_decompression_bomb_is_refused_before_reading(cli, tmp_path):
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, W=np.zeros((784 * 100, 10)), b=np.zeros(10))  # small file, 63 MB unpacked
    r = cli("evaluate", path, "--foreign")
    assert r.exit_code == 1 and "unpacks to" in r.output and "cap" in r.output
