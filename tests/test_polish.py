"""What a user trips over: broken pipes, grammar, exact output paths, image formats, help text."""

import gzip
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mnist_cli.cli import main
from mnist_cli.data.idx import encode_idx
from mnist_cli.report.train import nan_lines

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("flags", [["--json"], []], ids=["json", "text"])
def test_a_reader_that_leaves_early_gets_a_quiet_exit(mnist_data_dir, flags):
    """`mnist-softmax compare --json | head -1`: no 'Broken pipe' error, no traceback, exit 0 or 141."""
    proc = subprocess.Popen([sys.executable, "-m", "mnist_cli", "compare", "--smoke", "--quiet", "--offline",
                             "--data-dir", str(mnist_data_dir), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.close()  # the reader is gone before the first byte
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert proc.returncode in (0, 141) and err == "", (proc.returncode, err)


def test_counts_of_one_are_singular():
    nan = {"any_nonfinite": True, "steps_nan_loss": 1, "first_nan_loss_step": 1, "steps_inf_loss": 0,
           "first_inf_loss_step": None, "steps_nonfinite_grad": 1, "first_nonfinite_grad_step": 1,
           "params_nonfinite": False}
    assert nan_lines(nan, 1) == ["NaN loss in 1 of 1 step (first at step 1)",
                                 "non-finite gradient in 1 step (first at step 1)"]


def test_save_writes_exactly_the_path_given(cli, tmp_path):
    target = tmp_path / "model.txt"
    r = cli("train", "--steps", "5", "--save", str(target))
    assert r.exit_code == 0, r.output
    assert target.is_file() and not (tmp_path / "model.txt.npz").exists()
    with np.load(target) as npz:  # an .npz archive under the name the user chose
        assert set(npz.files) == {"W", "b", "meta"}
    assert cli("evaluate", str(target)).exit_code == 0


@pytest.mark.slow
def test_plot_format_follows_the_file_name(cli, tmp_path):
    r = cli("compare", "--smoke", "--plot", str(tmp_path / "map.jpg"))
    assert r.exit_code == 2 and "must end in .png, .svg, .pdf" in r.output and "--plot" in r.output
    assert not (tmp_path / "map.jpg").exists()
    r = cli("compare", "--smoke", "--plot", str(tmp_path / "map.svg"))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "map.svg").read_bytes().lstrip().startswith((b"<?xml", b"<svg"))


def test_a_mirror_that_is_a_file_is_called_a_file(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a directory")
    r = CliRunner().invoke(main, ["download", "--data-dir", str(tmp_path / "d"), "--mirror", str(notes), "--offline"])
    assert r.exit_code == 1 and "is a file, not a directory" in r.output and "--mirror" in r.output


def test_top_level_help_lists_the_workflow_with_whole_summaries_and_exit_codes():
    out = CliRunner().invoke(main, ["--help"], env={"COLUMNS": "100"}).output
    listed = [line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()]
    assert listed == ["download", "train", "evaluate", "predict", "compare"]
    assert "..." not in out.split("Commands:")[1]  # no summary cut mid-sentence
    assert "Exit codes:" in out and "143" in out and "MNIST_SOFTMAX_MIRRORS" in out and "_COMPLETE" in out


def test_shell_completion_works():
    env = {**os.environ, "_MNIST_SOFTMAX_COMPLETE": "bash_source"}
    script = Path(sys.executable).with_name("mnist-softmax")  # the console script the README's line names
    out = subprocess.run([str(script)], env=env, capture_output=True, text=True, cwd=ROOT)
    assert "complete" in out.stdout and "_mnist_softmax_completion" in out.stdout


# --- defect 2: accuracies of a model with non-finite logits are not reported as if they meant something ---


def test_a_nan_model_has_no_accuracy_in_text_and_a_flag_in_json(cli, tmp_path):
    model = tmp_path / "nan.npz"
    r = cli("train", "--loss", "naive", "--input-scale", "255", "--steps", "5", "--save", str(model))
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if "test accuracy" in x)
    assert "n/a (non-finite weights)" in line and "0.0" not in line
    trained = json.loads(cli("train", "--loss", "naive", "--input-scale", "255", "--steps", "5", "--json").output)
    assert trained["accuracy_meaningful"] is False and 0 <= trained["test_accuracy"] <= 1  # the number stays
    ev = json.loads(cli("evaluate", str(model), "--json").output)
    assert ev["accuracy_meaningful"] is False and isinstance(ev["accuracy"], float)
    text = cli("evaluate", str(model)).output
    assert text.count("n/a (non-finite weights)") >= 2 and f"{ev['accuracy']:.4f}" not in text
    healthy = json.loads(cli("train", "--steps", "5", "--json").output)
    assert healthy["accuracy_meaningful"] is True


def test_compare_table_and_conclusion_say_na_for_nan_weights(cli):
    args = ("compare", "--input-scale", "255", "--steps", "20", "--train-limit", "2000")
    doc = json.loads(cli(*args, "--json").output)
    naive = next(s for s in doc["scenarios"])["runs"]["naive"]
    assert not naive["weights_finite"] and naive["accuracy_meaningful"] is False
    assert doc["scenarios"][0]["runs"]["fused"]["accuracy_meaningful"] is True
    text = cli(*args).output
    assert "n/a (non-finite weights)" in text
    assert f"{naive['test_accuracy']:.4f}" not in text
    assert "test accuracy n/a" in doc["conclusion"]


# --- defect 3: values the dtype cannot hold are refused; overflow is explained as overflow ---


def test_dtype_max_is_numpys():
    from mnist_cli.settings import DTYPE_MAX, DTYPE_NAMES

    assert set(DTYPE_MAX) == set(DTYPE_NAMES)
    assert all(DTYPE_MAX[name] == float(np.finfo(name).max) for name in DTYPE_NAMES)


@pytest.mark.parametrize("scale, dtype, ok", [(1e300, "float32", False), (3.5e38, "float32", False),
                                              (3e38, "float32", True), (1e300, "float64", True)])
def test_input_scales_the_dtype_cannot_hold_are_refused(scale, dtype, ok):
    from mnist_cli.errors import SettingsError
    from mnist_cli.settings import train_config

    if ok:
        assert train_config(input_scale=scale, dtype=dtype).input_scale == scale
    else:
        with pytest.raises(SettingsError) as info:
            train_config(input_scale=scale, dtype=dtype)
        assert "input_scale" in info.value.settings and f"largest {dtype}" in str(info.value)


def test_train_refuses_an_overflowing_scale_with_exit_2_and_no_numpy_warning(mnist_data_dir):
    proc = subprocess.run([sys.executable, "-m", "mnist_cli", "train", "--input-scale", "1e300", "--steps", "5",
                           "--quiet", "--offline", "--data-dir", str(mnist_data_dir)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "--input-scale" in proc.stderr and "3.4028e+38" in proc.stderr and "RuntimeWarning" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_an_overflowing_product_is_explained_as_overflow(mnist):
    import warnings

    from mnist_cli.settings import train_config
    from mnist_cli.train import run_session

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no raw NumPy RuntimeWarning
        s = run_session(mnist, train_config(input_scale=1e30, steps=3), explain=True).summary
    e = s["explanation"]
    assert e["params_finite"] is True and not e["logits_finite"]
    assert "overflow, not underflow" in e["summary"] and "overflowed earlier" not in e["summary"]
    assert "earlier step" not in e["chain"]["loss"] and "overflowed inside the product" in e["chain"]["loss"]


# --- defect 4: the report shows what changed the result and refuses contradictions ---


def test_the_report_names_every_changed_setting_and_both_losses(cli):
    text = cli("train", "--average-epochs", "2", "--epochs", "3", "--train-limit", "1000").output
    settings = next(x for x in text.splitlines() if x.strip().startswith("settings"))
    assert "averaged over the last 2 epochs" in settings and "epochs 3" in settings
    assert "first 1000 examples" in settings
    assert "last batch loss" in text and "final loss" not in text
    assert "training loss" in text and "1000 training examples" in text
    plain = cli("train", "--steps", "5").output
    assert "  settings        steps 5\n" in plain


def test_train_loss_is_the_mean_cross_entropy_over_the_training_set(cli):
    report = json.loads(cli("train", "--steps", "30", "--train-limit", "500", "--json").output)
    assert report["changed"] == {"steps": 30, "train_limit": 500} and report["preset"] == "tutorial"
    assert math.isfinite(report["train_loss"]) and 0 < report["train_loss"] < math.log(10)  # better than uniform
    assert report["train_loss"] != report["final_loss"]


def test_preset_best_is_named_in_the_report():
    from mnist_cli.report.train import changed_text
    from mnist_cli.settings import changed_settings, train_config

    changed = changed_settings(train_config("best"), "best")
    assert changed == {"lr": 1.0, "epochs": 12, "average_epochs": 8}
    assert changed_text(changed, "best") == "preset best: lr 1, epochs 12, averaged over the last 8 epochs"


@pytest.mark.parametrize("flags, names", [(["--average-epochs", "50", "--epochs", "2"], "--average-epochs / --epochs"),
                                          (["--average-epochs", "2", "--steps", "500"], "--average-epochs / --steps")])
def test_contradictory_settings_are_refused(cli, flags, names):
    r = cli("train", *flags)
    assert r.exit_code == 2 and names in r.output and "Traceback" not in r.output


# --- defect 6: a file that is not even IDX is an error at download time; every data error names the fix ---


def _replaced(tmp_path, tiny, name: str, content: bytes) -> Path:
    d = tiny.write(tmp_path / "data")
    (d / name).write_bytes(content)
    return d


@pytest.mark.parametrize("content, problem", [
    (gzip.compress(b"garbage, not an IDX file at all"), "not an IDX file"),
    ("truncated", "the gzip stream ends early"),
], ids=["garbage", "truncated"])
def test_download_refuses_a_file_that_is_not_idx_with_the_fix(tmp_path, tiny_mnist, download_env, content, problem):
    name = tiny_mnist.spec.files[3].name
    if content == "truncated":
        own = encode_idx(np.arange(100, dtype=np.uint8) % 10)  # a valid IDX, cut short
        content = gzip.compress(own)[:-12]
    d = _replaced(tmp_path, tiny_mnist, name, content)
    r = CliRunner().invoke(main, ["download", "--data-dir", str(d), "--offline"])
    assert r.exit_code == 1 and "kept as your own data" not in r.output
    assert problem in r.output and "mnist-softmax download --force" in r.output and "remove the file" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_a_valid_idx_file_of_your_own_is_still_kept(tmp_path, tiny_mnist, download_env):
    name = tiny_mnist.spec.files[3].name
    d = _replaced(tmp_path, tiny_mnist, name, gzip.compress(encode_idx(np.zeros(10, np.uint8))))
    r = CliRunner().invoke(main, ["download", "--data-dir", str(d), "--offline"])
    assert r.exit_code == 0 and "kept as your own data" in r.output


def test_every_error_about_your_own_data_names_the_fix(tmp_path, tiny_mnist, download_env):
    name = tiny_mnist.spec.files[0].name  # images of the wrong shape: valid IDX, not MNIST's layout
    d = _replaced(tmp_path, tiny_mnist, name, gzip.compress(encode_idx(np.zeros((20, 32, 32), np.uint8))))
    r = CliRunner().invoke(main, ["train", "--data-dir", str(d), "--offline", "--quiet", "--steps", "1"])
    assert r.exit_code == 1 and "(n, 28, 28)" in r.output
    assert "mnist-softmax download --force" in r.output and "remove the file" in r.output


def test_nan_is_spelt_one_way_in_train(cli):
    text = cli("train", "--loss", "naive", "--input-scale", "255", "--steps", "5", "--explain-nan").output
    assert "NaN" in text and not re.search(r"\bnan\b", text), text


# --- defect 8: no silent work, and an interrupt says what was done ---


def test_an_automatic_download_says_what_and_from_where_in_one_line(tmp_path, tiny_mnist, download_env):
    mirror = tiny_mnist.write(tmp_path / "mirror")
    data = tmp_path / "data"
    r = CliRunner().invoke(main, ["train", "--data-dir", str(data), "--mirror", str(mirror), "--steps", "1",
                                  "--batch-size", "5"])
    assert r.exit_code == 0, r.output
    lines = [x for x in r.stderr.splitlines() if x.startswith("Downloading")]
    assert len(lines) == 1 and f"into {data}" in lines[0] and str(mirror) in lines[0] and "4 files" in lines[0]
    again = CliRunner().invoke(main, ["train", "--data-dir", str(data), "--mirror", str(mirror), "--steps", "1",
                                      "--batch-size", "5"])
    assert "Downloading" not in again.stderr  # nothing to fetch, nothing said
    quiet = CliRunner().invoke(main, ["download", "--data-dir", str(tmp_path / "q"), "--mirror", str(mirror), "--quiet"])
    assert quiet.exit_code == 0 and "Downloading" not in quiet.stderr


def test_ctrl_c_in_train_says_how_far_it_got(cli, monkeypatch):
    import mnist_cli.engine.schedule as train_mod

    record = train_mod.step_record

    def interrupt(step, loss, acct):
        if step == 50:
            raise KeyboardInterrupt
        return record(step, loss, acct)

    monkeypatch.setattr(train_mod, "step_record", interrupt)
    r = cli("train", "--loss", "naive", "--input-scale", "255", "--metrics-out", "/dev/null", "--log-every", "10")
    assert r.exit_code == 130
    assert "Interrupted." in r.stderr and "50 steps of 1000" in r.stderr
    assert "NaN loss in 49 of 50 steps (first at step 2)" in r.stderr


def test_ctrl_c_in_compare_names_the_finished_runs(cli, monkeypatch):
    import mnist_cli.engine.stacked as stack_mod

    def train_stack(images, labels, configs, *, on_stack=None):
        on_stack([0])  # one run done, then the user presses Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(stack_mod, "train_stack", train_stack)
    r = cli("compare", "--smoke")
    assert r.exit_code == 130 and "Interrupted." in r.stderr
    assert "Done before the interrupt: 1 of " in r.stderr and "tutorial / " in r.stderr


# --- defect 10: download --json names fields by what they measure, paths normalised ---


def test_download_json_names_sizes_and_hashes_by_what_they_measure(tmp_path, tiny_mnist, download_env, monkeypatch):
    import hashlib

    d = tiny_mnist.write(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["download", "--data-dir", "./data/../data/", "--offline", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["data_dir"] == str(d)
    for spec, f in zip(tiny_mnist.spec.files, report["files"]):
        on_disk = (d / spec.name).read_bytes()
        assert f["path"] == str(d / spec.name)
        assert f["file_size"] == len(on_disk) and f["file_sha256"] == hashlib.sha256(on_disk).hexdigest()
        assert f["content_size"] == len(gzip.decompress(on_disk))
        assert f["content_sha256"] == hashlib.sha256(gzip.decompress(on_disk)).hexdigest()
        assert "size" not in f and "sha256" not in f


# --- feature 1: --val-split ---


def test_val_split_holds_out_the_last_images_and_reports_both_curves(cli, tmp_path):
    metrics = tmp_path / "m.jsonl"
    r = cli("train", "--val-split", "5000", "--epochs", "2", "--train-limit", "1000", "--log-every", "4",
            "--metrics-out", str(metrics), "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    v = s["validation"]
    assert v["n"] == 5000 and s["n_train"] == 1000 and 0 < v["accuracy"] <= 1 and v["loss"] > 0
    steps = [h["step"] for h in v["history"]]
    assert steps == sorted(set(range(4, 21, 4)) | {10, 20})  # every 4 steps and at each epoch's end (10 steps)
    assert all({"train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch"} <= set(h) for h in v["history"])
    assert [h["epoch"] for h in v["history"] if h["step"] in (10, 20)] == [1, 2]
    logged = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [x["step"] for x in logged if "val_loss" in x] == steps
    text = cli("train", "--val-split", "5000", "--epochs", "2", "--train-limit", "1000").output
    assert "validation      accuracy" in text and "train loss  train acc  val loss  val acc" in text
    assert "the last 5000 training images held out for validation" in text


def test_validation_images_are_never_trained_on(mnist):
    from mnist_cli.settings import train_config
    from mnist_cli.train import run_session, split_validation

    config = train_config(val_split=10000, steps=50)
    images, labels, (val_images, val_labels) = split_validation(mnist, config)
    assert len(images) == 50000 and np.array_equal(val_images, mnist.train_images[50000:])
    s = run_session(mnist, config).summary
    assert s["n_train"] == 50000 and s["validation"]["n"] == 10000


def test_a_val_split_that_leaves_nothing_to_train_on_is_refused(cli):
    r = cli("train", "--val-split", "60000")
    assert r.exit_code == 2 and "--val-split" in r.output


# --- feature 2: progress you can read in a CI log ---


def test_train_prints_a_progress_line_every_log_every_steps_without_a_terminal(mnist_data_dir):
    r = CliRunner().invoke(main, ["train", "--steps", "100", "--log-every", "25", "--loss", "naive", "--input-scale",
                                  "255", "--data-dir", str(mnist_data_dir), "--offline"])
    assert r.exit_code == 0, r.output
    lines = [x for x in r.stderr.splitlines() if x.startswith("train: step")]
    assert [x.split(",")[0] for x in lines] == [f"train: step {n}/100" for n in (25, 50, 75, 100)]
    assert "NaN" in lines[-1] and "non-finite steps" in lines[-1]
    quiet = CliRunner().invoke(main, ["train", "--steps", "100", "--log-every", "25", "--quiet",
                                      "--data-dir", str(mnist_data_dir), "--offline"])
    assert "train: step" not in quiet.stderr


# --- feature 3: a richer evaluate ---


def test_precision_recall_f1_follow_their_definitions():
    from mnist_cli.metrics import precision_recall_f1

    cm = np.array([[3, 1, 0], [2, 2, 0], [0, 0, 0]])  # class 2: never true, never predicted
    r = precision_recall_f1(cm)
    c0, c1, c2 = r["classes"]
    assert (c0["precision"], c0["recall"], c0["support"]) == (3 / 5, 3 / 4, 4)
    assert (c1["precision"], c1["recall"]) == (2 / 3, 2 / 4)
    assert c0["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert (c2["precision"], c2["recall"], c2["f1"], c2["support"]) == (0.0, 0.0, 0.0, 0)  # zero_division=0
    assert r["accuracy"] == 5 / 8
    assert r["macro"]["recall"] == pytest.approx((0.75 + 0.5 + 0) / 3)
    assert r["weighted"]["recall"] == pytest.approx(r["accuracy"])  # support-weighted recall is accuracy


def test_calibration_error_closed_forms():
    from mnist_cli.metrics import calibration

    conf = np.array([0.95, 0.95, 0.95, 0.95, 0.55, 0.55])
    hit = np.array([1, 1, 1, 0, 1, 0], bool)
    c = calibration(conf, hit, bins=10)
    assert sum(b["count"] for b in c["bins"]) == 6 == c["n"]
    assert c["ece"] == pytest.approx(4 / 6 * abs(0.75 - 0.95) + 2 / 6 * abs(0.5 - 0.55))
    perfect = calibration(np.array([1.0, 1.0, 0.5, 0.5]), np.array([1, 1, 1, 0], bool), bins=2)
    assert perfect["ece"] == 0.0 and [b["count"] for b in perfect["bins"]] == [2, 2]


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


# --- feature 4: pictures that teach ---


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


def test_train_plot_draws_curves_and_refuses_a_bad_name_before_training(cli, tmp_path):
    png = tmp_path / "curves.png"
    r = cli("train", "--val-split", "5000", "--epochs", "2", "--train-limit", "1000", "--log-every", "5",
            "--plot", str(png), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    nan = tmp_path / "nan.pdf"
    r = cli("train", "--loss", "naive", "--input-scale", "255", "--steps", "20", "--plot", str(nan))
    assert r.exit_code == 0 and nan.read_bytes()[:5] == b"%PDF-"
    bad = cli("train", "--steps", "5", "--plot", str(tmp_path / "c.gif"))
    assert bad.exit_code == 2 and "--plot" in bad.output and "test accuracy" not in bad.output


# --- feature 5: predict ---


@pytest.fixture(scope="module")
def tutorial_model(tmp_path_factory, mnist_data_dir):
    path = tmp_path_factory.mktemp("predict") / "m.npz"
    r = CliRunner().invoke(main, ["train", "--steps", "200", "--save", str(path), "--data-dir", str(mnist_data_dir),
                                  "--offline", "--quiet"])
    assert r.exit_code == 0, r.output
    return path


def test_predict_on_test_indices_matches_evaluate(cli, tutorial_model, mnist):
    from mnist_cli.model import Model
    from mnist_cli.scoring import predict_logits

    r = json.loads(cli("predict", str(tutorial_model), "--index", "0,7,2044", "--json").output)
    z = predict_logits(Model.load(tutorial_model), mnist.test_images[[0, 7, 2044]], 1.0)
    for row, i, zi in zip(r["predictions"], (0, 7, 2044), z):
        assert row["index"] == i and row["label"] == mnist.test_labels[i]
        assert row["predicted"] == int(np.argmax(zi)) == row["predicted_softmax"]
        assert sum(row["probabilities"]) == pytest.approx(1.0, abs=1e-5) and len(row["probabilities"]) == 10
    text = cli("predict", str(tutorial_model), "--index", "0").output
    assert "argmax(z)  argmax(p)" in text and f"      0      {mnist.test_labels[0]}" in text
    assert "data: " in text and "(verified MNIST)" in text


@pytest.mark.parametrize("suffix", [".npy", ".gz", ""])
def test_predict_on_a_file_of_your_own(cli, tutorial_model, mnist, tmp_path, suffix):
    images = mnist.test_images[:4].reshape(4, 28, 28)
    path = tmp_path / f"mine{suffix}"
    if suffix == ".npy":
        np.save(path, images.astype(np.float32))  # floats holding whole pixel values are fine
    else:
        data = encode_idx(images)
        path.write_bytes(gzip.compress(data) if suffix == ".gz" else data)
    mine = json.loads(cli("predict", str(tutorial_model), "--images", str(path), "--json").output)
    test = json.loads(cli("predict", str(tutorial_model), "--index", "0,1,2,3", "--json").output)
    assert [p["predicted"] for p in mine["predictions"]] == [p["predicted"] for p in test["predictions"]]
    assert all(p["label"] is None for p in mine["predictions"])


def test_predict_refuses_bad_input_in_one_line(cli, tutorial_model, tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 5)))
    for args, code, needle in ((["--index", "10000"], 2, "--index"), ([], 2, "--index / --images"),
                               (["--images", str(bad)], 1, "not 28x28 images"),
                               (["--images", str(tutorial_model)], 1, "give an IDX or .npy file"),
                               (["--index", "a,b"], 2, "comma-separated whole numbers")):
        r = cli("predict", str(tutorial_model), *args)
        assert r.exit_code == code and needle in r.output and "Traceback" not in r.output, (args, r.output)


def test_the_culprit_digit_is_drawn_beside_its_logits(cli, mnist):
    from mnist_cli.forensics import digit14

    s = json.loads(cli("train", "--loss", "naive", "--input-scale", "255", "--steps", "5", "--explain-nan",
                       "--json").output)
    c = s["explanation"]["culprits"][0]
    assert c["digit"] == digit14(mnist.train_images[c["index"]]) and len(c["digit"]) == 14
    assert len(c["logits"]) == 10 and max(c["logits"]) == c["logit_max"]
    text = cli("train", "--loss", "naive", "--input-scale", "255", "--steps", "5", "--explain-nan").output
    art = [x for x in text.splitlines() if x.startswith("    |")]
    assert len(art) == 14 and all(len(x.split("|")[1]) == 28 for x in art)
    assert any("█" in x for x in art) and f"z[{c['label']}] =" in art[c["label"]] and "<- label" in art[c["label"]]


def test_digit14_averages_2x2_blocks():
    from mnist_cli.forensics import digit14

    img = np.zeros((28, 28), np.uint8)
    img[0:2, 0:2] = [[255, 255], [255, 253]]
    img[27, 27] = 4
    d = digit14(img.ravel())
    assert d[0][0] == 254 and d[13][13] == 1 and sum(map(sum, d)) == 255


def test_predict_on_a_picture_reads_it_as_mnist_draws_digits(cli, tutorial_model, mnist, tmp_path):
    """A 28x28 PNG of a test digit predicts exactly as its index does; the same digit drawn black on white
    at 56x56 is inverted and resized, and still read as a digit (a probability row that sums to 1)."""
    from PIL import Image

    digit = mnist.test_images[0].reshape(28, 28)
    Image.fromarray(digit).save(tmp_path / "seven.png")  # uint8 (28, 28): a grey-level picture
    Image.fromarray(255 - digit).resize((56, 56)).save(tmp_path / "drawn.png")
    mine = json.loads(cli("predict", str(tutorial_model), "--images", str(tmp_path / "seven.png"), "--json").output)
    test = json.loads(cli("predict", str(tutorial_model), "--index", "0", "--json").output)
    assert mine["predictions"][0]["probabilities"] == test["predictions"][0]["probabilities"]
    drawn = json.loads(cli("predict", str(tutorial_model), "--images", str(tmp_path / "drawn.png"), "--json").output)
    assert drawn["predictions"][0]["predicted"] == mnist.test_labels[0]  # inverted back to white on black
    assert abs(sum(drawn["predictions"][0]["probabilities"]) - 1) < 1e-5
    (tmp_path / "broken.png").write_bytes(b"not a png")
    r = cli("predict", str(tutorial_model), "--images", str(tmp_path / "broken.png"))
    assert r.exit_code == 1 and "cannot read it as a picture" in r.output and "Traceback" not in r.output
