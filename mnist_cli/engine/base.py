"""The engine contract and what every engine shares: the NaN accounting, the records, the results.

Conventions
-----------
- **Parameters.** A model is ``W`` (d, k) and ``b`` (k,), ``z = x @ W + b`` with ``x`` the batch's pixels
  times ``input_scale / 255``. Each engine keeps them in a layout of its own, one array ``params``
  (what the schedule averages) that :meth:`Engine.export` turns back into ``(W, b)``: the plain loop
  ``[W; b]`` (d + 1, k); the fast step ``Va = [s W.T | b / kappa]`` (r, d + 1), ``s = input_scale / 255``,
  ``kappa = 1 / s``, ``r >= k`` rows (padding rows stay zero); the half engine ``[W; b]`` in float32 holding
  the dtype's values (pure) or the float32 masters (mixed); the stacked engine, per run,
  ``At = s W.T`` (r, d) and ``bt`` (k, 1).
- **Learning rate.** ``lr`` reaches :meth:`Engine.step` as a NumPy scalar of the run's compute dtype
  (float32 for float16/bfloat16, whose arithmetic on the update is float32: PyTorch's opmath), decayed by
  the schedule after each epoch.
- **Steps** are numbered from 1. An engine calls :meth:`Accounting.record` for every step it has not
  proved healthy and :meth:`Accounting.observe_gap` for every one it has; it applies no update that
  :meth:`Accounting.halts` stops.
- **Batches.** Batch ``j`` of an epoch is its permutation's slice ``[j B, (j + 1) B)`` (hashed: :func:`consumed_digest`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Protocol

import numpy as np

from mnist_cli.frameworks import profile
from mnist_cli.losses import LOSSES, healthy_gap, softmax
from mnist_cli.model import Model, load_parent
from mnist_cli.rounding import DTYPES, is_half
from mnist_cli.settings import TrainConfig
from mnist_cli.threads import provenance


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
    steps_skipped: int = 0  # updates the loss scaler skipped (mixed precision, mnist_cli.engine.half.LossScaler)
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
    """The exact NaN accounting of one run, as issue 3 defines it, and the one place that decides to stop.

    Every engine calls :meth:`record` for each step it has not proved healthy (the plain loop: every
    step) and :meth:`observe_gap` for each one it has; it asks :meth:`halts` whether to apply a step's
    update. Only the accounting writes :attr:`nan`. The stacked engines keep one per run and apply the
    same rules to a block of runs at once: each finds the runs a step may have made unhealthy
    (:func:`block_gaps`; the half engine's ``_account``), :meth:`record_block` accounts for them,
    :meth:`retire` closes a run whose parameters are all NaN.
    """

    def __init__(self, dtype_name: str, k: int, steps: int, stop_on_nan: bool = False, framework=None):
        self.nan = NanReport()
        self.snapshot: Snapshot | None = None
        self.framework = framework  # the profile whose softmax the zero probabilities are counted in (None: numpy)
        self.healthy_gap = healthy_gap(dtype_name, k, framework)  # within it no probability can be 0 (proved there)
        self.bad_grad = np.zeros(steps, bool)  # (steps,) the steps whose gradient was non-finite (the records')
        self.steps = steps
        self.scales: np.ndarray | None = None  # (steps,) the loss scale after each step, once a scaler reports
        self.skipped: np.ndarray | None = None  # (steps,) the steps whose update the loss scaler skipped
        self.stop_on_nan = stop_on_nan
        self.steps_done = 0  # steps whose loss was computed (for the report of an interrupted run)
        self.bad_steps = 0  # steps whose loss or gradient (or both) was non-finite, each counted once

    def observe_gap(self, gap: float) -> None:
        """A step (or a run's steps so far) had this largest logit gap ``max(z) - min(z)``."""
        if gap > self.nan.max_logit_gap:
            self.nan.max_logit_gap = gap

    def halts(self, bad: bool) -> bool:
        """Whether a step whose loss or gradient was non-finite (``bad``) ends the run before its update:
        with ``stop_on_nan`` it does; otherwise training goes on, as TensorFlow's does."""
        return bad and self.stop_on_nan

    def count_probabilities(self, step: int, zeros: int, infs: int) -> None:
        """A step past the healthy gap had ``zeros`` softmax probabilities of exactly 0 and ``infs`` +-inf
        logits (the product left the dtype's range)."""
        self.nan.count_underflow(step, zeros)
        self.nan.count_overflow(step, infs)

    def count_nonfinite(self, step: int, loss: float, grad_finite: bool, batch: Callable[[], Snapshot]) -> bool:
        """Count a non-finite ``loss`` and gradient; keep the first such step's batch (``batch()``). Returns
        whether either was non-finite."""
        bad_loss = not math.isfinite(loss)
        if bad_loss:
            self.nan.count_loss(step, loss)
        if not grad_finite:
            self.bad_grad[step - 1] = True
            self.nan.count_grad(step)
        bad = bad_loss or not grad_finite
        self.bad_steps += bad
        if bad and self.snapshot is None:
            self.snapshot = batch()
        return bad

    def record(self, step: int, loss: float, z: np.ndarray, gb: np.ndarray, idx: np.ndarray, y: np.ndarray,
               grad_finite: bool | None = None, p: np.ndarray | None = None) -> bool:
        """Account for logits ``z`` (B, k), ``loss`` and the bias gradient ``gb`` (non-finite iff dL/dz
        has a non-finite entry), or ``grad_finite`` when the engine knows better (half precision, where
        ``x.T @ dL/dz`` can overflow on its own); return True when the loss or the gradient is non-finite.
        ``p``: ``softmax(z)`` (B, k) where the loss computed it, bit for bit as :func:`softmax` does."""
        gaps = np.max(z, axis=1) - np.min(z, axis=1)  # (B,) nan where z has nan
        gap = float(np.max(gaps))
        self.observe_gap(gap)
        if not gap <= self.healthy_gap:  # a probability may be exactly 0 (or z is nan): count them
            rows = ~(gaps <= self.healthy_gap)  # only these can have one (softmax is row by row)
            with np.errstate(all="ignore"):
                zeros = int(np.count_nonzero((softmax(z[rows], self.framework) if p is None else p[rows]) == 0))
            self.count_probabilities(step, zeros, int(np.count_nonzero(np.isinf(z[rows]))))
        grad_ok = bool(np.isfinite(gb).all()) if grad_finite is None else grad_finite
        return self.count_nonfinite(step, loss, grad_ok, lambda: Snapshot(step, np.array(idx), np.array(y), np.array(z)))

    @staticmethod
    def record_block(accts: list, step: int, loss: np.ndarray, grad_finite: np.ndarray, unhealthy: np.ndarray,
                     zeros: np.ndarray, infs: np.ndarray, batch: Callable[[int], Snapshot]) -> np.ndarray:
        """:meth:`record` for ``n`` runs stepped together: ``accts`` (n,) their accountings, ``loss`` (n,),
        ``grad_finite`` (n,), ``unhealthy`` (n,) the runs past the healthy gap (from :func:`block_gaps`) with
        their ``zeros`` and ``infs`` (n,), ``batch(i)`` run i's snapshot. Returns (n,) whether each was non-finite."""
        for i in np.flatnonzero(unhealthy):
            accts[i].count_probabilities(step, int(zeros[i]), int(infs[i]))
        bad = ~np.isfinite(loss) | ~grad_finite
        for i in np.flatnonzero(bad):
            accts[i].count_nonfinite(step, float(loss[i]), bool(grad_finite[i]), lambda i=i: batch(i))
        return bad

    def skip(self, step: int, scaler, grad_finite: bool) -> bool:
        """Tell ``scaler`` (:class:`mnist_cli.engine.half.LossScaler`) whether the gradient of ``step`` was
        finite; return whether it skips the update (counted), and keep its scale."""
        skipped = scaler.update(grad_finite)
        if skipped:
            self.nan.count_skip(step)
        if scaler.active:
            self.nan.loss_scale = float(scaler.scale)
            if self.scales is None:
                self.scales, self.skipped = np.full(self.steps, np.nan), np.zeros(self.steps, bool)
            self.scales[step - 1], self.skipped[step - 1] = self.nan.loss_scale, skipped
        return skipped

    def check_params(self, step: int, finite: bool) -> None:
        """The parameters after ``step`` are (not) all finite: keep the first step they were not."""
        if not finite and not self.nan.params_nonfinite:
            self.nan.params_nonfinite = True
            self.nan.first_nonfinite_params_step = step

    def retire(self, step: int) -> None:
        """Every parameter is NaN after ``step``: it stays NaN (every operation of a step propagates it, and
        no probability is then counted as 0), so each later step is a NaN loss and a non-finite gradient,
        accounted here in closed form."""
        rest = self.bad_grad.size - step
        if rest:
            nan = self.nan
            nan.steps_nan_loss += rest
            nan.first_nan_loss_step = nan.first_nan_loss_step or step + 1
            nan.steps_nonfinite_grad += rest
            nan.first_nonfinite_grad_step = nan.first_nonfinite_grad_step or step + 1
            self.bad_grad[step:] = True
            self.bad_steps += rest

    @property
    def nonfinite_steps(self) -> int:
        """Steps so far whose loss or gradient was non-finite, each counted once (a NaN loss and gradient: one step)."""
        return self.bad_steps


def block_gaps(z: np.ndarray, z_max: np.ndarray, shifted: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Each run's largest logit gap ``max_i(max(z_i) - min(z_i))`` (n,) of stacked logits ``z`` (n, k, B), nan if
    its z is, and whether it is within the healthy gap ``limit`` (n,) (where no probability can be 0:
    :func:`mnist_cli.losses.healthy_gap`).

    From ``-min(z - max(z))``, one reduction: where z is finite this is the same number (``fl(z_j - m)`` is
    monotone in ``z_j`` and ``fl(-a) = -fl(a)``), and where it is not (an inf or a nan in ``z - max(z)``) the
    result is nan or inf, past the healthy gap; the gaps past it are taken again by the plain formula, as
    :meth:`Accounting.record` takes them."""
    gap = -np.minimum.reduce(shifted, axis=(1, 2))  # (n,)
    healthy = gap <= limit
    if not healthy.all():
        plain = np.maximum.reduce(z_max[:, 0] - np.minimum.reduce(z, axis=1), axis=1)  # (n,)
        gap = np.where(healthy, gap, plain)
    return gap, healthy


def step_record(step: int, loss: float, acct: Accounting) -> dict:
    """The per-step record of ``--metrics-out``-style logs, from the step's loss and its run's accounting."""
    record = {"step": step, "loss": loss, "nan_loss": loss != loss, "inf_loss": loss in (math.inf, -math.inf),
              "nonfinite_grad": bool(acct.bad_grad[step - 1])}
    if acct.nan.loss_scale is not None:  # mixed precision with a loss scaler: its scale and skip at that step
        record.update(loss_scale=float(acct.scales[step - 1]), skipped=bool(acct.skipped[step - 1]))
    return record


def initial_model(config: TrainConfig, d: int, k: int) -> tuple[Model, str, np.random.Generator]:
    """The run's starting parameters from its seed (float32 masters in mixed precision), or those of the
    saved model ``config.init_from`` (:func:`mnist_cli.model.load_parent`: the same dtype and compute form,
    its record in ``meta["parent"]``), the digest of them and the generator of its batch order."""
    init_rng, order_rng = rngs(config.seed)
    if config.init_from:
        model = load_parent(config.init_from, config.dtype, config.precision, config.input_scale)
    else:
        model = Model.init(d, k, config.init, DTYPES[master_dtype(config)], init_rng, config.init_std)
    return model, hashlib.sha256(model.W.tobytes() + model.b.tobytes()).hexdigest(), order_rng


def master_dtype(config: TrainConfig) -> str:
    """The dtype of a run's parameters: float32 masters in mixed precision, else its dtype."""
    return "float32" if config.precision == "mixed" else config.dtype


def with_policy(config: TrainConfig) -> TrainConfig:
    """``config`` with the mixed policy it follows named (``""``: its profile's default,
    :meth:`mnist_cli.frameworks.Profile.policy`, which refuses a policy of another profile or dtype)."""
    if config.precision != "mixed":
        return config
    return replace(config, mixed_policy=profile(config.framework).policy(config.mixed_policy, config.dtype)[0])


def loss_dtype(config: TrainConfig) -> str:
    """The dtype a run's loss (and its softmax) computes in: its dtype, or in mixed precision the policy's
    (:meth:`mnist_cli.losses.Loss.mixed_dtype`: float32 where the policy lists the loss's first op)."""
    if config.precision != "mixed":
        return config.dtype
    float32_ops = profile(config.framework).policy(config.mixed_policy, config.dtype)[1]
    return LOSSES[config.loss].mixed_dtype(float32_ops, config.dtype)


def emulated_framework(config: TrainConfig) -> str | None:
    """The profile a run's losses compute as: ``None`` where that is the plain IEEE arithmetic (numpy's, and PyTorch's
    float32/float64, whose measured rules are the plain ones: the fast engine and the float32 stack take them)."""
    name = config.framework
    return None if name == "numpy" or (not is_half(config.dtype) and profile(name).rules(config.dtype).plain) else name


def run_accounting(config: TrainConfig, steps: int, k: int) -> Accounting:
    """A run's :class:`Accounting`, in the dtype its loss computes in, under its profile: alone or in a half stack."""
    return Accounting(loss_dtype(config), k, steps, config.stop_on_nan, emulated_framework(config))


def build_result(config: TrainConfig, W: np.ndarray, b: np.ndarray, acct: Accounting, losses: np.ndarray,
                 seconds: float, order_digest: str, init_digest: str, *, stopped: bool = False,
                 engine: str | None = None, extras: dict | None = None, parent: dict | None = None) -> TrainResult:
    """The :class:`TrainResult` of a finished run, its model carrying the run's compute form and the
    metadata every saved model has (settings, steps, NaN report, provenance); a run continued from a saved
    model also its ``parent`` record and ``steps_total`` (the parent's and this run's)."""
    steps = losses.shape[0]
    model = Model(W, b, compute_dtype=config.dtype, precision=config.precision)
    model.meta = {"config": asdict(config), "steps": steps, "nan": acct.nan.to_dict(),
                  "provenance": provenance(config.threads)}
    if parent is not None:
        total = parent["steps_total"]
        model.meta.update(parent=parent, steps_total=None if total is None else total + steps)
    if engine is not None:
        model.meta["engine"] = engine
    return TrainResult(config=config, model=model, nan=acct.nan, losses=losses, steps=steps, seconds=seconds,
                       order_digest=order_digest, init_digest=init_digest, snapshot=acct.snapshot,
                       stopped_early=stopped, extras=extras or {})


class Engine(Protocol):
    """What :func:`train` asks of an engine (:class:`PlainSGD`, :func:`mnist_cli.engine.fast.fast_engine`).

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


