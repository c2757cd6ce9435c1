"""`predict` through the command line: on test indices as evaluate scores them, on files and pictures of your
own, and bad input refused in one line."""

import gzip
import json

import numpy as np
import pytest

from mnist_cli.data.idx import encode_idx


@pytest.fixture(scope="module")
def tutorial_model(tmp_path_factory, mnist):
    """The tutorial's model after 200 steps, saved as `train --steps 200 --save` saves it."""
    from mnist_cli.settings import train_config
    from mnist_cli.train import run_session

    return run_session(mnist, train_config(steps=200)).save(tmp_path_factory.mktemp("predict") / "m.npz")


def test_predict_on_test_indices_matches_evaluate(cli, tutorial_model, mnist):
    from mnist_cli.model import Model
    from mnist_cli.scoring import predict_logits

    r = json.loads(cli("predict", str(tutorial_model), "--index", "0,7,2044", "--json").output)
    z = predict_logits(Model.load(tutorial_model), mnist.test_images[[0, 7, 2044]], 1.0)
    for row, i, zi in zip(r["predictions"], (0, 7, 2044), z):
        assert row["index"] == i and row["label"] == mnist.test_labels[i]
        assert row["predicted"] == int(np.argmax(zi)) == row["predicted_softmax"]
        assert sum(row["probabilities"]) == pytest.approx(1.0, abs=1e-5) and len(row["probabilities"]) == 10
    text = cli("predict", str(tutorial_model), "--index", "0").output
    assert "argmax(z)  argmax(p)" in text and f"      0      {mnist.test_labels[0]}" in text
    assert "data: " in text and "(verified MNIST)" in text


@pytest.mark.parametrize("suffix", [".npy", ".gz", ""])
def test_predict_on_a_file_of_your_own(cli, tutorial_model, mnist, tmp_path, suffix):
    images = mnist.test_images[:4].reshape(4, 28, 28)
    path = tmp_path / f"mine{suffix}"
    if suffix == ".npy":
        np.save(path, images.astype(np.float32))  # floats holding whole pixel values are fine
    else:
        data = encode_idx(images)
        path.write_bytes(gzip.compress(data) if suffix == ".gz" else data)
    mine = json.loads(cli("predict", str(tutorial_model), "--images", str(path), "--json").output)
    test = json.loads(cli("predict", str(tutorial_model), "--index", "0,1,2,3", "--json").output)
    assert [p["predicted"] for p in mine["predictions"]] == [p["predicted"] for p in test["predictions"]]
    assert all(p["label"] is None for p in mine["predictions"])


def test_predict_refuses_bad_input_in_one_line(cli, tutorial_model, tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 5)))
    for args, code, needle in ((["--index", "10000"], 2, "--index"), ([], 2, "--index / --images"),
                               (["--images", str(bad)], 1, "not 28x28 images"),
                               (["--images", str(tutorial_model)], 1, "give an IDX or .npy file"),
                               (["--index", "a,b"], 2, "comma-separated whole numbers")):
        r = cli("predict", str(tutorial_model), *args)
        assert r.exit_code == code and needle in r.output and "Traceback" not in r.output, (args, r.output)


def test_predict_on_a_picture_reads_it_as_mnist_draws_digits(cli, tutorial_model, mnist, tmp_path):
    """A 28x28 PNG of a test digit predicts exactly as its index does; the same digit drawn black on white
    at 56x56 is inverted and resized, and still read as a digit (a probability row that sums to 1)."""
    from PIL import Image

    digit = mnist.test_images[0].reshape(28, 28)
    Image.fromarray(digit).save(tmp_path / "seven.png")  # uint8 (28, 28): a grey-level picture
    Image.fromarray(255 - digit).resize((56, 56)).save(tmp_path / "drawn.png")
    mine = json.loads(cli("predict", str(tutorial_model), "--images", str(tmp_path / "seven.png"), "--json").output)
    test = json.loads(cli("predict", str(tutorial_model), "--index", "0", "--json").output)
    assert mine["predictions"][0]["probabilities"] == test["predictions"][0]["probabilities"]
    drawn = json.loads(cli("predict", str(tutorial_model), "--images", str(tmp_path / "drawn.png"), "--json").output)
    assert drawn["predictions"][0]["predicted"] == mnist.test_labels[0]  # inverted back to white on black
    assert abs(sum(drawn["predictions"][0]["probabilities"]) - 1) < 1e-5
    (tmp_path / "broken.png").write_bytes(b"not a png")
    r = cli("predict", str(tutorial_model), "--images", str(tmp_path / "broken.png"))
    assert r.exit_code == 1 and "cannot read it as a picture" in r.output and "Traceback" not in r.output
