"""A sweep past what compare may run is refused at once, in one short line (issue 21, item 14)."""

import resource

import pytest

from mnist_cli.settings import MAX_RUNS


@pytest.mark.parametrize("lr", ["0.1:10:log100000000", "0.1:10:100000000"])
def test_a_range_of_too_many_values_is_refused_before_it_is_built(cli, lr):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = cli("compare", "--lr", lr, data_dir=None)
    assert result.exit_code == 2 and f"{MAX_RUNS:,} runs" in result.output, result.output
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 200_000  # a list of 10^8 floats is ~4 GB: it was never built


def test_a_range_whose_values_round_to_repeats_says_so_in_one_short_line(cli):
    result = cli("compare", "--lr", "0.1:10:log9000", data_dir=None)
    assert result.exit_code == 2 and "twice" in result.output
    assert max(map(len, result.output.splitlines())) < 300, result.output[:500]
    assert "more twice" in result.output  # the repeats are counted, not all listed


def test_a_grid_of_too_many_runs_is_refused_before_any_data_is_read(cli, tmp_path):
    result = cli("compare", "--lr", "0.1:10:200", "--input-scale", "1:255:100", data_dir=tmp_path / "none")
    assert result.exit_code == 2 and "40,000 runs" in result.output, result.output
    assert not (tmp_path / "none").exists()
