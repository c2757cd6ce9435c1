"""Mini-batch SGD for softmax regression, with honest NaN accounting.

    from mnist_cli.data import load_mnist
    d = load_mnist()
    r = train(d.train_images, d.train_labels, TrainConfig(loss="naive", input_scale=255))
    r.nan.first_nan_loss_step
    # -> 2

The loop reproduces TensorFlow r1.4's ``mnist_softmax.py``: ``W`` and ``b`` start at zero, each step
takes 100 examples, ``z = x @ W + b``, a loss from :data:`mnist_cli.losses.LOSSES` gives
``(loss, dL/dz)``, and ``W -= lr * x.T @ dL/dz``, ``b -= lr * sum(dL/dz)``. Nothing stops at NaN (as
in TF); every non-finite loss, gradient and parameter is counted and the first step of each kept.
With ``stop_on_nan`` the first step whose loss or gradient is non-finite is counted but its update is
not applied: the run ends with the parameters of the last healthy step.

:func:`train` runs the schedule (epochs, learning-rate decay, averaging, callbacks); a step is taken
by an engine: :class:`PlainSGD` writes it as above, one NumPy call per formula, and
:func:`mnist_cli.engine.fast.fast_engine` (the default) computes the same in fewer calls. Both hand every
step they cannot prove healthy to the same exact accounting (:class:`Accounting`), which alone
decides whether a step halts the run. The contract between :func:`train` and an engine is :class:`Engine`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from mnist_cli.engine.base import (
    Accounting,
    Engine,
    TrainResult,
    _epochs,
    build_result,
    consumed_digest,
    initial_model,
    master_dtype,
    step_record,
)
from mnist_cli.engine.plain import PlainSGD
from mnist_cli.errors import SettingsError
from mnist_cli.losses import LOSSES
from mnist_cli.model import N_CLASSES
from mnist_cli.rounding import DTYPES, is_half
from mnist_cli.settings import TrainConfig, check_steps
from mnist_cli.threads import blas_kernel, blas_pinned


class _Average:
    """The average of the iterates after step ``start`` (Polyak-Ruppert), or none when not ``on``."""

    def __init__(self, on: bool, start: int):
        self.on, self.start = on, start
        self.sum, self.n = None, 0

    def add(self, step: int, params: np.ndarray) -> None:
        if self.on and step > self.start:
            self.n += 1
            if self.sum is None:
                self.sum = params.copy()
            else:
                self.sum += params

    def result(self, last: np.ndarray) -> np.ndarray:
        return self.sum / self.n if self.sum is not None else last


class _Hooks:
    """The callbacks of a run, called after every step: ``progress`` every ``progress_every`` steps,
    ``on_log`` every ``log_every`` steps, ``monitor(step, W, b)`` at each epoch's end and every
    ``log_every`` steps (its dict joins the step's record)."""

    def __init__(self, engine: Engine, acct: Accounting, progress, progress_every: int, on_log, log_every: int,
                 monitor, per_epoch: int):
        self.engine, self.acct, self.per_epoch = engine, acct, per_epoch
        self.progress, self.progress_every = progress, progress_every
        self.on_log, self.log_every, self.monitor = on_log, log_every, monitor

    def __call__(self, step: int, loss: float) -> None:
        if self.progress is not None and step % self.progress_every == 0:
            self.progress(step, loss, self.acct.nonfinite_steps)
        logged = bool(self.log_every) and step % self.log_every == 0
        record = step_record(step, loss, self.acct) if logged or (self.monitor and step % self.per_epoch == 0) else None
        if self.monitor is not None and record is not None:
            record.update(epoch=step / self.per_epoch,
                          **self.monitor(step, *self.engine.export(self.engine.params)))
        if self.on_log is not None and record is not None:
            self.on_log(step, record)


def _schedule(engine: Engine, acct: Accounting, config: TrainConfig, n: int, steps: int, order_rng,
              hooks: _Hooks) -> tuple[np.ndarray, int, bool, np.ndarray, str]:
    """Run ``steps`` steps of ``engine`` over seeded epochs: learning-rate decay, averaging, callbacks,
    stop on NaN. Returns ``(losses, steps done, stopped, final params, digest of what the engine consumed)``."""
    per_epoch = n // config.batch_size
    losses = np.empty(steps, dtype=np.float64)
    order_hash = hashlib.sha256()
    average = _Average(config.average, steps - per_epoch * config.average_epochs)
    lr = DTYPES["float32" if is_half(config.dtype) else config.dtype].type(config.lr)  # half: float32 opmath
    stopped, step = False, 0
    for perm, count in _epochs(n, config.batch_size, steps, order_rng):
        engine.begin_epoch(perm, count)
        done = count
        for j in range(count):
            step += 1
            loss, bad = engine.step(step, j, lr)
            acct.steps_done = step  # what an interrupted run reports
            losses[step - 1] = loss
            if bad and not acct.nan.params_nonfinite:
                acct.check_params(step, engine.finite())
            halt = acct.halts(bad)  # the engine did not apply this step's update: the run ends here
            if not halt:
                average.add(step, engine.params)
            hooks(step, loss)
            if halt:
                stopped, done = True, j + 1
                break
        consumed_digest(order_hash, *engine.consumed(done))  # the examples the engine read, step by step
        if stopped:
            break
        if step % per_epoch == 0 and config.lr_decay != 1.0:
            lr = lr.dtype.type(lr * config.lr_decay)
    acct.check_params(step, engine.finite())  # overflow without a flagged step (never seen)
    return losses[:step], step, stopped, average.result(engine.params), order_hash.hexdigest()


def train(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    config: TrainConfig,
    *,
    progress: Callable[[int, float, int], None] | None = None,
    progress_every: int = 10,
    on_log: Callable[[int, dict], None] | None = None,
    log_every: int = 0,
    monitor: Callable[[int, np.ndarray, np.ndarray], dict] | None = None,
) -> TrainResult:
    """Run SGD on uint8 ``train_images`` (n, 784) and ``train_labels`` (n,) with ``config``.

    ``progress(step, loss, nonfinite_steps)`` is called every ``progress_every`` steps;
    ``on_log(step, record)`` every ``log_every`` steps (0 = never) with the step's loss and flags;
    with ``monitor(step, W, b) -> dict`` (e.g. validation metrics of the current parameters), also at
    every epoch's end, the monitor's dict and the ``epoch`` joining the record.
    BLAS runs on one thread (:func:`mnist_cli.threads.blas_pinned`); ``config.threads`` of the tool's own
    share out large batches, and no number depends on them.
    """
    config.validate()
    if config.train_limit is not None:
        train_images, train_labels = train_images[: config.train_limit], train_labels[: config.train_limit]
    n = train_images.shape[0]
    if config.full_batch:
        config = replace(config, batch_size=n)
    if n < config.batch_size:
        held = f" left after {{val_split}} held out {config.val_split}" if config.val_split else ""
        raise SettingsError(("batch_size", "train_limit", *(("val_split",) if config.val_split else ())),
                            f"batch size {config.batch_size} is larger than the {n} training examples{held}")
    steps = config.epochs * (n // config.batch_size) if config.epochs is not None else config.steps
    check_steps(steps)
    if config.average and config.average_epochs * (n // config.batch_size) > steps:
        raise SettingsError(("average_epochs", "steps"),
                            f"averaging over the last {config.average_epochs} epochs takes "
                            f"{config.average_epochs * (n // config.batch_size):,} steps of {n // config.batch_size} "
                            f"per epoch, but the run has {steps:,}: lower {{average_epochs}} or raise {{steps}}")

    model, init_digest, order_rng = initial_model(config, train_images.shape[1], N_CLASSES)
    acct = Accounting(master_dtype(config), N_CLASSES, steps, config.stop_on_nan)  # the dtype the loss computes in
    engine = _engine(train_images, train_labels.astype(np.intp), model, config, acct)

    t0 = time.perf_counter()
    try:
        with np.errstate(all="ignore"), blas_pinned():
            hooks = _Hooks(engine, acct, progress, progress_every, on_log, log_every, monitor, n // config.batch_size)
            losses, step, stopped, params, order_digest = _schedule(engine, acct, config, n, steps, order_rng, hooks)
    except KeyboardInterrupt as exc:  # Ctrl-C: say what was done (the CLI prints it)
        exc.done = {"command": "train", "steps": acct.steps_done, "of": steps, "nan": acct.nan.to_dict()}
        raise
    finally:
        engine.close()
    seconds = time.perf_counter() - t0

    W, b = (np.array(a) for a in engine.export(params))
    return build_result(config, W, b, acct, losses, seconds, order_digest, init_digest, stopped=stopped)


def _engine(images: np.ndarray, labels: np.ndarray, model, config: TrainConfig, acct: Accounting) -> Engine:
    """The engine of ``config``: the half-precision one for float16/bfloat16, else the fast step (or, with
    ``fast=False``, the plain reference loop), each taking its steps with the run's loss record."""
    loss = LOSSES[config.loss]
    if is_half(config.dtype):
        from mnist_cli.engine.half import LowPrecisionSGD

        return LowPrecisionSGD(images, labels, model, config, loss, acct)
    if config.fast:
        from mnist_cli.engine.fast import fast_engine

        return fast_engine(images, labels, model, config, loss, acct, kernel_name=blas_kernel())
    return PlainSGD(images, labels, model, config, loss, acct)
