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
:func:`mnist_cli.fastpath.fast_engine` (the default) computes the same in fewer calls. Both hand every
step they cannot prove healthy to the same exact accounting (:class:`Accounting`), which alone
decides whether a step halts the run. The contract between :func:`train` and an engine is :class:`Engine`.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Protocol

import numpy as np

from mnist_cli.errors import SettingsError
from mnist_cli.losses import LOSSES, healthy_gap, softmax
from mnist_cli.model import DTYPES, N_CLASSES, Model
from mnist_cli.precision import LOW_PRECISION
from mnist_cli.settings import MAX_STEPS, PRESETS, TrainConfig, check_steps  # noqa: F401  (re-exported)
from mnist_cli.threads import blas_kernel, blas_pinned, provenance


@dataclass
class NanReport:
    """Every non-finite event of a run. Steps are numbered from 1; ``None`` means never."""

    steps_nan_loss: int = 0
    steps_inf_loss: int = 0
    steps_nonfinite_grad: int = 0
    first_nan_loss_step: int | None = None
    first_inf_loss_step: int | None = None
    first_nonfinite_grad_step: int | None = None
    params_nonfinite: bool = False
    first_nonfinite_params_step: int | None = None
    underflow_probs: int = 0  # softmax probabilities that were exactly 0, summed over steps
    steps_with_underflow: int = 0
    first_underflow_step: int | None = None
    max_logit_gap: float = 0.0  # largest max(z) - min(z) within one example seen in training
    overflow_logits: int = 0  # logits that were +-inf (the product left the dtype's range), summed over steps
    first_overflow_step: int | None = None
    steps_skipped: int = 0  # updates the loss scaler skipped (mixed precision, mnist_cli.lowp.LossScaler)
    first_skipped_step: int | None = None
    loss_scale: float | None = None  # the loss scale after the last step (None: no scaling)

    def count_underflow(self, step: int, n_zero: int) -> None:
        """``n_zero`` softmax probabilities were exactly 0 at ``step``."""
        if n_zero:
            self.underflow_probs += n_zero
            self.steps_with_underflow += 1
            self.first_underflow_step = self.first_underflow_step or step

    def count_loss(self, step: int, loss: float) -> None:
        """The loss of ``step`` was non-finite: NaN or infinite."""
        if loss != loss:
            self.steps_nan_loss += 1
            self.first_nan_loss_step = self.first_nan_loss_step or step
        else:
            self.steps_inf_loss += 1
            self.first_inf_loss_step = self.first_inf_loss_step or step

    def count_overflow(self, step: int, n_inf: int) -> None:
        """``n_inf`` logits were +-inf at ``step``."""
        if n_inf:
            self.overflow_logits += n_inf
            self.first_overflow_step = self.first_overflow_step or step

    def count_skip(self, step: int) -> None:
        """The loss scaler skipped the update of ``step`` (its gradient was non-finite)."""
        self.steps_skipped += 1
        self.first_skipped_step = self.first_skipped_step or step

    def count_grad(self, step: int) -> None:
        """The gradient of ``step`` had a non-finite entry."""
        self.steps_nonfinite_grad += 1
        self.first_nonfinite_grad_step = self.first_nonfinite_grad_step or step

    @property
    def any_nonfinite(self) -> bool:
        return bool(self.steps_nan_loss or self.steps_inf_loss or self.steps_nonfinite_grad or self.params_nonfinite)

    @property
    def first_nonfinite_step(self) -> int | None:
        steps = [s for s in (self.first_nan_loss_step, self.first_inf_loss_step, self.first_nonfinite_grad_step) if s]
        return min(steps) if steps else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["any_nonfinite"] = self.any_nonfinite
        d["first_nonfinite_step"] = self.first_nonfinite_step
        return d


@dataclass
class Snapshot:
    """The batch of the first non-finite step, kept for forensics (``--explain-nan``)."""

    step: int
    indices: np.ndarray  # (B,) positions in the training set
    labels: np.ndarray  # (B,)
    logits: np.ndarray  # (B, k) as the loss saw them
    loss_scale: float | None = None  # mixed precision: the loss scale of that step


@dataclass
class TrainResult:
    config: TrainConfig
    model: Model
    nan: NanReport
    losses: np.ndarray  # (steps,) float64, loss of each step (nan/inf kept)
    steps: int
    seconds: float
    order_digest: str  # sha256 of the (index, label) pairs the engine consumed, step by step (consumed_digest)
    init_digest: str  # sha256 of the initial parameters
    snapshot: Snapshot | None = None
    stopped_early: bool = False
    extras: dict = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        return float(self.losses[-1]) if self.steps else float("nan")


