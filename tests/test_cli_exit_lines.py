"""Exits 3 and 4 say why on stderr, and a smoke run too short for an expectation is not failed by it
(issue 21, item 5)."""

import dataclasses

from mnist_cli.compare import compare_config, planned_checks
from mnist_cli.scenarios import SCENARIOS, Cell, expectations


def test_fail_on_nan_exit_3_puts_one_line_on_stderr(cli):
    result = cli("train", "--loss", "naive", "--input-scale", "255", "--steps", "20", "--fail-on-nan")
    assert result.exit_code == 3
    assert result.stderr.startswith("--fail-on-nan: NaN loss in ") and result.stderr.rstrip().endswith("exit 3")
    assert len(result.stderr.strip().splitlines()) == 1


def test_check_exit_4_names_the_failed_expectation_on_stderr(cli, monkeypatch):
    # a tutorial that claims naive fails by step 2: the real run stays finite, so the check fails
    claims = tuple(dataclasses.replace(s, naive="fails", by_step=2) if s.name == "tutorial" else s
                   for s in SCENARIOS)
    monkeypatch.setattr("mnist_cli.compare.SCENARIOS", claims)
    result = cli("compare", "--scenarios", "tutorial", "--steps", "5", "--train-limit", "500", "--check",
                 "--losses", "naive")
    assert result.exit_code == 4, result.output
    assert result.stderr == ("--check: 1 of 1 expectation failed, first tutorial / naive: expected non-finite by "
                             "step 2, observed finite at every step: exit 4\n")


def test_an_expectation_by_step_n_does_not_apply_to_a_shorter_run():
    f16 = next(s for s in SCENARIOS if s.name == "f16")
    cell = Cell(f16.lr, f16.input_scale, f16.dtype, 0, f16, "f16", f16.precision)
    assert "naive" in expectations(cell, ("naive", "fused"), steps=100)
    assert "naive" not in expectations(cell, ("naive", "fused"), steps=99)
    assert planned_checks(compare_config(smoke=True, steps=5)) < planned_checks(compare_config(smoke=True))


def test_smoke_of_5_steps_is_not_failed_by_an_expectation_for_step_100(cli):
    result = cli("compare", "--smoke", "--steps", "5")
    assert result.exit_code == 0, result.output[-800:]
    assert "by step 100" not in result.output
