"""The datasets, declared as data, and everything that gets them onto disk and into memory.

    from mnist_cli.data import load_mnist
    d = load_mnist()              # downloads and verifies MNIST first if it is missing
    d.train_images.shape, d.verified
    # -> ((60000, 784), True)

``datasets`` declares what to fetch (files, sizes, SHA-256, mirrors); ``idx`` decodes the IDX format;
``directory`` is the data directory (its lock, stamps, caches and verification); ``mirrors`` says where
files come from and how patiently to fetch; ``fetch`` gets one file from one mirror (http(s) or a
directory); ``download`` decides what to fetch, fails over between mirrors and reports
(:func:`ensure_mnist`); ``load`` reads the files into arrays (:func:`load_mnist`) and words the ``data:``
line of every report (:func:`~mnist_cli.data.load.describe_data`). Nothing here imports
``mnist_cli.engine`` or ``mnist_cli.report`` (``mnist_cli.report.download`` words the download report);
only ``download`` and ``fetch`` import ``requests``, and ``load`` imports them only when files must be
fetched.
"""

from mnist_cli.data.load import MNIST, load_mnist

__all__ = ["MNIST", "ensure_mnist", "load_mnist"]


def __getattr__(name):  # ensure_mnist imports requests (~0.1 s): only when asked for
    if name == "ensure_mnist":
        from mnist_cli.data.download import ensure_mnist

        return ensure_mnist
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