def scale_pixels(images: np.ndarray, input_scale: float, dtype) -> np.ndarray:
    """``x = pixels * (input_scale / 255)`` in ``dtype``: [0, 1] by default, raw pixels at 255."""
    return np.multiply(images, np.dtype(dtype).type(input_scale / 255.0), dtype=dtype)


def _epochs(n: int, batch_size: int, steps: int, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, int]]:
    """Yield ``(permutation of range(n), batches to cut from it)`` per epoch until ``steps`` batches."""
    per_epoch = n // batch_size
    done = 0
    while done < steps:
        count = min(per_epoch, steps - done)
        yield rng.permutation(n), count
        done += count


def batch_order(n: int, batch_size: int, steps: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Yield ``steps`` index batches: a fresh permutation of ``range(n)`` per epoch, cut into
    ``n // batch_size`` batches (a remainder smaller than a batch is skipped, as a batch of 1 would
    weigh one example like a hundred). Depends only on (n, batch_size, rng), never on the loss."""
    for perm, count in _epochs(n, batch_size, steps, rng):
        for j in range(count):
            yield perm[j * batch_size : (j + 1) * batch_size]


def rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for (init, data order) from one seed."""
    init_ss, order_ss = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(init_ss), np.random.default_rng(order_ss)


def consumed_digest(digest, indices: np.ndarray, labels: np.ndarray) -> None:
    """Add the steps ``indices``, ``labels`` (steps, B) to ``digest`` (a hashlib sha256): for each step
    the pairs ``(index, label)`` in index order, as int64 ``index * 256 + label``. The order within a
    step does not change its sum, so an engine that reads a full batch in storage order and one that
    reads it in the drawn order agree; one that gathers other rows, or builds its targets from other
    labels, does not."""
    keys = indices.astype(np.int64) * 256 + labels  # (steps, B); labels < 256
    keys.sort(axis=1)
    digest.update(keys.tobytes())


class Accounting:
    """The exact NaN accounting of a run, as issue 3 defines it, and the one place that decides to stop.

    Every engine calls :meth:`record` for each step it has not proved healthy (the plain loop: every
    step) and :meth:`observe_gap` for each one it has; it asks :meth:`halts` whether to apply a step's
    update. Only the accounting writes :attr:`nan`.
    """

    def __init__(self, dtype_name: str, k: int, stop_on_nan: bool = False):
        self.nan = NanReport()
        self.snapshot: Snapshot | None = None
        self.healthy_gap = healthy_gap(dtype_name, k)  # within it no probability can be 0 (proved there)
        self.bad_grad_step = 0  # the last step whose gradient was non-finite
        self.skipped_step = 0  # the last step whose update the loss scaler skipped
        self.stop_on_nan = stop_on_nan
        self.steps_done = 0  # steps whose loss was computed (for the report of an interrupted run)

    def observe_gap(self, gap: float) -> None:
        """A step proved healthy had this largest logit gap ``max(z) - min(z)``."""
        if gap > self.nan.max_logit_gap:
            self.nan.max_logit_gap = gap

    def halts(self, bad: bool) -> bool:
        """Whether a step whose loss or gradient was non-finite (``bad``) ends the run before its update:
        with ``stop_on_nan`` it does; otherwise training goes on, as TensorFlow's does."""
        return bad and self.stop_on_nan

    def record(self, step: int, loss: float, z: np.ndarray, gb: np.ndarray, idx: np.ndarray, y: np.ndarray,
               grad_finite: bool | None = None) -> bool:
        """Account for logits ``z`` (B, k), ``loss`` and the bias gradient ``gb`` (non-finite iff dL/dz
        has a non-finite entry), or ``grad_finite`` when the engine knows better (half precision, where
        ``x.T @ dL/dz`` can overflow on its own); return True when the loss or the gradient is non-finite."""
        gaps = np.max(z, axis=1) - np.min(z, axis=1)  # (B,) nan where z has nan
        gap = float(np.max(gaps))
        self.observe_gap(gap)
        if not gap <= self.healthy_gap:  # a probability may be exactly 0 (or z is nan): count them
            rows = ~(gaps <= self.healthy_gap)  # only these can have one (softmax is row by row)
            with np.errstate(all="ignore"):
                self.nan.count_underflow(step, int(np.count_nonzero(softmax(z[rows]) == 0)))
            self.nan.count_overflow(step, int(np.count_nonzero(np.isinf(z[rows]))))
        bad_loss = not math.isfinite(loss)
        bad_grad = not np.isfinite(gb).all() if grad_finite is None else not grad_finite
        if bad_loss:
            self.nan.count_loss(step, loss)
        if bad_grad:
            self.bad_grad_step = step
            self.nan.count_grad(step)
        if (bad_loss or bad_grad) and self.snapshot is None:
            self.snapshot = Snapshot(step, np.array(idx), np.array(y), np.array(z))
        return bad_loss or bad_grad

    def skip(self, step: int, scaler, grad_finite: bool) -> bool:
        """Tell ``scaler`` (:class:`mnist_cli.lowp.LossScaler`) whether the gradient of ``step`` was finite;
        return whether it skips the update (counted), and keep its scale."""
        skipped = scaler.update(grad_finite)
        if skipped:
            self.skipped_step = step
            self.nan.count_skip(step)
        if scaler.active:
            self.nan.loss_scale = float(scaler.scale)
        return skipped

    def check_params(self, step: int, finite: bool) -> None:
        """The parameters after ``step`` are (not) all finite: keep the first step they were not."""
        if not finite and not self.nan.params_nonfinite:
            self.nan.params_nonfinite = True
            self.nan.first_nonfinite_params_step = step

    @property
    def nonfinite_steps(self) -> int:
        """Steps so far with a non-finite loss or gradient, counted once per kind (for progress bars)."""
        nan = self.nan
        return nan.steps_nan_loss + nan.steps_inf_loss + nan.steps_nonfinite_grad


