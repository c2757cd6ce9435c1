"""`compare` through the command line, beside tests/test_compare.py: what a model with non-finite weights
is reported as, and a plot's format following its file name."""

import pytest
from conftest import compare_document


def test_compare_table_and_conclusion_say_na_for_nan_weights(cli):
    args = ("compare", "--input-scale", "255", "--steps", "20", "--train-limit", "2000")
    doc = compare_document(cli(*args, "--json").output)
    naive = next(s for s in doc["scenarios"])["runs"]["naive"]
    assert not naive["weights_finite"] and naive["accuracy_meaningful"] is False
    assert doc["scenarios"][0]["runs"]["fused"]["accuracy_meaningful"] is True
    text = cli(*args).output
    assert "n/a (non-finite weights)" in text
    assert f"{naive['test_accuracy']:.4f}" not in text
    assert "test accuracy n/a" in doc["conclusion"]


@pytest.mark.slow
def test_plot_format_follows_the_file_name(cli, tmp_path, monkeypatch):
    import mnist_cli.compare

    def never(*args, **kwargs):
        raise AssertionError("compare trained before the --plot name was checked")

    with monkeypatch.context() as m:
        m.setattr(mnist_cli.compare, "run_compare", never)
        r = cli("compare", "--smoke", "--plot", tmp_path / "map.jpg")
    assert r.exit_code == 2 and "must end in .png, .svg, .pdf" in r.output and "--plot" in r.output
    assert not (tmp_path / "map.jpg").exists()
    svg = tmp_path / "map.svg"  # a run of one step: what is drawn does not matter here, only its format
    r = cli("compare", "--losses", "fused", "--lr", "0.5", "--steps", "1", "--train-limit", "100", "--plot", svg)
    assert r.exit_code == 0, r.output
    assert svg.read_bytes().lstrip().startswith((b"<?xml", b"<svg"))
