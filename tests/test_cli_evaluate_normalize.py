"""`evaluate --normalize true|pred|all` and the confusion-matrix panel of `evaluate --plot`: the counts divided as
scikit-learn's confusion_matrix(normalize=...) divides them, in --json, in the text and in the picture."""

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, mnist):
    from mnist_cli.settings import train_config
    from mnist_cli.train import run_session

    return run_session(mnist, train_config(steps=100)).save(tmp_path_factory.mktemp("normalize") / "m.npz")


@pytest.mark.parametrize(("how", "axis"), [("true", 1), ("pred", 0), ("all", None)])
def test_normalized_matrix_divides_the_counts(cli, model_path, how, axis):
    r = cli("evaluate", str(model_path), "--normalize", how, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    counts = np.array(doc["confusion_matrix"], dtype=np.float64)
    got = np.array(doc["confusion_normalized"]["matrix"])
    assert doc["confusion_normalized"]["normalize"] == how
    np.testing.assert_allclose(got, counts / counts.sum(axis=axis, keepdims=axis is not None), rtol=1e-15)
    np.testing.assert_allclose(got.sum(axis=axis), 1.0, rtol=1e-12)  # every class has examples and predictions


def test_text_shows_the_fractions_and_says_what_they_are_over(cli, model_path):
    doc = json.loads(cli("evaluate", str(model_path), "--normalize", "true", "--json").output)
    text = cli("evaluate", str(model_path), "--normalize", "true").output
    assert ("confusion matrix (rows: true class, columns: predicted), normalized over each true class (each row "
            "sums to 1):") in text
    row0 = doc["confusion_normalized"]["matrix"][0]
    assert "   0 " + " ".join(f"{v:5.3f}" for v in row0) in text
    plain = cli("evaluate", str(model_path)).output
    assert "normalized" not in plain and "   0 " + " ".join(f"{v:5d}" for v in doc["confusion_matrix"][0]) in plain
    bad = cli("evaluate", str(model_path), "--normalize", "rows")
    assert bad.exit_code == 2 and "--normalize" in bad.output


@pytest.mark.parametrize("how", [None, "pred"])
def test_plot_has_a_confusion_matrix_panel(cli, model_path, tmp_path, monkeypatch, how):
    """The panel draws the matrix the report shows (counts, or normalized), each cell's value written in it."""
    import mnist_cli.report.plots as plots

    figures = []
    save = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda plt, fig, path: (figures.append(fig), save(plt, fig, path))[1])
    png = tmp_path / "e.png"
    r = cli("evaluate", str(model_path), "--plot", png, "--json", *(["--normalize", how] if how else []))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    shown = np.array(doc["confusion_normalized"]["matrix"] if how else doc["confusion_matrix"], dtype=np.float64)
    panels = [ax for ax in figures[0].get_axes() if ax.get_title().startswith("confusion matrix")]
    assert len(panels) == 1 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(panels[0].images[0].get_array(), shown)
    cells = [t.get_text() for t in panels[0].texts]
    assert len(cells) == 100 and cells[0] == (f"{shown[0, 0]:.2f}" if how else str(int(shown[0, 0])))
    assert panels[0].get_xlabel() == "predicted label" and panels[0].get_ylabel() == "true label"
