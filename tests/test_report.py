"""Readable reports say what the numbers mean, and only when it applies."""

from mnist_cli.report.evaluate import format_evaluate
from mnist_cli.report.train import nan_lines


def evaluation(differ):
    return {"n": 3, "accuracy": 1.0, "accuracy_softmax": 1.0, "per_class_accuracy": [1.0] * 10,
            "confusion_matrix": [[0] * 10 for _ in range(10)],
            "argmax": {"differ": differ, "ties_in_probs": differ, "zero_probs": 0},
            "nonfinite_params": 0, "nonfinite_logits": 0, "nonfinite_probs": 0}


def test_tie_explanation_only_when_predictions_differ():
    assert "floating-point ties" not in format_evaluate(evaluation(0), "test")
    assert "floating-point ties" in format_evaluate(evaluation(2), "test")


def test_nan_lines():
    nan = {"any_nonfinite": True, "steps_nan_loss": 3, "first_nan_loss_step": 2, "steps_inf_loss": 0,
           "first_inf_loss_step": None, "steps_nonfinite_grad": 3, "first_nonfinite_grad_step": 2,
           "params_nonfinite": True, "first_nonfinite_params_step": 2}
    assert nan_lines(nan, 4) == ["NaN loss in 3 of 4 steps (first at step 2)",
                                 "non-finite gradient in 3 steps (first at step 2)",
                                 "parameters non-finite from step 2 on"]
    assert nan_lines({"any_nonfinite": False}, 4)[0].startswith("none")


def test_short_numbers_keep_small_ones_readable():
    """A report's short number: one decimal in the ordinary range, 4 significant digits past it either way, so
    a loss scale halved down to 2**-32 does not read "0.0" (as if there were none)."""
    from mnist_cli.report.text import short_number

    assert [short_number(v) for v in (0.0, 0.5, 2.0, 65536.0, 2.0**24)] == ["0.0", "0.5", "2.0", "65536.0", "1.678e+07"]
    assert [short_number(v) for v in (2.0**-32, -1e-5, 0.049)] == ["2.328e-10", "-1e-05", "0.049"]
    assert short_number(float("inf")) == "inf" and short_number(3) == "3.0"
