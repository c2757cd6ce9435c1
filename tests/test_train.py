"""The ``train`` pipeline (mnist_cli.train): what it scores, and in which compute form."""

import numpy as np
import pytest

from mnist_cli.settings import train_config
from mnist_cli.train import run_session, split_validation


@pytest.mark.parametrize("form", [("float16", "mixed"), ("bfloat16", "pure"), ("float32", "pure")])
def test_validation_history_is_scored_in_the_runs_compute_form(mnist, form):
    """The last validation record scores the final parameters exactly as the final validation score does:
    a mixed-precision run's history was once computed in float32 while its final score was in float16."""
    dtype, precision = form
    config = train_config(dtype=dtype, precision=precision, steps=40, val_split=2000, train_limit=4000)
    s = run_session(mnist, config, log_every=20)
    history = s.summary["validation"]["history"]
    assert history[-1]["step"] == 40
    assert history[-1]["val_loss"] == s.summary["validation"]["loss"]
    assert history[-1]["val_accuracy"] == s.summary["validation"]["accuracy"]
    assert np.isfinite(history[-1]["val_loss"])


def test_validation_images_are_never_trained_on(mnist):
    config = train_config(val_split=10000, steps=50)
    images, labels, (val_images, val_labels) = split_validation(mnist, config)
    assert len(images) == 50000 and np.array_equal(val_images, mnist.train_images[50000:])
    s = run_session(mnist, config).summary
    assert s["n_train"] == 50000 and s["validation"]["n"] == 10000
