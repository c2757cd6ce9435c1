"""`train` and `evaluate` through click's CliRunner: exit codes, reports, JSON, model files."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mnist_cli.cli import main


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


def test_help_has_examples():
    for cmd in ("train", "evaluate"):
        r = CliRunner().invoke(main, [cmd, "--help"])
        assert r.exit_code == 0 and "Examples:" in r.output


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


def test_evaluate_refuses_a_non_finite_input_scale(cli, tmp_path):
    model = tmp_path / "m.npz"
    assert cli("train", "--steps", "5", "--save", str(model)).exit_code == 0
    r = cli("evaluate", str(model), "--input-scale", "nan")
    assert r.exit_code == 2 and "--input-scale" in r.output


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
