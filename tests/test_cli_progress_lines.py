"""What the progress lines of a CI log say (issue 21, items 1 and 9): steps counted once, and compare heard.

When stderr is not a terminal, ``train`` writes a line every ``--log-every`` steps and ``compare`` a line
per finished run; both through :class:`mnist_cli.shell.StepBar` / :class:`~mnist_cli.shell.RunBar`.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script(*args, data_dir):
    script = Path(sys.executable).with_name("mnist-softmax")  # the console script; stderr a pipe, as in CI
    return subprocess.run([str(script), *map(str, args), "--data-dir", str(data_dir), "--offline"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_train_progress_lines_count_each_non_finite_step_once(mnist_data_dir, tmp_path):
    metrics = tmp_path / "m.jsonl"
    proc = _script("train", "--loss", "naive", "--input-scale", "255", "--steps", "200", "--log-every", "1",
                   "--metrics-out", metrics, data_dir=mnist_data_dir)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in metrics.read_text().splitlines()][:-1]  # the per-step ones
    bad = [r["step"] for r in records if r["nan_loss"] or r["inf_loss"] or r["nonfinite_grad"]]
    assert bad and len(bad) < 200 and any(r["nan_loss"] and r["nonfinite_grad"] for r in records)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("train: step")]
    assert len(lines) == 200
    counted = [int(re.search(r"(\d+) non-finite steps?", line)[1]) for line in lines]
    assert counted == [sum(1 for s in bad if s <= step) for step in range(1, 201)]


def test_compare_writes_a_line_per_run_on_a_stderr_that_is_not_a_terminal(mnist_data_dir):
    proc = _script("compare", "--scenarios", "tutorial,f16", "--steps", "5", "--train-limit", "500",
                   data_dir=mnist_data_dir)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("compare: run")]
    assert lines[0].startswith("compare: run 1/4 done (") and lines[-1].startswith("compare: run 4/4 done (")
    assert len(lines) == 4
    quiet = _script("compare", "--scenarios", "tutorial", "--steps", "5", "--train-limit", "500", "--quiet",
                    data_dir=mnist_data_dir)
    assert quiet.returncode == 0 and "compare: run" not in quiet.stderr
