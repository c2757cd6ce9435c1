"""How a command ends when it cannot finish: a reader that leaves early gets a quiet exit, Ctrl-C says what
was done."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("flags", [["--json"], []], ids=["json", "text"])
def test_a_reader_that_leaves_early_gets_a_quiet_exit(mnist_data_dir, flags):
    """`mnist-softmax compare --json | head -1`: no 'Broken pipe' error, no traceback, exit 0 or 141."""
    proc = subprocess.Popen([sys.executable, "-m", "mnist_cli", "compare", "--lr", "0.5", "--steps", "2",
                             "--train-limit", "200", "--quiet", "--offline", "--data-dir", str(mnist_data_dir), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.close()  # the reader is gone before the first byte
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert proc.returncode in (0, 141) and err == "", (proc.returncode, err)


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
    import mnist_cli.compare as compare_mod

    real, calls = compare_mod.train_group, []

    def train_group(*args):
        calls.append(1)
        if len(calls) > 1:  # the first group done, then the user presses Ctrl-C
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(compare_mod, "train_group", train_group)
    r = cli("compare", "--smoke")
    assert r.exit_code == 130 and "Interrupted." in r.stderr
    assert "Done before the interrupt: 8 of 26 runs" in r.stderr and "tutorial / " in r.stderr  # the first stack
