"""Full disks and output targets through the command line (issue 10): no temporary file outlives an error,
every error names the path and the option, a finished run still prints its report when only an output
failed, and devices, FIFOs and links are written, never replaced."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_cli.data.directory import DATA_DIR_ENV

pytestmark = pytest.mark.usefixtures("download_env")

LAUNCHER = Path(__file__).with_name("_cli.py")


def temp_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.name.endswith(".part")]


def test_full_data_dir_is_one_line_naming_it_and_leaves_no_temp_file(cli, tmp_path, tiny_mnist, full_disk):
    mirror = tiny_mnist.write(tmp_path / "mirror")
    data_dir = tmp_path / "data"
    full_disk("train-images-idx3-ubyte.gz")
    result = cli("download", "--mirror", mirror, data_dir=data_dir, offline=False)
    assert result.exit_code == 1
    assert result.output == (f"Error: Cannot write to the data directory {data_dir} (No space left on device "
                             f"(free some space)); choose another with --data-dir or {DATA_DIR_ENV}.\n")
    assert temp_files(tmp_path) == []


def test_full_disk_for_the_stamps_costs_only_their_speed(cli, tmp_path, tiny_mnist, full_disk):
    mirror = tiny_mnist.write(tmp_path / "mirror")
    full_disk("stamps.json")
    result = cli("download", "--mirror", mirror, data_dir=tmp_path / "data", offline=False)
    assert result.exit_code == 0 and "4 downloaded" in result.output, result.output
    assert temp_files(tmp_path) == []


def test_train_prints_its_report_when_only_save_failed(cli, tmp_path, tiny_mnist, full_disk):
    data_dir = tiny_mnist.write(tmp_path / "data")
    model = tmp_path / "model.npz"
    full_disk("model.npz")
    result = cli("train", "--steps", "3", "--batch-size", "5", "--save", model, data_dir=data_dir)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith("loss=fused") and any(line.startswith("  test accuracy") for line in lines)
    assert lines[-1] == (f"Error: cannot write {model}: No space left on device (free some space); "
                         "choose a writable --save path")
    assert not model.exists() and temp_files(tmp_path) == []


def test_compare_prints_its_report_when_only_plot_failed(cli, tmp_path, tiny_mnist, full_disk):
    data_dir = tiny_mnist.write(tmp_path / "data")
    plot = tmp_path / "map.png"
    full_disk("map.png")
    result = cli("compare", "--losses", "fused", "--lr", "0.5", "--steps", "2", "--batch-size", "5", "--plot", plot,
                 data_dir=data_dir)
    assert result.exit_code == 1
    assert "Conclusion:" in result.output and "1 run: training " in result.output  # the whole report, then the error
    assert result.output.splitlines()[-1] == (f"Error: cannot write {plot}: No space left on device (free some "
                                              "space); choose a writable --plot path")
    assert not plot.exists() and temp_files(tmp_path) == []


def test_metrics_out_onto_a_link_to_stdout_writes_to_stdout(tmp_path, tiny):
    data_dir = tiny.write(tmp_path / "data")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(dataclasses.asdict(tiny.spec)))
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")  # what /dev/stdout is
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNIST_SOFTMAX_")}
    cmd = [sys.executable, str(LAUNCHER), str(spec), "train", "--steps", "3", "--batch-size", "5", "--log-every", "1",
           "--metrics-out", str(link), "--data-dir", str(data_dir), "--offline", "--quiet"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert [r["step"] for r in records] == [1, 2, 3, 3] and records[-1]["final"] is True
    assert "test accuracy" in run.stdout
    assert link.is_symlink() and os.readlink(link) == "/proc/self/fd/1"
