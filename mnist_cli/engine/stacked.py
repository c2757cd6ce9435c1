"""Many runs as one computation: runs that share a seed and a dtype, stepped together.

    results = train_stack(d.train_images, d.train_labels,
                          [TrainConfig(loss=loss, lr=lr, input_scale=s) for loss in ("naive", "fused")
                           for lr in (0.5, 5) for s in (1, 255)])
    results[1].nan.first_nonfinite_step                        # naive, lr 0.5, raw pixels
    # -> 2

Runs with the same seed, dtype, batch size, steps and training set draw the same initial parameters
and the same batches (:func:`mnist_cli.engine.rngs`): they differ only in lr, input scale and loss. Such
a *stack* gathers and converts each batch once, and its runs are laid out side by side in **blocks**
of up to :data:`SLOTS` runs, those of one loss next to each other (each loss applies to its slots):

- **The input scale folds into the weights** (``(s x) W = x (s W)``): a block keeps the transposed
  weights of its runs in pixel units, ``At[i] = s_i W_i.T`` (S, r, d) (``r``: the k classes and the
  rows of zeros :func:`mnist_cli.engine.fast.class_rows` pads them to for the BLAS kernel), and their
  biases ``bt`` (S, k, 1). Its n live runs are its first n slots. The product ``zt = At @ x.T``
  (n, r, B) is every run's logits; the block's loss takes them as ``(n, k, B)`` and returns each run's
  mean loss and ``dL/dz``; the product ``G @ x`` (n, r, d), ``G_i = dL/dz_i * lr_i s_i**2``, is every
  run's update ``W_i -= lr_i x_i.T @ dL/dz_i`` in pixel units; ``b_i -= lr_i sum(dL/dz_i)``.
- **Products** (:func:`slot_products`): one BLAS call for the ``n r`` rows of the block (*wide*) where
  that gives each run the bits of its own product, else one call per run, each of the shape a stack
  of one makes. Whether it does depends on the BLAS kernel: OpenBLAS rounds a row of a product
  differently depending on where it sits in the matrix unless runs sit on the kernel's tiles (12
  rows in float32 on Haswell; never with 10 or 12 on SkylakeX). :func:`wide_is_exact` measures it,
  once per process, kernel, dtype, shape and number of runs; a wide product costs about 0.7x (float32)
  and 0.5x (float64) of the per-run calls on Haswell.
- **Losses** are the ``stacked`` facet of each loss's record (:data:`mnist_cli.losses.LOSSES`): the
  reference formulas' own lines on the ``(n, k, B)`` layout; each run keeps its own NaN accounting
  (:class:`mnist_cli.engine.base.Accounting`, whose rules every engine shares), first-step
  :class:`mnist_cli.engine.base.Snapshot` and per-step losses.
- **A run that goes NaN keeps its story and stops costing.** Once every parameter of a run is NaN it
  stays NaN (every operation of a step propagates NaN: the logits, any of the three losses and its
  gradient are NaN, so each later step is a NaN loss and a non-finite gradient, and no probability is
  counted as 0). Its remaining steps are accounted in that closed form, its slot is emptied, and the
  blocks are compacted (the live runs, in their order, in the first slots of as few blocks as hold
  them). Other runs are never touched.

**What is exact.** Every run's products are the bits of its own BLAS call of one shape (per run, or
wide where measured equal to that), and no other arithmetic mixes two slots: each element-wise
operation sees one element, and each reduction over the classes or the batch sees only its own run's
numbers, in the same order whatever the number of live runs (NumPy reduces an axis of a C-ordered
array with the same loop for every row: a sum over the batch is one pairwise sum of B terms per row, a
sum over the classes adds the k rows in order). So a run's losses, parameters and NaN report are
**bit-identical** however many runs share its stack and whichever slot it has
(``tests/test_engine_stacked.py``: alone against stacked, on healthy, broken and chaotic runs in every part of
a block, and wide against per-run products). Against :func:`mnist_cli.engine.train` (``PlainSGD``,
``FastSGD``) the results are equal **to rounding** only: their products have other shapes and their
sums run in another order; the NaN stories are the same.

**Half precision** (float16, bfloat16; pure or mixed; any profile): the runs of one :func:`stack_key` are stepped
by one :class:`mnist_cli.engine.half.LowPrecisionSGD` (:func:`mnist_cli.engine.half.train_half_stack`), the
engine :func:`mnist_cli.engine.train` steps a run with alone, so each run is **bit-identical** to itself trained
alone (``tests/test_engine_half_stacked.py``).

Only what ``compare`` uses is supported: constant learning rate, mini-batches, no weight decay,
averaging or stop on NaN (:func:`check_stackable`). BLAS runs on one thread
(:func:`mnist_cli.threads.blas_pinned`), and so does the stack: ``threads`` changes nothing here.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from functools import cache

import numpy as np

from mnist_cli.engine.base import (
    Accounting,
    Snapshot,
    TrainResult,
    _epochs,
    block_gaps,
    build_result,
    consumed_digest,
    emulated_framework,
    initial_model,
    step_record,
)
from mnist_cli.engine.fast import class_rows
from mnist_cli.errors import SettingsError
from mnist_cli.losses import LOSSES
from mnist_cli.model import N_CLASSES
from mnist_cli.rounding import DTYPES, is_half
from mnist_cli.settings import TrainConfig
from mnist_cli.threads import blas_kernel, blas_pinned

#: Runs per block: the width of its wide products and of the element-wise loss and accounting arrays
#: (16 x 12 x 100, 77 KB in float32), which stay in cache with the batch; the parameters of a block are
#: 0.6 MB in float32 and 1 MB in float64 (with its update, twice that); a stack holds a block per 16 runs.
#: Measured (AMD EPYC, OpenBLAS Haswell kernel, 1000 steps, training and evaluation, interleaved, relative
#: to 16 slots): the default compare's 16 runs 1.12x with 4 slots, 1.02x with 8, 1.02x with 32; the 180-run
#: map 1.15x, 1.12x and 1.01x.
SLOTS = 16

#: The seed of :func:`wide_is_exact`'s random operands (any fixed seed: the probe is reproducible).
PROBE_SEED = 13


def slot_products(A: np.ndarray, M: np.ndarray, out: np.ndarray, n: int, wide: bool) -> None:
    """``out[i] = A[i] @ M`` for the first ``n`` slots of ``A`` (S, r, c), ``M`` (c, e), ``out`` (S, r, e).

    ``wide``: one BLAS call for all ``n * r`` rows (``A[:n]`` seen as (n r, c)); else one call per slot,
    each of the shape a stack of one makes (the batched form of ``np.matmul``)."""
    if wide:
        r = A.shape[1]
        np.matmul(A[:n].reshape(n * r, A.shape[2]), M, out=out[:n].reshape(n * r, out.shape[2]))
    else:
        np.matmul(A[:n], M, out=out[:n])


@cache
def wide_is_exact(kernel: str | None, dtype_name: str, shape: tuple[int, int, int, int], n: int) -> bool:
    """Whether a block's wide products give every one of its first ``n`` runs the same bits as that
    run's own product, for blocks of ``shape = (S, r, d, B)`` in this process's BLAS (``kernel``, the key
    of the cache: the answer is per kernel, dtype and shape, measured once).

    A **measurement**, not a proof: both step products (the forward ``At @ x.T``, (n r, d) @ (d, B),
    and the backward ``G @ x``, (n r, B) @ (B, d)) are computed on random operands the way the block
    computes them (:func:`slot_products`, one BLAS thread, buffers of the block's shapes), wide and one
    slot at a time, and compared bit for bit, slot by slot. A BLAS call's rounding depends on the
    shapes, not on the values: which kernel and tile a row lands in, how the sum over the inner
    dimension is split and in what order its terms are added. If the wide call summed any row of a
    run in another order, random operands would show it: each of the run's ``r B`` forward and ``r d``
    backward outputs is a sum of ``d`` or ``B`` products of random numbers, whose rounded value changes
    with the order of its terms more often than not (measured: where Haswell's float32 wide product of
    10-row runs is not exact, 64% of a run's forward and 34% of its backward outputs differ from its own
    product's; adding the inner sum as two halves changes 86-89% of them), so all of a run's outputs
    agreeing by chance is out of the question. What the probe assumes is only that the BLAS picks its
    order from the shapes and the thread count (one thread here), not from the values. Measured with
    OpenBLAS 0.3.31 (:func:`mnist_cli.engine.fast.class_rows` rows per run: 12 in float32 on Haswell, else
    10; 1 to 16 runs): Haswell and Sandybridge exact in both dtypes; SkylakeX in neither (its forward
    product takes another path when wide); Prescott (Katmai) in float64 only.
    """
    with blas_pinned():
        for A, M, wide, alone in _probe_operands(dtype_name, shape):
            slot_products(A, M, wide, n, True)
            slot_products(A, M, alone, n, False)
            if wide[:n].tobytes() != alone[:n].tobytes():
                return False
    return True


@cache
def _probe_operands(dtype_name: str, shape: tuple[int, int, int, int]) -> tuple:
    """Random operands of a block's two products, ``(A, M, out, out)`` each, drawn once per dtype and shape."""
    S, r, d, B = shape
    dt = np.dtype(dtype_name)
    rng = np.random.default_rng(PROBE_SEED)
    x = rng.integers(0, 256, (B, d)).astype(dt)  # (B, d) like a batch of pixels
    return tuple((rng.standard_normal((S, r, c)).astype(dt), M, np.zeros((S, r, e), dt), np.zeros((S, r, e), dt))
                 for c, M, e in ((d, x.T, B), (B, x, d)))  # forward At @ x.T, backward G @ x


def check_stackable(config: TrainConfig) -> None:
    """:class:`SettingsError` for a setting the stack does not implement (compare never sets them)."""
    for name, plain in (("weight_decay", 0.0), ("lr_decay", 1.0), ("average", False), ("full_batch", False),
                        ("stop_on_nan", False), ("epochs", None)):
        if getattr(config, name) != plain:
            raise SettingsError(name, f"stacked training does not implement {{{name}}}; train such runs one by one")
    if not stackable(config):
        raise SettingsError(("dtype", "framework"), "stacked training computes float32/float64 in the plain (numpy) "
                            "profile only; train other frameworks' float32/float64 runs one by one")


def stackable(config: TrainConfig) -> bool:
    """Whether the stack computes ``config``'s arithmetic: float32/float64 where the profile's is the plain one
    (numpy's, PyTorch's: :func:`mnist_cli.engine.base.emulated_framework`), and float16/bfloat16 in every profile
    (:class:`mnist_cli.engine.half.LowPrecisionSGD`, one step for all runs)."""
    return is_half(config.dtype) or emulated_framework(config) is None


@dataclass
class _Run:
    """One run's own state while its stack trains: its accounting, its losses, and its final parameters."""

    config: TrainConfig
    acct: Accounting
    losses: np.ndarray  # (steps,) float64
    final: tuple | None = None  # (At rows, bt rows) once retired or finished
    scale: float = 1.0  # input_scale / 255


class _Block:
    """Up to :data:`SLOTS` runs: their parameters in pixel units and each run's step factors, slot by slot.
    The live runs are always the first slots, the runs of one loss side by side (:attr:`groups`;
    :meth:`_Stack._compact` keeps them so)."""

    def __init__(self, d: int, k: int, r: int, B: int, dtype):
        S = SLOTS
        self.k, self.dtype = k, dtype
        self.At = np.zeros((S, r, d), dtype)  # (S, r, d) [s_i W_i.T], rows past k (padding) zero
        self.bt = np.zeros((S, k, 1), dtype)  # (S, k, 1) biases
        self.coef = np.zeros((S, 1, 1), dtype)  # lr_i * s_i**2: dL/dz -> update in pixel units
        self.lr = np.zeros((S, 1, 1), dtype)  # lr_i: the bias step
        self.max_gap = np.zeros(S)  # each run's largest logit gap so far (Accounting.observe_gap, by slot)
        self.runs: list[_Run | None] = [None] * S
        self.groups: list[list] = []  # [stacked loss, first slot, end slot] of each loss's runs, in slot order
        self.zt = np.zeros((S, r, B), dtype)  # (S, r, B) logits, transposed
        self.G = np.zeros((S, r, B), dtype)  # (S, r, B) lr_i s_i**2 dL/dz, zero in the padding rows
        self.gA = np.empty((S, r, d), dtype)
        self.n = 0  # live runs: slots [0, n)

    def put(self, run: _Run, At: np.ndarray, bt: np.ndarray, max_gap: float) -> None:
        """Seat ``run`` in the first free slot with parameters ``At`` (r, d), ``bt`` (k, 1)."""
        i, dt = self.n, self.dtype
        self.At[i], self.bt[i] = At, bt
        self.coef[i] = dt(run.config.lr * run.scale * run.scale)
        self.lr[i] = dt(run.config.lr)
        self.max_gap[i] = max_gap
        self.runs[i] = run
        loss = LOSSES[run.config.loss].stacked
        if self.groups and self.groups[-1][0] is loss:
            self.groups[-1][2] = i + 1
        else:
            self.groups.append([loss, i, i + 1])
        self.n += 1

    def full(self) -> bool:
        return self.n == SLOTS

    def live(self) -> list[int]:
        return [i for i, r in enumerate(self.runs) if r is not None]

    def finite(self, i: int) -> bool:
        """Whether every parameter of slot ``i`` is finite."""
        return bool(np.isfinite(self.At[i]).all() and np.isfinite(self.bt[i]).all())


class _Stack:
    """The runs of one (seed, dtype): one batch order, one converted batch per step, blocks of runs."""

    def __init__(self, images, labels, configs: list[TrainConfig]):
        first = configs[0]
        self.images, self.labels = images, labels
        self.n, self.d = images.shape
        self.k, self.B, self.steps = N_CLASSES, first.batch_size, first.steps
        self.dtype = DTYPES[first.dtype].type
        self.init, self.init_digest, self.order_rng = initial_model(first, self.d, self.k)
        self.runs = [_Run(c, Accounting(c.dtype, self.k, self.steps), np.empty(self.steps), scale=c.input_scale / 255.0)
                     for c in configs]
        self.healthy_gap = self.runs[0].acct.healthy_gap
        self.kernel = blas_kernel()
        self.r = class_rows(self.k, self.dtype, self.kernel)  # rows per run's product (k + padding)
        self._wide: list[bool | None] = [None] * (SLOTS + 1)  # live runs n -> wide products? (probed when first met)
        self.blocks: list[_Block] = []
        At = np.zeros((self.r, self.d), self.dtype)
        rank = {loss: i for i, loss in enumerate(dict.fromkeys(c.loss for c in configs))}
        for run in sorted(self.runs, key=lambda run: rank[run.config.loss]):  # stable: in their order within a loss
            At[: self.k] = self.init.W.T * self.dtype(run.scale)
            self._seat(run, At, self.init.b[:, None], 0.0)
        self.x = np.empty((self.B, self.d), self.dtype)  # (B, d) the batch in pixels, unscaled
        self.rows_k = np.arange(self.k)[:, None]  # (k, 1)
        self.cols = np.arange(self.B)  # (B,)

    def wide(self, n: int) -> bool:
        """Whether a block of ``n`` live runs takes wide products (:func:`wide_is_exact`, cached per process)."""
        if self._wide[n] is None:
            self._wide[n] = wide_is_exact(self.kernel, np.dtype(self.dtype).name, (SLOTS, self.r, self.d, self.B), n)
        return self._wide[n]

    def _seat(self, run: _Run, At, bt, max_gap: float) -> None:
        if not self.blocks or self.blocks[-1].full():
            self.blocks.append(_Block(self.d, self.k, self.r, self.B, self.dtype))
        self.blocks[-1].put(run, At, bt, max_gap)

    # --- one step -----------------------------------------------------------------------------

    def step(self, step: int, idx: np.ndarray, y: np.ndarray) -> None:
        np.copyto(self.x, self.images[idx], casting="unsafe")  # (B, d) gather + uint8 -> float, once for all runs
        Y = (self.rows_k == y).astype(self.dtype)  # (k, B) one-hot, transposed
        t = (slice(None), y, self.cols)  # z[t] (n, B): each example's target logit
        retired = False
        for block in self.blocks:
            retired |= self._block_step(block, step, idx, y, t, Y)
        if retired:
            self._compact()

    def _block_step(self, block: _Block, step: int, idx, y, t, Y) -> bool:
        n, k = block.n, self.k
        wide = self.wide(n)
        slot_products(block.At, self.x.T, block.zt, n, wide)  # (n, r, B) each live run's x @ W, transposed
        z = block.zt[:n, :k]  # (n, k, B) the classes
        z += block.bt[:n]
        z_max = np.maximum.reduce(z, axis=1, keepdims=True)  # (n, 1, B) the max shift
        shifted = z - z_max  # (n, k, B), <= 0
        gap, healthy = block_gaps(z, z_max, shifted, self.healthy_gap)  # (n,) each run's largest gap; within it?
        np.copyto(block.max_gap[:n], gap, where=gap > block.max_gap[:n])
        count = not healthy.all()  # a probability may be 0, a logit inf (or z is nan): count them
        loss, gb = np.empty(n, z.dtype), np.empty((n, k, 1), z.dtype)  # (n,) mean losses, (n, k, 1) dL/db
        zeros = np.zeros(n, np.intp)  # (n,) zero probabilities
        for loss_fn, a, b in block.groups:  # each loss on its runs' slots
            loss[a:b], dz, p = loss_fn(shifted[a:b], t, Y)
            np.add.reduce(dz, axis=2, keepdims=True, out=gb[a:b])
            np.multiply(dz, block.coef[a:b], out=block.G[a:b, :k])  # (b - a, k, B) lr_i s_i**2 dL/dz
            if count:
                zeros[a:b] = np.count_nonzero(p == 0, axis=(1, 2))
        runs = block.runs[:n]
        for i, run in enumerate(runs):
            run.losses[step - 1] = loss[i]
        slot_products(block.G, self.x, block.gA, n, wide)  # (n, r, d) each live run's update
        block.At[:n] -= block.gA[:n]
        block.bt[:n] -= block.lr[:n] * gb
        grad_ok = np.isfinite(gb).all(axis=(1, 2))  # (n,) dL/db is non-finite iff dL/dz has a non-finite entry
        if not count and np.isfinite(loss).all() and grad_ok.all():
            return False
        # logits past the dtype's range (an inf logit makes the gap inf or nan)
        infs = np.zeros(n, np.intp) if np.isfinite(gap).all() else np.count_nonzero(np.isinf(z), axis=(1, 2))
        bad = Accounting.record_block([run.acct for run in runs], step, loss, grad_ok, ~healthy, zeros, infs,
                                      lambda i: Snapshot(step, np.array(idx), np.array(y), np.ascontiguousarray(z[i].T)))
        return self._after_nonfinite(block, step, np.flatnonzero(bad))

    def _after_nonfinite(self, block: _Block, step: int, bad: np.ndarray) -> bool:
        """After the update of a step where the runs in slots ``bad`` had a non-finite loss or gradient: note
        whose parameters went non-finite, retire those whose parameters are all NaN. Whether any was retired."""
        retired = False
        for i in bad:
            run = block.runs[i]
            run.acct.check_params(step, block.finite(i))
            if np.isnan(block.At[i, : self.k]).all() and np.isnan(block.bt[i]).all():
                self._retire(block, i, step)
                retired = True
        return retired

    def _retire(self, block: _Block, i: int, step: int) -> None:
        """Every parameter of slot ``i`` is NaN after ``step``: account the rest in closed form, free the slot."""
        run = block.runs[i]
        run.acct.retire(step)
        run.losses[step:] = np.nan
        self._finish(block, i)
        block.runs[i] = None

    def _finish(self, block: _Block, i: int) -> None:
        run = block.runs[i]
        run.final = (block.At[i, : self.k].copy(), block.bt[i].copy())
        run.acct.observe_gap(float(block.max_gap[i]))

    def _compact(self) -> None:
        """Seat the live runs again, in their order (so each loss's side by side), in the first slots of
        as few blocks as hold them (a run's numbers do not depend on its slot)."""
        blocks, self.blocks = self.blocks, []
        for b in blocks:
            for i in b.live():
                self._seat(b.runs[i], b.At[i], b.bt[i], float(b.max_gap[i]))

    # --- the run --------------------------------------------------------------------------------

    def train(self) -> str:
        """Every step; returns the digest of the examples consumed (the same for every run)."""
        order_hash = hashlib.sha256()
        step = 0
        with np.errstate(all="ignore"), blas_pinned():
            for perm, count in _epochs(self.n, self.B, self.steps, self.order_rng):
                batches = perm[: count * self.B].reshape(count, self.B)  # (count, B)
                labels = self.labels[batches]  # (count, B)
                for j in range(count):
                    step += 1
                    self.step(step, batches[j], labels[j])
                consumed_digest(order_hash, batches, labels)
            for block in self.blocks:
                for i in block.live():
                    block.runs[i].acct.check_params(step, block.finite(i))
                    self._finish(block, i)
        return order_hash.hexdigest()


def log_records(result: TrainResult, every: int) -> list[dict]:
    """The per-step records ``train(on_log=..., log_every=every)`` would have made for ``result``."""
    acct = result.extras["accounting"]
    return [step_record(step, float(result.losses[step - 1]), acct) for step in range(every, result.steps + 1, every)]


def stack_key(config: TrainConfig) -> tuple:
    """Runs with equal keys share a stack: same batches, same init, same dtype, precision and arithmetic (the
    profile, where it emulates one: a PyTorch float32 run shares the numpy runs' stack)."""
    return (config.seed, config.dtype, config.precision, config.mixed_policy, emulated_framework(config), config.batch_size,
            config.steps, config.train_limit, config.init, config.init_std)


def train_stack(train_images: np.ndarray, train_labels: np.ndarray, configs: list[TrainConfig]) -> list[TrainResult]:
    """Train every config of ``configs``, stacked (see the module docstring); results in their order.

    Configs are grouped into stacks by :func:`stack_key`. A run's ``seconds`` is its share of
    its stack's time; ``extras["accounting"]`` is its :class:`Accounting` (for :func:`log_records`);
    ``extras["stack"]`` is the number of runs it was trained with.
    """
    for config in configs:
        config.validate()
        check_stackable(config)
    stacks: dict[tuple, list[int]] = {}
    for pos, config in enumerate(configs):
        stacks.setdefault(stack_key(config), []).append(pos)
    results: list[TrainResult | None] = [None] * len(configs)
    for positions in stacks.values():
        group = [configs[p] for p in positions]
        first = group[0]
        images, labels = train_images, train_labels
        if first.train_limit is not None:
            images, labels = images[: first.train_limit], labels[: first.train_limit]
        if images.shape[0] < first.batch_size:
            raise SettingsError(("batch_size", "train_limit"),
                                f"batch size {first.batch_size} is larger than the {images.shape[0]} training examples")
        t0 = time.perf_counter()
        if is_half(first.dtype):  # the half-precision engine, stepping every run of the group at once
            from mnist_cli.engine.half import train_half_stack

            for pos, result in zip(positions, train_half_stack(images, labels.astype(np.intp), group, t0)):
                results[pos] = result
            continue
        stack = _Stack(images, labels.astype(np.intp), group)
        digest = stack.train()
        share = (time.perf_counter() - t0) / len(group)
        for pos, run in zip(positions, stack.runs):
            At, bt = run.final
            kappa = stack.dtype(1.0 / run.scale)
            W = np.ascontiguousarray((At * kappa).T)  # (d, k)
            results[pos] = build_result(run.config, W, bt[:, 0].copy(), run.acct, run.losses, share, digest,
                                        stack.init_digest, engine="stack",
                                        extras={"accounting": run.acct, "stack": len(group)})
    return results

