"""One `train` session as a library call (mnist_cli/session.py): the validation split."""

import numpy as np

from mnist_cli.session import run_session, split_validation
from mnist_cli.settings import train_config


def test_validation_images_are_never_trained_on(mnist):
    config = train_config(val_split=10000, steps=50)
    images, labels, (val_images, val_labels) = split_validation(mnist, config)
    assert len(images) == 50000 and np.array_equal(val_images, mnist.train_images[50000:])
    s = run_session(mnist, config).summary
    assert s["n_train"] == 50000 and s["validation"]["n"] == 10000
