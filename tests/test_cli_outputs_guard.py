"""Output combinations that would destroy a file are refused before any training (issue 21, items 10-11).

Two outputs naming one file, an output onto a file of the data directory in use, and an output on stdout
beside the ``--json`` report all exit 2 before any data is loaded; ``--metrics-out /dev/stdout`` writes
through the process's own stdout, so a redirect keeps both the records and the report.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ("--steps", "5", "--train-limit", "500")


@pytest.mark.parametrize("flags", [("--save", "X", "--metrics-out", "X"), ("--metrics-out", "X", "--plot", "X.png"),
                                   ("--save", "X", "--plot", "link")])
def test_two_outputs_naming_one_file_are_refused_before_training(cli, tmp_path, flags):
    target = tmp_path / "X"
    (tmp_path / "link").symlink_to(target)
    if "X.png" in flags:  # the same file under two spellings: X.png and a symlink X to it
        target.symlink_to(tmp_path / "X.png")
    args = [str(tmp_path / f) if f in ("X", "X.png", "link") else f for f in flags]
    result = cli("train", *SMALL, *args, data_dir=tmp_path / "no-data")  # no data: refused before any load
    assert result.exit_code == 2, result.output
    assert "both name" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "no-data").exists() and not (tmp_path / "X.png").exists()


def test_save_onto_a_file_of_the_data_directory_in_use_is_refused(cli, mnist_data_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in os.listdir(mnist_data_dir):
        if name.endswith(".gz"):
            shutil.copy(mnist_data_dir / name, data / name)
    (data / "alias.gz").symlink_to(data / "t10k-labels-idx1-ubyte.gz")
    before = (data / "t10k-labels-idx1-ubyte.gz").read_bytes()
    for flag, name in (("--save", "t10k-labels-idx1-ubyte.gz"), ("--metrics-out", "train-images-idx3-ubyte"),
                       ("--save", ".mnist-softmax/stamps.json"), ("--save", "alias.gz")):
        result = cli("train", *SMALL, flag, data / name, data_dir=data)
        assert result.exit_code == 2, result.output
        assert "data directory's own" in result.output and "--data-dir" in result.output
    assert (data / "t10k-labels-idx1-ubyte.gz").read_bytes() == before
    result = cli("evaluate", data / "model.npz", "--plot", data / "t10k-labels-idx1-ubyte.gz", data_dir=data)
    assert result.exit_code == 2 and "data directory's own" in result.output
    assert cli("train", *SMALL, "--save", data / "model.npz", data_dir=data).exit_code == 0  # other names: fine


def _script(*args, stdout, data_dir):
    script = Path(sys.executable).with_name("mnist-softmax")  # the console script, with its real stdout
    return subprocess.run([str(script), *map(str, args), "--data-dir", str(data_dir), "--offline", "--quiet"],
                          stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=300)


def test_metrics_to_dev_stdout_redirected_to_a_file_keeps_records_and_report(mnist_data_dir, tmp_path):
    out = tmp_path / "out.txt"
    with open(out, "w") as fh:
        proc = _script("train", *SMALL, "--log-every", "1", "--metrics-out", "/dev/stdout", stdout=fh,
                       data_dir=mnist_data_dir)
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 5] and records[-1]["final"]
    assert any("test accuracy" in line for line in lines), lines  # the report is there too, after the records


def test_metrics_to_the_file_stdout_is_redirected_to_keeps_both(mnist_data_dir, tmp_path):
    out = tmp_path / "out.txt"
    with open(out, "w") as fh:
        proc = _script("train", *SMALL, "--metrics-out", out, stdout=fh, data_dir=mnist_data_dir)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert '"final": true' in text and "test accuracy" in text


def test_json_report_and_metrics_on_stdout_are_refused(mnist_data_dir, tmp_path):
    proc = _script("train", *SMALL, "--json", "--metrics-out", "/dev/stdout", stdout=subprocess.PIPE,
                   data_dir=mnist_data_dir)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "--metrics-out / --json" in proc.stderr and "Traceback" not in proc.stderr


def test_every_output_may_go_to_dev_null(mnist_data_dir):
    with open(os.devnull, "w") as null:
        proc = _script("train", *SMALL, "--json", "--save", os.devnull, "--metrics-out", os.devnull, stdout=null,
                       data_dir=mnist_data_dir)
    assert proc.returncode == 0, proc.stderr
