"""The command line's help: the workflow in order, whole summaries, exit codes, examples, shell completion."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["download", "train", "evaluate", "predict", "compare"]


def test_top_level_help_lists_the_workflow_with_whole_summaries_and_exit_codes(cli):
    out = cli("--help", data_dir=None, offline=False, quiet=False, env={"COLUMNS": "100"}).output
    listed = [line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()]
    assert listed == COMMANDS
    assert "..." not in out.split("Commands:")[1]  # no summary cut mid-sentence
    assert "Exit codes:" in out and "143" in out and "MNIST_SOFTMAX_MIRRORS" in out and "_COMPLETE" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_examples(cli, command):
    r = cli(command, "--help", data_dir=None, offline=False, quiet=False)
    assert r.exit_code == 0 and "Examples:" in r.output


def test_download_help_states_every_patience_setting_with_its_real_default(cli):
    from dataclasses import fields

    from mnist_cli.data.mirrors import FetchSettings

    out = cli("download", "--help", data_dir=None, offline=False, quiet=False, env={"COLUMNS": "80"}).output
    text = " ".join(out.split("Patience")[1].split("Options:")[0].split())
    stated = dict(re.findall(r"(?:MNIST_SOFTMAX)?_([A-Z_]+)=([0-9.]+)", text))
    defaults = {f.name.upper(): f.default for f in fields(FetchSettings)}
    assert {var: float(value) for var, value in stated.items()} == defaults  # every one, none stale or invented
    top = cli("--help", data_dir=None, offline=False, quiet=False).output
    assert "download --help" in top and "README" not in top  # an installed tool has no README beside it


def test_shell_completion_works():
    env = {**os.environ, "_MNIST_SOFTMAX_COMPLETE": "bash_source"}
    script = Path(sys.executable).with_name("mnist-softmax")  # the console script the README's line names
    out = subprocess.run([str(script)], env=env, capture_output=True, text=True, cwd=ROOT)
    assert "complete" in out.stdout and "_mnist_softmax_completion" in out.stdout
