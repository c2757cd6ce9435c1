"""What the explanation of a non-finite run says (mnist_cli/forensics.py), beside tests/test_forensics.py:
overflow called overflow, and the culprit digit drawn from 2x2 blocks of its pixels."""

import warnings

import numpy as np

from mnist_cli.forensics import digit14
from mnist_cli.settings import train_config
from mnist_cli.train import run_session


def test_an_overflowing_product_is_explained_as_overflow(mnist):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no raw NumPy RuntimeWarning
        s = run_session(mnist, train_config(input_scale=1e30, steps=3), explain=True).summary
    e = s["explanation"]
    assert e["params_finite"] is True and not e["logits_finite"]
    assert "overflow, not underflow" in e["summary"] and "overflowed earlier" not in e["summary"]
    assert "earlier step" not in e["chain"]["loss"] and "overflowed inside the product" in e["chain"]["loss"]


def test_digit14_averages_2x2_blocks():
    img = np.zeros((28, 28), np.uint8)
    img[0:2, 0:2] = [[255, 255], [255, 253]]
    img[27, 27] = 4
    d = digit14(img.ravel())
    assert d[0][0] == 254 and d[13][13] == 1 and sum(map(sum, d)) == 255
