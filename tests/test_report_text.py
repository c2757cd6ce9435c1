"""The words of the reports (mnist_cli/report/text.py), beside tests/test_report.py: grammar."""

from mnist_cli.report.train import nan_lines


def test_counts_of_one_are_singular():
    nan = {"any_nonfinite": True, "steps_nan_loss": 1, "first_nan_loss_step": 1, "steps_inf_loss": 0,
           "first_inf_loss_step": None, "steps_nonfinite_grad": 1, "first_nonfinite_grad_step": 1,
           "params_nonfinite": False}
    assert nan_lines(nan, 1) == ["NaN loss in 1 of 1 step (first at step 1)",
                                 "non-finite gradient in 1 step (first at step 1)"]