class Engine(Protocol):
    """What :func:`train` asks of an engine (:class:`PlainSGD`, :func:`mnist_cli.fastpath.fast_engine`).

    An engine owns the parameters in a layout of its own and takes SGD steps on them; it accounts for
    every step through the :class:`Accounting` it was given and applies no update the accounting halts.
    """

    params: np.ndarray  #: every parameter in one array, in the engine's layout (averaged as one)

    def begin_epoch(self, perm: np.ndarray, count: int) -> None:
        """A new epoch: ``perm`` is the permutation of the training set, ``count`` the steps it will take."""

    def step(self, step: int, j: int, lr) -> tuple[float, bool]:
        """Run batch ``j`` of the epoch (global step number ``step``, from 1) at learning rate ``lr``;
        return the batch's mean loss and whether its loss or gradient was non-finite."""

    def consumed(self, done: int) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, labels)`` (done, B): the examples the first ``done`` steps of this epoch gathered
        and the labels their targets came from (what :func:`consumed_digest` hashes)."""

    def finite(self) -> bool:
        """Whether every current parameter is finite."""

    def export(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(W, b)`` (d, k) and (k,) from an array in the layout of :attr:`params`."""

    def close(self) -> None:
        """Release threads and buffers."""


class BatchesTaken:
    """What an engine that gathers its own batches from the epoch's permutation shares: the permutation,
    and the (indices, labels) of each step taken so far (:meth:`Engine.consumed`)."""

    B: int
    labels: np.ndarray
    perm: np.ndarray | None = None

    def begin_epoch(self, perm: np.ndarray, count: int) -> None:
        self.perm = perm
        self.taken: list[tuple[np.ndarray, np.ndarray]] = []  # this epoch's (indices, labels), step by step

    def take(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``j`` of the epoch: its indices into the training set and its labels (recorded)."""
        idx = self.perm[j * self.B : (j + 1) * self.B]
        y = self.labels[idx]  # (B,)
        self.taken.append((idx, y))
        return idx, y

    def consumed(self, done: int) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, labels)`` (done, B) of the examples the first ``done`` steps of this epoch used."""
        idx, y = zip(*self.taken[:done])
        return np.stack(idx), np.stack(y)


class PlainSGD(BatchesTaken):
    """The loop as the tutorial writes it, one NumPy call per formula: the reference for ``FastSGD``.

    ``x = scale_pixels(batch)``, ``z = x @ W + b``, ``loss, dz = loss_fn(z, y)``,
    ``W -= lr * (x.T @ dz + weight_decay * W)``, ``b -= lr * sum(dz)``; every step accounted.
    """

    def __init__(self, images, labels, model, config, loss_fn: Callable, acct):
        self.images, self.labels, self.loss_fn, self.acct = images, labels, loss_fn, acct
        self.params = np.concatenate([model.W, model.b[None, :]])  # (d + 1, k) [W; b], averaged as one
        self.W, self.b = self.params[:-1], self.params[-1]  # views: the updates below change params
        self.B = config.batch_size
        self.dtype = model.W.dtype.type
        self.scale = self.dtype(config.input_scale / 255.0)
        self.wd = self.dtype(config.weight_decay)
        self.x = np.empty((self.B, images.shape[1]), dtype=self.dtype)  # (B, 784) reused

    def step(self, step: int, j: int, lr) -> tuple[float, bool]:
        W, b = self.W, self.b
        idx, y = self.take(j)
        np.multiply(self.images[idx], self.scale, out=self.x, dtype=self.dtype)  # (B, 784) gather + scale
        z = self.x @ W  # (B, k)
        z += b
        loss, dz = self.loss_fn(z, y)
        gb = dz.sum(axis=0)  # (k,) dL/db
        bad = self.acct.record(step, loss, z, gb, idx, y)
        if self.acct.halts(bad):
            return loss, bad
        gW = self.x.T @ dz  # (784, k)
        if self.wd:
            gW += self.wd * W
        W -= lr * gW
        b -= lr * gb
        return loss, bad

    def finite(self) -> bool:
        return bool(np.isfinite(self.W).all() and np.isfinite(self.b).all())

    def export(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return params[:-1], params[-1]

    def close(self) -> None:
        pass


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


def _record(step: int, loss: float, acct: Accounting) -> dict:
    """The per-step record of ``--metrics-out``-style logs."""
    record = {"step": step, "loss": loss, "nan_loss": loss != loss, "inf_loss": loss in (math.inf, -math.inf),
              "nonfinite_grad": acct.bad_grad_step == step}
    if acct.nan.loss_scale is not None:  # mixed precision with a loss scaler
        record.update(loss_scale=acct.nan.loss_scale, skipped=acct.skipped_step == step)
    return record


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
        record = _record(step, loss, self.acct) if logged or (self.monitor and step % self.per_epoch == 0) else None
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
    lr = (np.float32 if config.dtype in LOW_PRECISION else DTYPES[config.dtype])(config.lr)  # half: float32 opmath
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
        raise SettingsError(("batch_size", "train_limit"),
                            f"batch size {config.batch_size} is larger than the {n} training examples")
    steps = config.epochs * (n // config.batch_size) if config.epochs is not None else config.steps
    check_steps(steps)
    if config.average and config.average_epochs * (n // config.batch_size) > steps:
        raise SettingsError(("average_epochs", "steps"),
                            f"averaging over the last {config.average_epochs} epochs takes "
                            f"{config.average_epochs * (n // config.batch_size):,} steps of {n // config.batch_size} "
                            f"per epoch, but the run has {steps:,}: lower {{average_epochs}} or raise {{steps}}")

    init_rng, order_rng = rngs(config.seed)
    param_dtype = "float32" if config.precision == "mixed" else config.dtype  # mixed: float32 master weights
    model = Model.init(train_images.shape[1], N_CLASSES, config.init, DTYPES[param_dtype], init_rng, config.init_std)
    init_digest = hashlib.sha256(model.W.tobytes() + model.b.tobytes()).hexdigest()
    acct = Accounting(param_dtype, N_CLASSES, config.stop_on_nan)  # the dtype the loss computes in
    loss_fn = LOSSES[config.loss]
    labels = train_labels.astype(np.intp)
    if config.dtype in LOW_PRECISION:
        from mnist_cli.lowp import LowPrecisionSGD

        engine = LowPrecisionSGD(train_images, labels, model, config, loss_fn, acct)
    elif config.fast:
        from mnist_cli.fastpath import FAST_KERNELS, fast_engine

        engine = fast_engine(train_images, labels, model, config, loss_fn, FAST_KERNELS.get(config.loss), acct,
                             kernel_name=blas_kernel())
    else:
        engine = PlainSGD(train_images, labels, model, config, loss_fn, acct)

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

    model.W[...], model.b[...] = engine.export(params)
    model.meta = {
        "config": asdict(config),
        "steps": step,
        "nan": acct.nan.to_dict(),
        "provenance": provenance(config.threads),
    }
    return TrainResult(
        config=config,
        model=model,
        nan=acct.nan,
        losses=losses,
        steps=step,
        seconds=seconds,
        order_digest=order_digest,
        init_digest=init_digest,
        snapshot=acct.snapshot,
        stopped_early=stopped,
    )
