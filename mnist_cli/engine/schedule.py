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
import math
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import numpy as np

from mnist_cli.engine.base import (
    Accounting,
    Engine,
    TrainResult,
    _epochs,
    build_result,
    consumed_digest,
    emulated_framework,
    initial_model,
    run_accounting,
    step_record,
    with_policy,
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


class _EarlyStop:
    """Keras's ``EarlyStopping(monitor="val_loss", patience, restore_best_weights=True)`` over the monitor's
    evaluations: an evaluation improves when its validation loss is finite, below the best so far
    (``min_delta`` 0) and the parameters are finite, and then its parameters are kept; after ``patience``
    evaluations in a row without one the run stops. A non-finite loss never improves, so a NaN run never
    becomes the best (with no finite evaluation there is nothing to restore: ``best`` stays None)."""

    def __init__(self, patience: int):
        self.patience, self.wait, self.evaluations = patience, 0, 0
        self.best, self.best_step, self.best_loss, self.stopped_at = None, None, math.inf, None

    def observe(self, step: int, val_loss: float, params: np.ndarray, finite: bool) -> bool:
        """Take one evaluation; True when the run should stop here."""
        self.evaluations += 1
        if finite and math.isfinite(val_loss) and val_loss < self.best_loss:
            self.best, self.best_step, self.best_loss, self.wait = params.copy(), step, val_loss, 0
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_at = step
        return self.stopped_at is not None

    def summary(self) -> dict:
        """``patience``, ``evaluations``, ``best_step`` and ``best_val_loss`` (None: no finite evaluation),
        ``stopped_at`` (None: the run took all its steps) and ``restored`` (whether the best was kept)."""
        return {"patience": self.patience, "evaluations": self.evaluations, "best_step": self.best_step,
                "best_val_loss": self.best_loss if self.best is not None else None, "stopped_at": self.stopped_at,
                "restored": self.best is not None}


class _Hooks:
    """The callbacks of a run, called after every step: ``progress`` every ``progress_every`` steps,
    ``on_log`` every ``log_every`` steps, ``monitor(step, W, b)`` at each epoch's end and every
    ``log_every`` steps (its dict joins the step's record, and its ``val_loss`` the ``early`` stop's
    evaluations), ``on_epoch(epoch, step, W, b)`` at each epoch's end. Returns True to stop the run."""

    def __init__(self, engine: Engine, acct: Accounting, progress, progress_every: int, on_log, log_every: int,
                 monitor, per_epoch: int, early: _EarlyStop | None = None, on_epoch=None):
        self.engine, self.acct, self.per_epoch = engine, acct, per_epoch
        self.progress, self.progress_every = progress, progress_every
        self.on_log, self.log_every, self.monitor = on_log, log_every, monitor
        self.early, self.on_epoch = early, on_epoch

    def __call__(self, step: int, loss: float) -> bool:
        if self.progress is not None and step % self.progress_every == 0:
            self.progress(step, loss, self.acct.nonfinite_steps)
        logged = bool(self.log_every) and step % self.log_every == 0
        record = step_record(step, loss, self.acct) if logged or (self.monitor and step % self.per_epoch == 0) else None
        if self.monitor is not None and record is not None:
            record.update(epoch=step / self.per_epoch,
                          **self.monitor(step, *self.engine.export(self.engine.params)))
        if self.on_log is not None and record is not None:
            self.on_log(step, record)
        if self.on_epoch is not None and step % self.per_epoch == 0:
            self.on_epoch(step // self.per_epoch, step, *self.engine.export(self.engine.params))
        if self.early is not None and record is not None and "val_loss" in record:
            return self.early.observe(step, record["val_loss"], self.engine.params, self.engine.finite())
        return False


def _schedule(engine: Engine, acct: Accounting, config: TrainConfig, n: int, steps: int, order_rng,
              hooks: _Hooks) -> tuple[np.ndarray, int, bool, np.ndarray, str]:
    """Run ``steps`` steps of ``engine`` over seeded epochs: learning-rate decay, averaging, callbacks,
    stop on NaN. Returns ``(losses, steps done, stopped, final params, digest of what the engine consumed)``."""
    per_epoch = n // config.batch_size
    losses = np.empty(steps, dtype=np.float64)
    order_hash = hashlib.sha256()
    average = _Average(config.average, steps - per_epoch * config.average_epochs)
    lr = DTYPES["float32" if is_half(config.dtype) else config.dtype].type(config.lr)  # half: float32 opmath
    stopped, ended, step = False, False, 0
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
            out_of_patience = hooks(step, loss)  # early stopping
            if halt or out_of_patience:
                stopped, ended, done = halt, True, j + 1
                break
        consumed_digest(order_hash, *engine.consumed(done))  # the examples the engine read, step by step
        if ended:
            break
        if step % per_epoch == 0 and config.lr_decay != 1.0:
            lr = lr.dtype.type(lr * config.lr_decay)
    acct.check_params(step, engine.finite())  # overflow without a flagged step (never seen)
    kept = hooks.early.best if hooks.early is not None and hooks.early.best is not None else None
    final = kept if kept is not None else average.result(engine.params)  # early stopping: the best evaluation's
    return losses[:step], step, stopped, final, order_hash.hexdigest()


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
    on_epoch: Callable[[int, int, np.ndarray, np.ndarray], None] | None = None,
) -> TrainResult:
    """Run SGD on uint8 ``train_images`` (n, 784) and ``train_labels`` (n,) with ``config``.

    ``progress(step, loss, nonfinite_steps)`` is called every ``progress_every`` steps;
    ``on_log(step, record)`` every ``log_every`` steps (0 = never) with the step's loss and flags;
    with ``monitor(step, W, b) -> dict`` (e.g. validation metrics of the current parameters), also at
    every epoch's end, the monitor's dict and the ``epoch`` joining the record. With ``config.early_stop``
    the monitor's ``val_loss`` decides when to stop and which parameters the result keeps (:class:`_EarlyStop`;
    ``result.extras["early_stop"]`` says which step they came from). ``on_epoch(epoch, step, W, b)`` is called
    at every epoch's end with the current parameters (``train --checkpoint-every``).
    BLAS runs on one thread (:func:`mnist_cli.threads.blas_pinned`); ``config.threads`` of the tool's own
    share out large batches, and no number depends on them.
    """
    config.validate()
    config = with_policy(config)  # the mixed policy followed, named (refused here if not the profile's)
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
    acct = run_accounting(config, steps, N_CLASSES)
    engine = _engine(train_images, train_labels.astype(np.intp), model, config, acct)

    t0 = time.perf_counter()
    try:
        with np.errstate(all="ignore"), blas_pinned():
            early = _EarlyStop(config.early_stop) if config.early_stop is not None else None
            if early is not None and monitor is None:
                raise SettingsError(("early_stop", "val_split"), "early stopping needs the validation loss: add {val_split}")
            hooks = _Hooks(engine, acct, progress, progress_every, on_log, log_every, monitor, n // config.batch_size,
                           early, on_epoch)
            losses, step, stopped, params, order_digest = _schedule(engine, acct, config, n, steps, order_rng, hooks)
    except KeyboardInterrupt as exc:  # Ctrl-C: say what was done (the CLI prints it)
        exc.done = {"command": "train", "steps": acct.steps_done, "of": steps, "nan": acct.nan.to_dict()}
        raise
    finally:
        engine.close()
    seconds = time.perf_counter() - t0

    W, b = (np.array(a) for a in engine.export(params))
    extras = {"early_stop": early.summary()} if early is not None else None
    return build_result(config, W, b, acct, losses, seconds, order_digest, init_digest, stopped=stopped,
                        parent=model.meta.get("parent"), extras=extras)


def _engine(images: np.ndarray, labels: np.ndarray, model, config: TrainConfig, acct: Accounting) -> Engine:
    """The engine of ``config``: the half-precision one for float16/bfloat16, else the fast step (or, with
    ``fast=False``, the plain reference loop), each taking its steps with the run's loss record. Under a
    framework profile other than numpy the loss computes as that framework does, and float32/float64 take the
    plain loop (the fast kernel's healthy steps are proved for the plain arithmetic only)."""
    loss, framework = LOSSES[config.loss], emulated_framework(config)
    if framework is not None:
        loss = partial(loss, framework=framework)
    if is_half(config.dtype):
        from mnist_cli.engine.half import LowPrecisionSGD

        return LowPrecisionSGD(images, labels, model, [config], [acct])  # a stack of one run
    if config.fast and framework is None:
        from mnist_cli.engine.fast import fast_engine

        return fast_engine(images, labels, model, config, loss, acct, kernel_name=blas_kernel())
    return PlainSGD(images, labels, model, config, loss, acct)
