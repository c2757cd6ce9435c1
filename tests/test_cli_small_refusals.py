"""The smaller inputs of issue 21 item 16: each refused in one line naming the right flag, or handled."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ("--steps", "5", "--train-limit", "500")


def test_compare_lr_0_says_it_is_not_a_positive_number(cli):
    result = cli("compare", "--lr", "0", data_dir=None)
    assert result.exit_code == 2 and "'0' is not a positive finite number" in result.output


def test_a_val_split_that_leaves_too_few_examples_is_blamed_on_val_split(cli):
    result = cli("train", "--val-split", "59950", "--steps", "5")
    assert result.exit_code == 2 and "--val-split" in result.output.split(":")[1], result.output


@pytest.mark.parametrize("mirror, said", [("ftp://x", "unsupported scheme 'ftp'"),
                                          ("file://otherhost/mnist", "names the host 'otherhost'")])
def test_train_refuses_a_mirror_download_refuses_even_with_the_files_present(cli, mirror, said):
    result = cli("train", *SMALL, "--mirror", mirror)
    assert result.exit_code == 1 and said in result.output, result.output


@pytest.mark.parametrize("flags, said", [(("--format", "csv", "--json"), "choose one"),
                                         (("--loss-scale", "dynamic", "--dtype", "float32"), "mixed-precision cells")])
def test_compare_refuses_flags_that_would_be_ignored(cli, flags, said):
    result = cli("compare", *SMALL, *flags, data_dir=None)
    assert result.exit_code == 2 and said in result.output, result.output


def test_images_given_twice_is_refused_not_half_ignored(cli, tmp_path):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    a.write_bytes(b"x")
    b.write_bytes(b"x")
    result = cli("predict", tmp_path / "m.npz", "--images", a, "--images", b, data_dir=None)
    assert result.exit_code == 2 and "given 2 times" in result.output


def test_a_legal_254_character_output_name_is_written(cli, tmp_path):
    name = "m" * 250 + ".npz"
    result = cli("train", *SMALL, "--save", tmp_path / name)
    assert result.exit_code == 0, result.output
    assert (tmp_path / name).is_file() and not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_evaluate_shows_model_metadata_escaped_not_obeyed(cli, tmp_path):
    from mnist_cli.model import Model

    path = tmp_path / "m.npz"
    assert cli("train", *SMALL, "--save", path).exit_code == 0
    model = Model.load(path)
    model.meta["provenance"]["cpu"] = "\x1b]0;owned\x07\x9b31m CPU"
    model.meta["mnist_softmax_version"] = "1.0\x1b[2J"
    model.save(path)
    result = cli("evaluate", path)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x9b" not in result.output and "\x07" not in result.output
    assert "\\x1b]0;owned" in result.output


def test_the_help_words_the_exit_code_of_a_bad_environment_variable(cli):
    bad = cli("download", env={"MNIST_SOFTMAX_RETRIES": "abc"}, offline=False)
    assert bad.exit_code == 1 and "MNIST_SOFTMAX_RETRIES='abc'" in bad.output
    text = " ".join(cli("--help", data_dir=None, offline=False, quiet=False).output.split())
    assert "1 an error (one line saying what and how to fix it; a bad environment variable" in text


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_writing_to_a_fifo_with_no_reader_says_it_is_waiting(mnist_data_dir, tmp_path):
    fifo = tmp_path / "metrics.fifo"
    os.mkfifo(fifo)
    script = Path(sys.executable).with_name("mnist-softmax")
    proc = subprocess.Popen([str(script), "train", *SMALL, "--metrics-out", str(fifo), "--data-dir",
                             str(mnist_data_dir), "--offline", "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = proc.stderr.readline()  # the notice comes before the (blocking) open
        assert line.startswith(f"waiting for a reader on {fifo}"), line
        with open(fifo) as reader:
            records = reader.read()
        assert proc.wait(timeout=120) == 0
        assert '"final": true' in records
    finally:
        if proc.poll() is None:
            proc.kill()
            time.sleep(0.1)
