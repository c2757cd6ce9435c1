"""Plots of a NaN model or run say what is missing, as the text report does (issue 21, item 3)."""

import matplotlib
import numpy as np
import pytest

from mnist_cli.model import Model

pytest.importorskip("matplotlib")


@pytest.fixture
def svg_text(monkeypatch):
    """Figures saved as SVG keep their text as text, so a test can read what a figure says."""
    monkeypatch.setitem(matplotlib.rcParams, "svg.fonttype", "none")
    return lambda path: path.read_text()


def test_evaluate_plot_of_nan_weights_says_non_finite_and_n_a(cli, tmp_path, svg_text):
    model = tmp_path / "nan.npz"
    Model(np.full((784, 10), np.nan, np.float32), np.zeros(10, np.float32)).save(model)
    figure = tmp_path / "t.svg"
    result = cli("evaluate", model, "--plot", figure)
    assert result.exit_code == 0, result.output
    text = svg_text(figure)
    assert "non-finite weights: 7840 of 7840" in text and "test accuracy n/a (non-finite weights)" in text
    assert "|W| up to" not in text and "most confident mistakes" not in text
    assert "accuracy nan" not in text.lower()


def test_train_plot_of_a_nan_run_says_why_its_curves_are_missing(cli, tmp_path, svg_text):
    figure = tmp_path / "c.svg"
    result = cli("train", "--loss", "naive", "--input-scale", "255", "--steps", "20", "--train-limit", "500",
                 "--log-every", "5", "--plot", figure)
    assert result.exit_code == 0, result.output
    text = svg_text(figure)
    assert "no accuracy curve: the parameters were non-finite at every scored step" in text
