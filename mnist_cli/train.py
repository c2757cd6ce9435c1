"""One ``train`` session as the CLI runs it: train, evaluate, explain, and the report of it all.

    from mnist_cli.data import load_mnist
    from mnist_cli.settings import train_config
    report = run_session(load_mnist(), train_config(loss="naive", input_scale=255), explain=True)
    report.summary["nan"]["first_nan_loss_step"], report.summary["explanation"]["step"]
    # -> (2, 2)

:func:`run_session` is the library entry point behind ``mnist-softmax train``: it returns a
:class:`Session` whose ``summary`` is the ``train --json`` document (training, accuracies, NaN
accounting, explanation, provenance, data), whose ``records`` are the per-step metrics, and which
can save the model (:meth:`Session.save`) and write the metrics (:meth:`Session.write_metrics`), both
atomically.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mnist_cli.engine import TrainResult, train
from mnist_cli.engine.base import emulated_framework, loss_dtype, with_policy
from mnist_cli.fileio import atomic_write, jsonable
from mnist_cli.frameworks import profile
from mnist_cli.losses import underflow_limit
from mnist_cli.scoring import score
from mnist_cli.settings import TrainConfig, changed_settings, held_out, train_config, val_count


def session_config(preset: str = "tutorial", **settings) -> TrainConfig:
    """:func:`mnist_cli.settings.train_config`'s validated settings with the mixed policy named and checked against
    the framework profile (:func:`mnist_cli.engine.base.with_policy`): refused before any data is read."""
    return with_policy(train_config(preset, **settings))


def train_summary(result: TrainResult, test_accuracy: float, train_accuracy: float, n_test: int, n_train: int,
                  accuracy_meaningful: bool = True) -> dict:
    """The report of one training run (``train --json``); ``accuracy_meaningful`` is False when a logit
    was non-finite (the accuracies then only count the labels that are 0)."""
    steps_per_s = result.steps / result.seconds if result.seconds > 0 else None
    return {
        "config": asdict(result.config),
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "test_accuracy": test_accuracy,
        "train_accuracy": train_accuracy,
        "accuracy_meaningful": accuracy_meaningful,
        "n_test": n_test,
        "n_train": n_train,
        "final_loss": result.final_loss,
        "nan": result.nan.to_dict(),
        "underflow_limit": underflow_limit(loss_dtype(result.config), result.config.framework),
        "loss_dtype": loss_dtype(result.config),  # where softmax and the loss computed (the mixed policy's)
        "framework": profile(result.config.framework).describe(),
        "seconds": result.seconds,
        "steps_per_second": steps_per_s,
        "provenance": result.model.meta["provenance"],
    }


@dataclass
class Session:
    """A finished ``train`` session: the run, its ``train --json`` summary and its per-step records."""

    result: TrainResult
    summary: dict
    records: list[dict] = field(default_factory=list)
    checksums: dict = field(default_factory=dict)  # the dataset's, for the model's metadata

    def save(self, path: str | Path) -> Path:
        """Write the model with every setting, the NaN summary, the accuracy, the dataset's checksums
        and the provenance in its metadata (atomically); the path goes into ``summary["saved"]``."""
        from mnist_cli import __version__

        model = self.result.model
        model.meta.update(test_accuracy=self.summary["test_accuracy"], dataset_checksums=self.checksums,
                          dataset=self.summary["data"]["dataset"],
                          numpy_version=model.meta["provenance"]["numpy"], mnist_softmax_version=__version__)
        self.summary["saved"] = str(model.save(path))
        return Path(self.summary["saved"])

    def plot(self, path: str | Path) -> Path:
        """Draw the loss and accuracy curves (:func:`mnist_cli.report.plots.plot_training`) to ``path``; the path
        goes into ``summary["plot"]``."""
        from mnist_cli.report.plots import plot_training

        self.summary["plot"] = str(plot_training(path, self.summary, self.result.losses,
                                                 [r for r in self.records if "train_loss" in r]))
        return Path(self.summary["plot"])

    def write_metrics(self, path: str | Path, option: str = "{metrics_out} path") -> Path:
        """The records as JSONL, then a final record (step, loss, accuracies, provenance), atomically."""
        s = self.summary
        final = {"step": self.result.steps, "final": True, "loss": self.result.final_loss,
                 "train_loss": s.get("train_loss"),
                 "test_accuracy": s["test_accuracy"], "train_accuracy": s["train_accuracy"],
                 "accuracy_meaningful": s["accuracy_meaningful"], "provenance": s["provenance"]}
        with atomic_write(path, option) as fh:
            fh.write("".join(json.dumps(jsonable(r)) + "\n" for r in [*self.records, final]).encode())
        return Path(path)


def run_session(data, config: TrainConfig, *, explain: bool = False, log_every: int = 0,
                progress: Callable[[int, float, int], None] | None = None, preset: str = "tutorial",
                progress_every: int = 10, history: bool = False, checkpoint_every: int = 0, save_path=None) -> Session:
    """Train ``config`` on ``data`` (a :class:`mnist_cli.data.MNIST`), score it on the test set and on
    the training examples it used, and explain its first non-finite step when ``explain``.

    ``progress(step, loss, nonfinite_steps)`` is called every ``progress_every`` steps; a record is kept every
    ``log_every`` steps (0 = none); ``preset`` is the name the settings started from (for the report).
    ``history`` scores the current parameters on the training examples at each epoch's end and every
    ``log_every`` steps even without a validation split (for :meth:`Session.plot`).
    The summary's ``final_loss`` is the last mini-batch's; ``train_loss`` and ``test_loss`` are the mean
    cross-entropy of the final parameters over all the training examples used and the test set.
    ``checkpoint_every`` N writes the current model every N epochs to :func:`checkpoint_name` of
    ``save_path``, atomically. Raises :class:`mnist_cli.errors.SettingsError` for settings that cannot
    work with this data (e.g. a batch larger than the training set).
    """
    records: list[dict] = []
    images, labels, val = split_validation(data, config)
    n_train = min(len(images), config.train_limit or len(images))
    monitor = _monitor(images[:n_train], labels[:n_train], val, config) if val or history else None
    on_epoch = _checkpoints(config, checkpoint_every, save_path, data.checksums) if checkpoint_every else None
    result = train(images, labels, config, progress=progress, progress_every=progress_every,
                   on_log=lambda step, record: records.append(record),
                   log_every=log_every, monitor=monitor, on_epoch=on_epoch)
    scored = _scored(config)
    test = score(result.model, data.test_images, data.test_labels, config.input_scale, **scored)
    fit = score(result.model, images[:n_train], labels[:n_train], config.input_scale, **scored)
    summary = train_summary(result, test_accuracy=test.accuracy, train_accuracy=fit.accuracy,
                            n_test=len(data.test_labels), n_train=n_train,
                            accuracy_meaningful=test.meaningful and fit.meaningful)
    summary.update(train_loss=fit.loss, test_loss=test.loss, preset=preset,
                   changed=changed_settings(result.config, preset))
    if "early_stop" in result.extras:  # --early-stop: which step the kept parameters came from
        summary["early_stop"] = result.model.meta["early_stop"] = result.extras["early_stop"]
    if on_epoch is not None:
        summary["checkpoints"] = on_epoch.written
    if "parent" in result.model.meta:  # train --init-from: what it continued, and the steps in all
        summary.update(parent=result.model.meta["parent"], steps_total=result.model.meta["steps_total"])
    if val:
        held = score(result.model, *val, config.input_scale, **scored)
        where = held_out(config.val_split, len(data.train_images))
        result.model.meta["validation"] = where  # evaluate --split val scores the same images
        summary["validation"] = {**where, "loss": held.loss, "accuracy": held.accuracy,
                                 "history": [r for r in records if "val_loss" in r]}
    summary["data"] = data.where
    if explain:
        from mnist_cli.forensics import explain_result

        summary["explanation"] = explain_result(result, config.dtype, config.loss, images)
    return Session(result, summary, records, data.checksums)


def checkpoint_name(save_path, epoch: int) -> Path:
    """``MODEL-epoch003.npz`` beside ``MODEL.npz``: the name ``train --checkpoint-every`` writes epoch 3 to."""
    path = Path(save_path)
    return path.with_name(f"{path.stem}-epoch{epoch:03d}{path.suffix}")


def _checkpoints(config: TrainConfig, every: int, save_path, checksums: dict):
    """The ``on_epoch`` callback of :func:`mnist_cli.engine.train` that saves the current model every ``every``
    epochs (:meth:`Model.save`: atomic), its metadata the run's settings, the steps so far and the epoch;
    ``.written`` lists the paths."""
    from mnist_cli import __version__
    from mnist_cli.model import Model

    def on_epoch(epoch: int, step: int, W, b) -> None:
        if epoch % every == 0:
            model = Model(W, b, compute_dtype=config.dtype, precision=config.precision)
            model.meta = {"config": asdict(config), "steps": step, "checkpoint": {"epoch": epoch, "step": step},
                          "dataset_checksums": checksums, "mnist_softmax_version": __version__}
            on_epoch.written.append(str(model.save(checkpoint_name(save_path, epoch))))

    on_epoch.written = []
    return on_epoch


def split_validation(data, config: TrainConfig):
    """``(train images, train labels, (validation images, labels) or ())``: the last images of
    :func:`held_out` kept for validation (as TF's ``input_data`` held out 5,000 of 60,000, and Keras's
    ``validation_split`` the last fraction, before any shuffling), the rest to train on."""
    if not config.val_split:
        return data.train_images, data.train_labels, ()
    cut = held_out(config.val_split, len(data.train_images))["start"]
    return data.train_images[:cut], data.train_labels[:cut], (data.train_images[cut:], data.train_labels[cut:])


def _scored(config: TrainConfig) -> dict:
    """How :func:`mnist_cli.scoring.score` scores a run's parameters: in the run's own arithmetic (its profile's
    logits, :func:`mnist_cli.engine.base.emulated_framework`), on its threads."""
    return {"threads": config.threads, "framework": emulated_framework(config)}


def _monitor(train_images, train_labels, val: tuple, config: TrainConfig):
    """The ``monitor`` of :func:`mnist_cli.engine.train`: loss and accuracy of the current parameters on
    the training examples used and on the held-out ones ``val`` = (images, labels), if any."""
    from mnist_cli.model import Model

    scored = _scored(config)

    def monitor(step: int, W, b) -> dict:
        model = Model(W, b, compute_dtype=config.dtype, precision=config.precision)  # as the run computes
        fit = score(model, train_images, train_labels, config.input_scale, **scored)
        out = {"train_loss": fit.loss, "train_accuracy": fit.accuracy}
        if val:
            held = score(model, *val, config.input_scale, **scored)
            out.update(val_loss=held.loss, val_accuracy=held.accuracy)
        return out

    return monitor


def total_steps(config: TrainConfig, n_examples: int) -> int:
    """How many steps ``config`` takes on ``n_examples`` training examples (for a progress bar)."""
    n_examples = max(n_examples - val_count(config.val_split, n_examples), 1)
    n = min(n_examples, config.train_limit or n_examples)
    per_epoch = 1 if config.full_batch else n // config.batch_size
    return config.epochs * per_epoch if config.epochs else config.steps
