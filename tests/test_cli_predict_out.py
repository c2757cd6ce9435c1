"""`predict --out FILE.npy|csv|jsonl`: every image's row in a file, the same numbers --json prints, written
atomically (a failure leaves the previous file as it was), a bad path refused before any work."""

import csv
import errno
import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, mnist):
    from mnist_cli.settings import train_config
    from mnist_cli.train import run_session

    return run_session(mnist, train_config(steps=100)).save(tmp_path_factory.mktemp("predict-out") / "m.npz")


INDICES = "0,1,2044,9999"


def _rows(cli, model_path, *args):
    r = cli("predict", str(model_path), *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_npy_holds_every_row_as_json_prints_it(cli, model_path, tmp_path):
    out = tmp_path / "p.npy"
    doc = _rows(cli, model_path, "--index", INDICES, "--out", out)
    table = np.load(out, allow_pickle=False)  # a structured array, no pickle needed
    assert doc["out"] == str(out) and table.shape == (4,)
    for got, row in zip(table, doc["predictions"]):
        assert (got["index"], got["label"], got["predicted"], got["predicted_softmax"]) == (
            row["index"], row["label"], row["predicted"], row["predicted_softmax"])
        assert got["probabilities"].tolist() == row["probabilities"]  # exact: float64 holds them all


def test_csv_and_jsonl_hold_the_same_rows(cli, model_path, tmp_path):
    doc = _rows(cli, model_path, "--index", INDICES)
    _rows(cli, model_path, "--index", INDICES, "--out", tmp_path / "p.csv")
    _rows(cli, model_path, "--index", INDICES, "--out", tmp_path / "p.jsonl")
    with open(tmp_path / "p.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == ["index", "label", "predicted", "predicted_softmax", *(f"p{c}" for c in range(10))]
    assert [int(t["index"]) for t in table] == [0, 1, 2044, 9999]
    for t, row in zip(table, doc["predictions"]):
        assert int(t["label"]) == row["label"] and int(t["predicted"]) == row["predicted"]
        assert [float(t[f"p{c}"]) for c in range(10)] == row["probabilities"]  # repr round-trips
    lines = (tmp_path / "p.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == doc["predictions"]


def test_own_images_have_no_label_in_the_file(cli, model_path, mnist, tmp_path):
    np.save(tmp_path / "mine.npy", mnist.test_images[:3])
    _rows(cli, model_path, "--images", tmp_path / "mine.npy", "--out", tmp_path / "p.npy")
    _rows(cli, model_path, "--images", tmp_path / "mine.npy", "--out", tmp_path / "p.csv")
    assert np.load(tmp_path / "p.npy")["label"].tolist() == [-1, -1, -1]
    with open(tmp_path / "p.csv", newline="") as fh:
        assert [t["label"] for t in csv.DictReader(fh)] == ["", "", ""]
    text = cli("predict", str(model_path), "--images", tmp_path / "mine.npy", "--out", tmp_path / "q.jsonl").output
    assert f"predictions of 3 images written to {tmp_path / 'q.jsonl'}" in text


def test_a_bad_out_path_is_refused_before_any_work(cli, model_path, tmp_path):
    r = cli("predict", str(model_path), "--index", "0", "--out", tmp_path / "p.txt")
    assert r.exit_code == 2 and "--out" in r.output and ".npy/.csv/.jsonl" in r.output
    r = cli("predict", str(model_path), "--index", "0", "--out", tmp_path / "missing" / "p.csv")
    assert r.exit_code == 1 and "--out" in r.output and "Traceback" not in r.output
    r = cli("predict", str(tmp_path / "no-model.npz"), "--index", "0", "--out", tmp_path / "p.csv")
    assert r.exit_code == 1 and not (tmp_path / "p.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary file left either


def test_a_failed_write_keeps_the_previous_file(cli, model_path, tmp_path, monkeypatch):
    import mnist_cli.predict as predict

    out = tmp_path / "p.jsonl"
    out.write_text("previous\n")
    calls = []

    def full_disk(row):
        calls.append(row)
        if len(calls) > 1:  # the first row is written, the second finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        return row

    monkeypatch.setattr(predict, "jsonable", full_disk)
    r = cli("predict", str(model_path), "--index", INDICES, "--out", out)
    assert r.exit_code == 1 and "No space left on device" in r.output and "--out" in r.output
    assert out.read_text() == "previous\n" and [p.name for p in tmp_path.iterdir()] == ["p.jsonl"]
