"""Pictures read as MNIST drew its digits (bounding box into 20x20 keeping the aspect ratio, centre of mass at the
centre of 28x28), checked on closed forms, on stroke drawings rendered with Pillow and on MNIST test digits pasted
at other sizes and places; `predict --plot` shows the 28x28 the model saw."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_cli.predict import _area_matrix, mnist_geometry, read_picture

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pictures.py"


@pytest.fixture(scope="module")
def pictures():
    """scripts/pictures.py, the README's measurement: its strokes and pasted digits are the ones tested here."""
    spec = importlib.util.spec_from_file_location("pictures", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory, mnist):
    from mnist_cli.settings import train_config
    from mnist_cli.train import run_session

    return run_session(mnist, train_config()).save(tmp_path_factory.mktemp("drawings") / "m.npz")


def _predict(model_path, x):
    from mnist_cli.model import Model
    from mnist_cli.scoring import predict_logits

    return np.argmax(predict_logits(Model.load(model_path), x, 1.0), axis=1)


def _seven(pictures, at, scale, width, size=200):
    """scripts/pictures.py's 7, black on white, its 100x100 box scaled by ``scale`` with its corner at ``at``."""
    from PIL import ImageDraw

    img = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(img)
    for line in pictures.STROKES[7]:
        draw.line([(at[0] + x * scale, at[1] + y * scale) for x, y in line], fill=0, width=width, joint="curve")
    return img


def test_area_resampling_is_the_block_mean_and_keeps_mass():
    r = _area_matrix(6, 3)
    np.testing.assert_allclose(r, [[.5, .5, 0, 0, 0, 0], [0, 0, .5, .5, 0, 0], [0, 0, 0, 0, .5, .5]])
    np.testing.assert_allclose(_area_matrix(7, 20).sum(axis=1), 1.0)
    np.testing.assert_allclose(_area_matrix(3, 2), [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])  # r = 1.5: overlaps


def test_geometry_fits_the_box_keeps_the_aspect_and_centres_the_mass():
    ink = np.zeros((300, 200))
    ink[40:120, 150:170] = 200.0  # an 80 x 20 bar, far from the centre
    out = mnist_geometry(ink).astype(np.float64)
    rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    assert (rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) == (20, 5)  # 80:20 fitted into 20x20 -> 20:5
    assert out.max() == 255
    mass = out.sum()
    cy, cx = out.sum(axis=1) @ np.arange(28) / mass, out.sum(axis=0) @ np.arange(28) / mass
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
    assert not mnist_geometry(np.zeros((50, 50))).any()


def test_mnist_digits_survive_the_round_trip(mnist):
    """Test digits already in MNIST's geometry come back (nearly) where they were."""
    for i in range(20):
        digit = mnist.test_images[i].reshape(28, 28).astype(np.float64)
        again = mnist_geometry(digit).astype(np.float64)
        assert np.abs(again - digit).mean() < 25, i  # resampled 20 -> 20 and re-centred by at most a pixel


def test_stroke_drawings_are_read_as_drawn(cli, tutorial, pictures, tmp_path):
    """Black-on-white strokes on 200x200 at random size and place (scripts/pictures.py's 100, a pen about as thick
    for its size as MNIST's): the tutorial model reads at least 95 of them; through the command line, a few."""
    drawings, labels = pictures.strokes(np.random.default_rng(0))
    seen = np.array([_saved(img, tmp_path) for img in drawings])
    assert np.mean(_predict(tutorial, seen) == np.array(labels)) >= 0.95
    for k in (0, 15, 47, 72):  # a 0, a 1, a 4, a 7
        drawings[k].save(tmp_path / "d.png")
        r = json.loads(cli("predict", tutorial, "--images", tmp_path / "d.png", "--json").output)
        assert r["predictions"][0]["predicted"] == labels[k], k


def _saved(img, tmp_path) -> np.ndarray:
    img.save(tmp_path / "p.png")
    return read_picture(tmp_path / "p.png")[0]


def test_mnist_test_digits_as_bigger_pictures(tutorial, pictures, mnist, tmp_path):
    """The first 200 test digits, black on white, scaled and pasted anywhere on 100x100 or 200x200: read nearly
    as well as the 28x28 originals (a picture resized whole is read at about chance: scripts/pictures.py)."""
    rng = np.random.default_rng(1)
    n = 200
    base = np.mean(_predict(tutorial, mnist.test_images[:n]) == mnist.test_labels[:n])
    for size in (100, 200):
        seen = np.array([_saved(img, tmp_path) for img in pictures.pasted(mnist, n, size, rng)])
        acc = np.mean(_predict(tutorial, seen) == mnist.test_labels[:n])
        assert acc >= base - 0.04, (size, acc, base)


def test_a_28x28_picture_is_taken_as_it_is(mnist, tmp_path):
    Image.fromarray(mnist.test_images[3].reshape(28, 28)).save(tmp_path / "d.png")
    np.testing.assert_array_equal(read_picture(tmp_path / "d.png")[0], mnist.test_images[3])


def test_predict_plot_shows_what_the_model_saw(cli, tutorial, pictures, mnist, tmp_path, monkeypatch):
    import mnist_cli.report.plots as plots

    figures = []
    save = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda plt, fig, path: (figures.append(fig), save(plt, fig, path))[1])
    _seven(pictures, (120, 110), 0.7, 12).save(tmp_path / "seven.png")
    r = cli("predict", tutorial, "--images", tmp_path / "seven.png", "--plot", tmp_path / "seen.png")
    assert r.exit_code == 0 and "Wrote plot: " in r.output and (tmp_path / "seen.png").read_bytes()[:4] == b"\x89PNG"
    shown = figures[-1].get_axes()[0].images[0].get_array()
    np.testing.assert_array_equal(np.asarray(shown).reshape(784), read_picture(tmp_path / "seven.png")[0])
    assert "read as 7" in figures[-1].get_axes()[0].get_title()
    r = cli("predict", tutorial, "--index", "0,1,2", "--plot", tmp_path / "t.png")
    panels = [ax for ax in figures[-1].get_axes() if ax.images]
    assert r.exit_code == 0 and len(panels) == 3
    for ax, i in zip(panels, (0, 1, 2)):
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()).reshape(784), mnist.test_images[i])
    bad = cli("predict", tutorial, "--index", "0", "--plot", tmp_path / "t.jpg")
    assert bad.exit_code == 2 and "--plot" in bad.output
