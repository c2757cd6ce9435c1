"""Run ``mnist-softmax`` with a test dataset, for tests that need a real process (signals, concurrency).

    python tests/_cli.py SPEC.json|mnist download --data-dir DIR --mirror URL

SPEC.json holds a :class:`DatasetSpec` as a dict (``mnist`` means the real one). Either way the
dataset loses its built-in mirrors, so a test can never reach the internet. ``TEST_NO_LOCK=1``
disables the data directory lock, to show that atomic renames alone keep concurrent runs safe.
"""

import dataclasses
import json
import os
import sys

from mnist_cli.data import datasets, directory
from mnist_cli.data.datasets import DatasetSpec, FileSpec

spec_arg, *args = sys.argv[1:]
if spec_arg == "mnist":
    spec = datasets.MNIST_SPEC
else:
    with open(spec_arg) as f:
        doc = json.load(f)
    spec = DatasetSpec(doc["name"], tuple(FileSpec(**entry) for entry in doc["files"]), ())
datasets.MNIST_SPEC = dataclasses.replace(spec, mirrors=())
if os.environ.get("TEST_NO_LOCK"):
    directory.fcntl = None

from mnist_cli.cli import main  # noqa: E402  (after the dataset is replaced)

main(args, prog_name="mnist-softmax")
