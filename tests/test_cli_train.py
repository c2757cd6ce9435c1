"""`train` through the command line: exit codes, the report and what it names, JSON, model files, validation,
progress lines, plots, the NaN story and its explanation."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_cli.forensics import digit14

ROOT = Path(__file__).resolve().parents[1]


def test_train_tutorial_json(cli):
    r = cli("train", "--loss", "fused", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["test_accuracy"] >= 0.917
    assert report["config"]["lr"] == 0.5 and report["steps"] == 1000
    assert report["nan"]["any_nonfinite"] is False and report["nan"]["first_nonfinite_step"] is None
    assert report["data"]["verified"] is True
    assert report["steps_per_second"] > 0


def test_train_readable_report_shows_the_nan_story(cli):
    r = cli("train", "--loss", "naive", "--input-scale", "255", "--steps", "20")
    assert r.exit_code == 0, r.output  # NaN is a result, not an error
    assert "test accuracy" in r.output
    assert "NaN loss in 19 of 20 steps (first at step 2)" in r.output
    assert "parameters non-finite from step 2" in r.output


def test_fail_on_nan_exit_code(cli):
    assert cli("train", "--loss", "naive", "--input-scale", "255", "--steps", "5", "--fail-on-nan").exit_code == 3
    assert cli("train", "--loss", "fused", "--input-scale", "255", "--steps", "5", "--fail-on-nan").exit_code == 0


def test_json_with_nan_is_strict_json(cli):
    r = cli("train", "--loss", "naive", "--input-scale", "255", "--steps", "5", "--json")
    report = json.loads(r.output, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert report["final_loss"] == "NaN" and report["nan"]["first_nan_loss_step"] == 2


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--lr", "0"], "--lr"),
        (["--lr", "-1"], "--lr"),
        (["--batch-size", "0"], "--batch-size"),
        (["--loss", "bogus"], "--loss"),
        (["--dtype", "float8"], "--dtype"),
        (["--precision", "mixed"], "--dtype float16 or bfloat16"),
        (["--dtype", "float16", "--loss-scale", "dynamic"], "--precision mixed"),
        (["--dtype", "float16", "--precision", "mixed", "--loss-scale", "-2"], "--loss-scale"),
        (["--dtype", "float16", "--input-scale", "70000"], "largest float16"),
        (["--steps", "0"], "--steps"),
        (["--train-limit", "50"], "batch size 100 is larger than the 50 training examples"),
        (["--lr", "nan"], "--lr"),
        (["--lr", "inf"], "--lr"),
        (["--input-scale", "nan"], "--input-scale"),
        (["--weight-decay", "nan"], "--weight-decay"),
        (["--weight-decay", "inf"], "--weight-decay"),
        (["--lr-decay", "nan"], "--lr-decay"),
        (["--seed", "-1"], "--seed"),
        (["--steps", "5", "--epochs", "1"], "not both"),
        (["--full-batch", "--batch-size", "50"], "drop --batch-size"),
    ],
)
def test_bad_flags_exit_2(cli, flags, needle):
    r = cli("train", *flags)
    assert r.exit_code == 2
    assert needle in r.output
    assert "Traceback" not in r.output


def test_metrics_out_jsonl(cli, tmp_path):
    out = tmp_path / "curve.jsonl"
    r = cli("train", "--steps", "50", "--log-every", "10", "--metrics-out", str(out))
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [rec["step"] for rec in records] == [10, 20, 30, 40, 50, 50]
    assert records[-1]["final"] and 0 < records[-1]["test_accuracy"] <= 1
    assert all(not rec.get("nan_loss") for rec in records[:-1])


def test_save_to_unwritable_path_is_one_line_error(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = cli("train", "--steps", "5", "--save", str(blocker / "m.npz"))
    assert r.exit_code == 1 and "cannot write" in r.output and "Traceback" not in r.output


@pytest.mark.slow
def test_preset_best_beats_the_converged_sklearn_figure(cli):
    r = cli("train", "--preset", "best", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["test_accuracy"] >= 0.926  # scikit-learn LogisticRegression, converged: 0.9260
    assert report["config"]["average"] is True and not report["nan"]["any_nonfinite"]


def test_explicit_flags_override_a_preset(cli):
    report = json.loads(cli("train", "--preset", "best", "--epochs", "9", "--train-limit", "1000", "--lr", "0.25",
                            "--json").output)
    assert report["steps"] == 90 and report["config"]["epochs"] == 9 and report["config"]["lr"] == 0.25
    assert report["config"]["average_epochs"] == 8  # the preset's, not overridden
    # the preset averages 8 epochs: 7 steps cannot hold them, and that is said, not hidden
    r = cli("train", "--preset", "best", "--steps", "7")
    assert r.exit_code == 2 and "--average-epochs / --steps" in r.output


def test_full_batch_is_gradient_descent_on_all_examples(cli):
    report = json.loads(cli("train", "--full-batch", "--steps", "3", "--train-limit", "500", "--json").output)
    assert report["config"]["batch_size"] == 500 and report["steps"] == 3


def test_plain_loop_gives_the_same_report(cli):
    fast = json.loads(cli("train", "--steps", "200", "--json").output)
    plain = json.loads(cli("train", "--steps", "200", "--plain-loop", "--json").output)
    assert plain["config"]["fast"] is False
    assert plain["test_accuracy"] == pytest.approx(fast["test_accuracy"], abs=2e-4)
    assert plain["final_loss"] == pytest.approx(fast["final_loss"], rel=1e-4)
    assert plain["nan"]["any_nonfinite"] == fast["nan"]["any_nonfinite"] is False


def test_average_epochs_turns_on_averaging(cli):
    report = json.loads(cli("train", "--epochs", "2", "--average-epochs", "1", "--train-limit", "1000",
                            "--json").output)
    assert report["config"]["average"] is True and report["config"]["average_epochs"] == 1


@pytest.mark.parametrize("option", ["--save", "--metrics-out"])
def test_unwritable_outputs_fail_before_training(cli, tmp_path, monkeypatch, option):
    import mnist_cli.train

    def never(*args, **kwargs):
        raise AssertionError("training ran before the output path was checked")

    monkeypatch.setattr(mnist_cli.train, "train", never)
    r = cli("train", option, str(tmp_path / "missing-dir" / "out"))
    assert r.exit_code == 1 and "cannot write" in r.output and option in r.output
    r = cli("train", option, str(tmp_path))  # a directory where a file is expected: a bad flag
    assert r.exit_code == 2 and "is a directory" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_save_writes_exactly_the_path_given(cli, tmp_path):
    target = tmp_path / "model.txt"
    r = cli("train", "--steps", "5", "--save", str(target))
    assert r.exit_code == 0, r.output
    assert target.is_file() and not (tmp_path / "model.txt.npz").exists()
    with np.load(target) as npz:  # an .npz archive under the name the user chose
        assert set(npz.files) == {"W", "b", "meta"}
    assert cli("evaluate", str(target)).exit_code == 0


# --- a model with non-finite logits has no accuracy that means something; values the dtype cannot hold ---


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


def test_train_refuses_an_overflowing_scale_with_exit_2_and_no_numpy_warning(mnist_data_dir):
    proc = subprocess.run([sys.executable, "-m", "mnist_cli", "train", "--input-scale", "1e300", "--steps", "5",
                           "--quiet", "--offline", "--data-dir", str(mnist_data_dir)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "--input-scale" in proc.stderr and "3.4028e+38" in proc.stderr and "RuntimeWarning" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_nan_is_spelt_one_way_in_train(cli):
    text = cli("train", "--loss", "naive", "--input-scale", "255", "--steps", "5", "--explain-nan").output
    assert "NaN" in text and not re.search(r"\bnan\b", text), text


def test_the_culprit_digit_is_drawn_beside_its_logits(cli, mnist):
    s = json.loads(cli("train", "--loss", "naive", "--input-scale", "255", "--steps", "5", "--explain-nan",
                       "--json").output)
    c = s["explanation"]["culprits"][0]
    assert c["digit"] == digit14(mnist.train_images[c["index"]]) and len(c["digit"]) == 14
    assert len(c["logits"]) == 10 and max(c["logits"]) == c["logit_max"]
    text = cli("train", "--loss", "naive", "--input-scale", "255", "--steps", "5", "--explain-nan").output
    art = [x for x in text.splitlines() if x.startswith("    |")]
    assert len(art) == 14 and all(len(x.split("|")[1]) == 28 for x in art)
    assert any("█" in x for x in art) and f"z[{c['label']}] =" in art[c["label"]] and "<- label" in art[c["label"]]


# --- the report shows what changed the result and refuses contradictions ---


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


@pytest.mark.parametrize("flags, names", [(["--average-epochs", "50", "--epochs", "2"], "--average-epochs / --epochs"),
                                          (["--average-epochs", "2", "--steps", "500"], "--average-epochs / --steps")])
def test_contradictory_settings_are_refused(cli, flags, names):
    r = cli("train", *flags)
    assert r.exit_code == 2 and names in r.output and "Traceback" not in r.output


# --- --val-split; progress you can read in a CI log; curves ---


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


def test_a_val_split_that_leaves_nothing_to_train_on_is_refused(cli):
    r = cli("train", "--val-split", "60000")
    assert r.exit_code == 2 and "--val-split" in r.output


def test_train_prints_a_progress_line_every_log_every_steps_without_a_terminal(cli):
    r = cli("train", "--steps", "100", "--log-every", "25", "--loss", "naive", "--input-scale", "255", quiet=False)
    assert r.exit_code == 0, r.output
    lines = [x for x in r.stderr.splitlines() if x.startswith("train: step")]
    assert [x.split(",")[0] for x in lines] == [f"train: step {n}/100" for n in (25, 50, 75, 100)]
    assert "NaN" in lines[-1] and "non-finite steps" in lines[-1]
    quiet = cli("train", "--steps", "100", "--log-every", "25")
    assert "train: step" not in quiet.stderr


def test_train_plot_draws_curves_and_refuses_a_bad_name_before_training(cli, tmp_path, monkeypatch):
    import mnist_cli.train

    png = tmp_path / "curves.png"
    r = cli("train", "--val-split", "5000", "--epochs", "2", "--train-limit", "1000", "--log-every", "5",
            "--plot", str(png), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    nan = tmp_path / "nan.pdf"
    r = cli("train", "--loss", "naive", "--input-scale", "255", "--steps", "20", "--plot", str(nan))
    assert r.exit_code == 0 and nan.read_bytes()[:5] == b"%PDF-"

    def never(*args, **kwargs):
        raise AssertionError("training ran before the --plot name was checked")

    monkeypatch.setattr(mnist_cli.train, "train", never)
    bad = cli("train", "--steps", "5", "--plot", str(tmp_path / "c.gif"))
    assert bad.exit_code == 2 and "--plot" in bad.output and "test accuracy" not in bad.output
    assert not (tmp_path / "c.gif").exists()


#: Modules a `train` run that saves nothing has no use for (issue 20's start-up): the network stack, plots,
#: progress bars, half precision, and the readers/writers of model archives and compressed IDX files.
NOT_FOR_TRAIN = ("requests", "tqdm", "matplotlib", "scipy", "ml_dtypes", "zipfile", "gzip", "mnist_cli.compare")


def test_train_imports_only_what_it_needs(mnist_data_dir):
    """The whole `mnist-softmax train --loss fused` process, cached data, imports none of NOT_FOR_TRAIN."""
    code = ("import sys\nfrom mnist_cli.cli import main\n"
            f"sys.argv = ['mnist-softmax', 'train', '--loss', 'fused', '--steps', '2', '--quiet', '--offline', "
            f"'--data-dir', {str(mnist_data_dir)!r}]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
            f"print('imported:', [m for m in {NOT_FOR_TRAIN!r} if m in sys.modules])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-500:]
    assert proc.stdout.strip().splitlines()[-1] == "imported: []", proc.stdout[-300:]
