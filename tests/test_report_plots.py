"""The compare figure drawn from the document (:func:`mnist_cli.report.plots.plot_compare`): the JSON as
a reader gets it, plus the per-step losses the document does not hold."""

import json
import subprocess
import sys

import pytest

from mnist_cli.compare import CompareConfig, run_compare, to_document
from mnist_cli.fileio import jsonable


def test_plot_compare_draws_from_the_json_document_and_the_curves(mnist, tmp_path):
    pytest.importorskip("matplotlib")
    from mnist_cli.report.plots import plot_compare

    cfg = CompareConfig(lrs=(0.5, 5.0), input_scales=(1, 255), seeds=(0, 1), steps=8, train_limit=500)
    result = run_compare(mnist.train_images, mnist.train_labels, mnist.test_images[:200], mnist.test_labels[:200], cfg)
    doc = json.loads(json.dumps(jsonable(to_document(result))))  # nothing but what the JSON holds
    curves = {(run.cell.label, run.loss): run.result.losses for run in result.runs}
    path = plot_compare(doc, tmp_path / "map.png", curves)
    assert path == tmp_path / "map.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 20_000  # panels and heat maps, not an empty canvas
    with pytest.raises(KeyError):  # a chosen cell's curves are needed: nothing is made up without them
        plot_compare(doc, tmp_path / "other.png", {})


def test_the_plots_do_not_import_a_pipeline():
    code = ("import sys, mnist_cli.report.plots; "
            "bad = [m for m in ('mnist_cli.compare', 'mnist_cli.engine', 'mnist_cli.train') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
