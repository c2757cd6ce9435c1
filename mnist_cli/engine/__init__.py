"""Training: the schedule (:func:`train`), the engines that take its steps, and what they share.

    from mnist_cli.engine import train
    r = train(images, labels, TrainConfig(loss="naive", input_scale=255))
    r.nan.first_nan_loss_step
    # -> 2

``base`` holds the contract every engine keeps (its "Conventions"), the NaN accounting, the step
record and the result; ``schedule`` the loop over epochs; ``plain``, ``fast``, ``half`` and
``stacked`` one engine each. Nothing here imports ``mnist_cli.report`` or a command pipeline.
"""

from mnist_cli.engine.base import (
    Accounting,
    BatchesTaken,
    NanReport,
    Snapshot,
    TrainResult,
    batch_order,
    consumed_digest,
    rngs,
    scale_pixels,
)
from mnist_cli.engine.schedule import train
from mnist_cli.settings import TrainConfig

__all__ = ["Accounting", "BatchesTaken", "NanReport", "Snapshot", "TrainConfig", "TrainResult", "batch_order",
           "consumed_digest", "rngs", "scale_pixels", "train"]
