"""Every readable report and every ``--help`` fits the width the terminal gives (issue 21, item 8).

``COLUMNS`` is what a terminal of that width sets; no line printed may be wider, or a real terminal
wraps it mid-word. (JSON, CSV and markdown are for programs and are not wrapped.)
"""

import pytest

from mnist_cli.cli import main

SMALL = ("--steps", "5", "--train-limit", "500")
WIDTHS = (60, 80)


def _widest(text: str) -> int:
    return max(map(len, text.splitlines()), default=0)


@pytest.mark.parametrize("columns", WIDTHS)
def test_every_help_fits(cli, columns):
    for command in (None, *main.commands):
        args = ([command] if command else []) + ["--help"]
        result = cli(*args, data_dir=None, offline=False, quiet=False, env={"COLUMNS": str(columns)})
        assert result.exit_code == 0, result.output
        assert _widest(result.output) <= columns, (command, [line for line in result.output.splitlines()
                                                             if len(line) > columns])


@pytest.fixture(scope="module")
def model(tmp_path_factory, mnist_data_dir):
    from click.testing import CliRunner

    path = tmp_path_factory.mktemp("width") / "m.npz"
    result = CliRunner().invoke(main, ["train", *SMALL, "--save", str(path), "--data-dir", str(mnist_data_dir),
                                       "--offline", "--quiet"])
    assert result.exit_code == 0, result.output
    return path


REPORTS = {
    "train": ("train", *SMALL),
    "train --explain-nan": ("train", "--loss", "naive", "--input-scale", "255", "--explain-nan", *SMALL),
    "evaluate": ("evaluate", "MODEL"),
    "predict": ("predict", "MODEL", "--index", "0,1"),
    "compare": ("compare", "--scenarios", "tutorial", *SMALL),
    "download": ("download",),
}


@pytest.mark.parametrize("columns", WIDTHS)
@pytest.mark.parametrize("name", list(REPORTS))
def test_every_report_fits(cli, model, columns, name):
    args = [str(model) if a == "MODEL" else a for a in REPORTS[name]]
    result = cli(*args, env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    assert _widest(result.stdout) <= columns, [line for line in result.stdout.splitlines() if len(line) > columns]
