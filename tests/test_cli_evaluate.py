"""`evaluate` through the command line: the argmax question answered, a NaN model reported (not refused),
bad model files and flags refused in one line, the classification report, mistakes, calibration and plots."""

import json
import math

import numpy as np
import pytest


def test_save_then_evaluate_answers_the_argmax_question(cli, tmp_path):
    model = tmp_path / "m.npz"
    r = cli("train", "--steps", "300", "--save", str(model), "--json")
    assert r.exit_code == 0, r.output
    trained = json.loads(r.output)
    r = cli("evaluate", str(model), "--json")
    assert r.exit_code == 0, r.output
    ev = json.loads(r.output)
    assert ev["accuracy"] == trained["test_accuracy"]
    assert ev["n"] == 10000 and sum(map(sum, ev["confusion_matrix"])) == 10000
    assert ev["argmax"]["differ"] == 0 and ev["accuracy_softmax"] == ev["accuracy"]
    assert ev["nonfinite_logits"] == 0
    r = cli("evaluate", str(model))
    assert "argmax(softmax(logits))" in r.output and "confusion matrix" in r.output


def test_evaluate_reports_a_nan_model_instead_of_refusing(cli, tmp_path):
    model = tmp_path / "nan.npz"
    assert cli("train", "--loss", "naive", "--input-scale", "255", "--steps", "5", "--save", str(model)).exit_code == 0
    r = cli("evaluate", str(model), "--json")
    assert r.exit_code == 0, r.output
    ev = json.loads(r.output)
    assert ev["nonfinite_params"] > 0 and ev["nonfinite_logits"] > 0
    assert ev["input_scale"] == 255


def test_evaluate_refuses_bad_model_files_in_one_line(cli, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, W=np.zeros((3, 3)))
    for path in (bad, tmp_path / "missing.npz"):
        r = cli("evaluate", str(path))
        assert r.exit_code == 1
        assert "Traceback" not in r.output
        lines = [line for line in r.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error:")


def test_evaluate_refuses_a_non_finite_input_scale(cli, tmp_path):
    model = tmp_path / "m.npz"
    assert cli("train", "--steps", "5", "--save", str(model)).exit_code == 0
    r = cli("evaluate", str(model), "--input-scale", "nan")
    assert r.exit_code == 2 and "--input-scale" in r.output


def test_evaluate_reports_loss_classification_report_mistakes_and_calibration(cli, tmp_path, mnist):
    model = tmp_path / "m.npz"
    assert cli("train", "--steps", "200", "--lr", "0.7", "--save", str(model)).exit_code == 0
    ev = json.loads(cli("evaluate", str(model), "--json").output)
    assert 0 < ev["loss"] < math.log(10)
    assert ev["classification_report"]["accuracy"] == pytest.approx(ev["accuracy"])
    assert sum(c["support"] for c in ev["classification_report"]["classes"]) == ev["n"]
    cm = np.array(ev["confusion_matrix"])
    for c in ev["confusions"]:
        assert c["true"] != c["predicted"] and cm[c["true"], c["predicted"]] == c["count"]
    assert [c["count"] for c in ev["confusions"]] == sorted(np.sort((cm - np.diag(np.diag(cm))).ravel())[-5:])[::-1]
    probs = [m["probability"] for m in ev["confident_mistakes"]]
    assert probs == sorted(probs, reverse=True) and len(probs) == 5
    for m in ev["confident_mistakes"]:
        assert mnist.test_labels[m["index"]] == m["label"] != m["predicted"]
    assert 0 <= ev["calibration"]["ece"] <= 1 and sum(b["count"] for b in ev["calibration"]["bins"]) == ev["n"]
    assert ev["training"]["config"]["lr"] == 0.7 and ev["training"]["steps"] == 200
    text = cli("evaluate", str(model)).output
    assert "precision    recall  f1-score   support" in text and "weighted avg" in text
    assert "most confident mistakes" in text and "expected calibration error" in text
    assert "model settings       lr 0.7, steps 200; 200 steps taken" in text


def test_evaluate_plot_draws_templates_and_mistakes(cli, tmp_path):
    model = tmp_path / "m.npz"
    assert cli("train", "--steps", "50", "--save", str(model)).exit_code == 0
    png = tmp_path / "templates.png"
    r = cli("evaluate", str(model), "--plot", str(png), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = tmp_path / "templates.svg"
    assert cli("evaluate", str(model), "--plot", str(svg)).exit_code == 0 and b"<svg" in svg.read_bytes()[:500]
    bad = cli("evaluate", str(model), "--plot", str(tmp_path / "t.jpg"))
    assert bad.exit_code == 2 and "--plot" in bad.output and not (tmp_path / "t.jpg").exists()
