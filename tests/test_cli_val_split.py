"""`--val-split` as a count or a fraction (Keras's validation_split: the last n - floor(n * (1 - x)) images), recorded
in the saved model, and `evaluate --split val` scoring exactly the images the model was validated on."""

import json
import math

import pytest

from mnist_cli.settings import held_out, val_count


@pytest.mark.parametrize(("split", "n", "held"), [
    (0.1, 60000, 6000), (0.25, 10, 3),  # floor(10 * 0.75) = 7 train, 3 held out (as Keras's split_at)
    (0.5, 3, 2), (1e-5, 60000, 1), (5000, 60000, 5000), (0, 60000, 0)])
def test_count_as_keras_splits(split, n, held):
    assert val_count(split, n) == held
    if isinstance(split, float):
        assert n - held == math.floor(n * (1.0 - split))  # Keras's split_at, written out


def test_held_out_is_the_last_slice_and_refuses_nothing_to_train_on():
    assert held_out(0.1, 60000) == {"split": 0.1, "n": 6000, "start": 54000, "stop": 60000, "of": 60000}
    from mnist_cli.errors import SettingsError

    for split, n in ((10, 10), (0.99, 1), (1e-17, 10)):  # 1 - 1e-17 rounds to 1: nothing held out
        with pytest.raises(SettingsError):
            held_out(split, n)


def test_a_fraction_trains_on_the_rest_and_the_model_records_it(cli, tmp_path):
    model = tmp_path / "m.npz"
    r = cli("train", "--val-split", "0.1", "--steps", "30", "--save", model, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["validation"]["n"] == 6000 and doc["n_train"] == 54000
    from mnist_cli.model import Model

    assert Model.load(model).meta["validation"] == {"split": 0.1, "n": 6000, "start": 54000, "stop": 60000,
                                                    "of": 60000}
    text = cli("train", "--val-split", "0.1", "--steps", "30").output
    assert "the last 0.1 of the training images held out for validation" in text
    assert "6000 held-out examples" in text


def test_evaluate_split_val_scores_the_held_out_images(cli, tmp_path, mnist):
    model = tmp_path / "m.npz"
    trained = json.loads(cli("train", "--val-split", "0.1", "--steps", "30", "--save", model, "--json").output)
    ev = json.loads(cli("evaluate", model, "--split", "val", "--json").output)
    assert ev["n"] == 6000 and ev["accuracy"] == trained["validation"]["accuracy"]
    assert ev["loss"] == pytest.approx(trained["validation"]["loss"], rel=1e-12)
    assert ev["validation"]["recorded"] is True and ev["validation"]["start"] == 54000
    assert sum(map(sum, ev["confusion_matrix"])) == 6000
    counts = [int((mnist.train_labels[54000:] == c).sum()) for c in range(10)]
    assert [sum(row) for row in ev["confusion_matrix"]] == counts  # the true classes of exactly those images
    text = cli("evaluate", model, "--split", "val").output
    assert "split val: 6000 examples, training images 54000-59999 of 60000 (--val-split 0.1, as the model recorded)" \
        in text
    given = json.loads(cli("evaluate", model, "--split", "val", "--val-split", "5000", "--json").output)
    assert given["n"] == 5000 and given["validation"]["recorded"] is False


def test_evaluate_split_val_without_a_recorded_split_says_what_to_give(cli, tmp_path):
    model = tmp_path / "m.npz"
    assert cli("train", "--steps", "10", "--save", model).exit_code == 0
    r = cli("evaluate", model, "--split", "val")
    assert r.exit_code == 2 and "records no validation split" in r.output and "--val-split" in r.output
    assert json.loads(cli("evaluate", model, "--split", "val", "--val-split", "100", "--json").output)["n"] == 100


@pytest.mark.parametrize("bad", ["1.0", "1.5", "-3", "0.0", "abc", "nan", "5000.0"])
def test_bad_splits_are_refused_in_one_line(cli, bad):
    r = cli("train", "--val-split", bad, "--steps", "1")
    assert r.exit_code == 2 and "--val-split" in r.output and "fraction 0 < x < 1" in r.output, r.output


def test_a_tampered_recorded_split_is_refused_not_trusted(cli, tmp_path):
    from mnist_cli.model import Model

    model = tmp_path / "m.npz"
    assert cli("train", "--val-split", "500", "--steps", "10", "--save", model).exit_code == 0
    m = Model.load(model)
    for rec, needle in (({"split": "all", "of": 60000}, "records a validation split that is not one"),
                        ({"split": 500, "of": 50000}, "this training set has 60000")):
        m.meta["validation"] = rec
        m.save(model)
        r = cli("evaluate", model, "--split", "val")
        assert r.exit_code == 2 and needle in r.output and "Traceback" not in r.output, r.output
