"""Many runs as one computation: runs that share a seed and a dtype, stepped together.

    results = train_stack(d.train_images, d.train_labels,
                          [TrainConfig(loss=loss, lr=lr, input_scale=s) for loss in ("naive", "fused")
                           for lr in (0.5, 5) for s in (1, 255)])
    results[1].nan.first_nonfinite_step                        # naive, lr 0.5, raw pixels
    # -> 2

Runs with the same seed, dtype, batch size, steps and training set draw the same initial parameters
and the same batches (:func:`mnist_cli.train.rngs`): they differ only in lr, input scale and loss. Such
a *stack* gathers and converts each batch once, and its runs are laid out side by side in **blocks**
of :data:`SLOTS` runs of one loss:

- **The input scale folds into the weights** (``(s x) W = x (s W)``): a block keeps the transposed
  weights of its runs in pixel units, ``At = [s_1 W_1.T; ...; s_S W_S.T]`` (S k, d), and their biases
  ``bt`` (S k, 1). One product ``zt = At @ x.T + bt`` (S k, B) is every run's logits (transposed);
  the block's loss takes them as ``(S, k, B)`` and returns each run's mean loss and ``dL/dz``; one
  product ``G @ x`` (S k, d), with ``G = dL/dz * lr_r s_r**2`` row by row, is every run's update
  ``W_r -= lr_r x_r.T @ dL/dz_r`` in pixel units; ``b_r -= lr_r sum(dL/dz_r)``.
- **Losses** (:data:`STACK_LOSSES`, the same names as :data:`mnist_cli.losses.LOSSES`) follow the
  reference formulas term by term on the ``(S, k, B)`` layout; each run keeps its own NaN accounting
  (:class:`mnist_cli.train.NanReport`, exactly as issue 3 defines it), first-step
  :class:`mnist_cli.train.Snapshot` and per-step losses.
- **A run that goes NaN keeps its story and stops costing.** Once every parameter of a run is NaN it
  stays NaN (every operation of a step propagates NaN: the logits, any of the three losses and its
  gradient are NaN, so each later step is a NaN loss and a non-finite gradient, and no probability is
  counted as 0). Its remaining steps are accounted in that closed form, its slot is emptied, and the
  blocks of its loss are compacted when their live runs fit in fewer. Other runs are never touched.

**What is exact.** Every array and product of a block has the same shape whatever the number of
runs (a block not full has *empty slots*: zero parameters and zero learning rate), and no arithmetic
mixes two slots: each output element of a product, each element-wise operation and each reduction
over the classes or the batch sees only its own run's numbers, in the same order. So a run's losses,
parameters and NaN report are **bit-identical** however many runs share its stack and whichever slot
it has (``tests/test_stack.py``: alone against stacked, on healthy, broken and chaotic runs). Against
:func:`mnist_cli.train.train` (``PlainSGD``, ``FastSGD``) the results are equal **to rounding** only:
their products have other shapes and their sums run in another order; the NaN stories are the same.

Only what ``compare`` uses is supported: constant learning rate, mini-batches, no weight decay,
averaging or stop on NaN (:func:`check_stackable`). BLAS runs on one thread
(:func:`mnist_cli.threads.blas_pinned`); ``threads > 1`` trains that many stacks at a time, which
changes no number.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from mnist_cli.errors import SettingsError
from mnist_cli.losses import CLIP_MIN
from mnist_cli.model import DTYPES, N_CLASSES, Model
from mnist_cli.threads import blas_pinned, provenance
from mnist_cli.train import NanReport, Snapshot, TrainConfig, TrainResult, _epochs, consumed_digest, healthy_gap, rngs

#: Runs per block. 4 runs of 10 classes make 40-column products over 784 pixels: the block's weights
#: (125 KB in float32, 250 KB in float64) and the batch (313 KB / 627 KB) stay in the L2/L3 caches, and
#: the stack's memory is a few blocks, whatever the number of runs. Every block has this width, full or
#: not: that is what makes a run's numbers independent of the number of runs (module docstring).
#: Measured (Zen 3, OpenBLAS Haswell kernel, 1000 steps): the default compare's 16 runs take 1.5 s with
#: 4 slots and 3.4 s with 8 (half-empty blocks: 4 runs per loss and dtype); the 180-run map ~5% longer.
SLOTS = 4


def stack_fused(z, z_max, t, Y):
    """:func:`mnist_cli.losses.fused` for S runs: ``L_r = mean_i(logsumexp(z_ri) - z_ri[y_i])``.

    ``z`` (S, k, B) logits, ``z_max`` their max over the classes (S, 1, B), ``t`` the index of the target
    logits (``z[t]`` is (S, B)), ``Y`` (k, B) the one-hot labels. Returns ``(L (S,), dL/dz (S, k, B),
    softmax(z) (S, k, B))``; ``dL/dz = (softmax(z) - onehot(y)) / B``.
    """
    B = z.shape[2]
    shifted = z - z_max  # (S, k, B), <= 0
    e = np.exp(shifted)  # (S, k, B) in [0, 1]
    s = np.add.reduce(e, axis=1, keepdims=True)  # (S, 1, B) in [1, k]
    loss = np.add.reduce(np.log(s[:, 0]) - shifted[t], axis=1) / B  # (S,) mean of logsumexp(z) - z[y]
    p = e / s  # (S, k, B) softmax(z)
    dz = p - Y  # softmax(z) - onehot(y)
    dz /= B  # mean over the batch
    return loss, dz, p


def _softmax(z, z_max):
    e = np.exp(z - z_max)  # (S, k, B), each in [0, 1]
    return e / np.add.reduce(e, axis=1, keepdims=True)


def _softmax_backward(p, g):
    """``dL/dz = p * (g - sum_j(g_j * p_j))`` (TF's SoftmaxGrad), over the classes (axis 1)."""
    return p * (g - np.add.reduce(g * p, axis=1, keepdims=True))


def stack_naive(z, z_max, t, Y):
    """:func:`mnist_cli.losses.naive` for S runs: ``p = softmax(z)``, ``L_r = mean_i(-sum_j(y_ij log p_rij))``,
    ``dL/dp = -y_ / p / B`` through the softmax Jacobian (same arguments and returns as :func:`stack_fused`)."""
    B = z.shape[2]
    p = _softmax(z, z_max)  # (S, k, B), may contain exact zeros
    log_p = np.log(p)  # -inf where p == 0
    loss = np.add.reduce(-np.add.reduce(Y * log_p, axis=1), axis=1) / B  # (S,); 0 * -inf = nan
    g = -Y / p / B  # dL/dp: 0/0 = nan, 1/0 = inf
    return loss, _softmax_backward(p, g), p


def stack_clipped(z, z_max, t, Y):
    """:func:`mnist_cli.losses.clipped` for S runs: ``L_r = mean_i(-sum_j(y_ij log(clip(p_rij, 1e-10, 1))))``,
    no gradient where ``clip`` is active (same arguments and returns as :func:`stack_fused`)."""
    B = z.shape[2]
    lo, one = z.dtype.type(CLIP_MIN), z.dtype.type(1)
    p = _softmax(z, z_max)  # (S, k, B)
    p_c = np.clip(p, lo, one)
    loss = np.add.reduce(-np.add.reduce(Y * np.log(p_c), axis=1), axis=1) / B  # (S,)
    live = (p >= lo) & (p <= 1)  # where clip passes the gradient
    g = np.where(live, -Y / p_c / B, z.dtype.type(0))  # dL/dp
    return loss, _softmax_backward(p, g), p


#: loss name (a key of mnist_cli.losses.LOSSES) -> its stacked form.
STACK_LOSSES: dict[str, Callable] = {"fused": stack_fused, "naive": stack_naive, "clipped": stack_clipped}


def check_stackable(config: TrainConfig) -> None:
    """:class:`SettingsError` for a setting the stack does not implement (compare never sets them)."""
    for name, plain in (("weight_decay", 0.0), ("lr_decay", 1.0), ("average", False), ("full_batch", False),
                        ("stop_on_nan", False), ("epochs", None)):
        if getattr(config, name) != plain:
            raise SettingsError(name, f"stacked training does not implement {{{name}}}; train such runs one by one")


@dataclass
class _Run:
    """One run's own state while its stack trains: its accounting, and where it sits."""

    config: TrainConfig
    nan: NanReport
    losses: np.ndarray  # (steps,) float64
    bad_grad: np.ndarray  # (steps,) bool: steps whose gradient was non-finite (for the per-step records)
    snapshot: Snapshot | None = None
    final: tuple | None = None  # (At rows, bt rows) once retired or finished
    scale: float = 1.0  # input_scale / 255


class _Block:
    """S runs of one loss: their parameters in pixel units and each run's step factors, row by row."""

    def __init__(self, d: int, k: int, B: int, dtype, loss: str):
        S = SLOTS
        self.k, self.dtype, self.loss_fn = k, dtype, STACK_LOSSES[loss]
        self.At = np.zeros((S * k, d), dtype)  # (S k, d) [s_r W_r.T], rows of empty slots zero
        self.bt = np.zeros((S * k, 1), dtype)  # (S k, 1) biases
        self.coef = np.zeros((S * k, 1), dtype)  # lr_r * s_r**2: dL/dz row -> update in pixel units
        self.lr = np.zeros((S * k, 1), dtype)  # lr_r: the bias step
        self.max_gap = np.zeros(S)  # each run's largest logit gap so far
        self.runs: list[_Run | None] = [None] * S
        self.zt = np.empty((S * k, B), dtype)  # (S k, B) logits, transposed
        self.G = np.empty((S * k, B), dtype)
        self.gA = np.empty((S * k, d), dtype)

    def rows(self, i: int) -> slice:
        return slice(i * self.k, (i + 1) * self.k)

    def put(self, i: int, run: _Run, At: np.ndarray, bt: np.ndarray, max_gap: float) -> None:
        """Seat ``run`` in slot ``i`` with parameters ``At`` (k, d), ``bt`` (k, 1)."""
        rows, dt = self.rows(i), self.dtype
        self.At[rows], self.bt[rows] = At, bt
        self.coef[rows] = dt(run.config.lr * run.scale * run.scale)
        self.lr[rows] = dt(run.config.lr)
        self.max_gap[i] = max_gap
        self.runs[i] = run

    def empty(self, i: int) -> None:
        rows = self.rows(i)
        self.At[rows], self.bt[rows], self.coef[rows], self.lr[rows] = 0, 0, 0, 0
        self.max_gap[i] = 0.0
        self.runs[i] = None

    def live(self) -> list[int]:
        return [i for i, r in enumerate(self.runs) if r is not None]


class _Stack:
    """The runs of one (seed, dtype): one batch order, one converted batch per step, blocks per loss."""

    def __init__(self, images, labels, configs: list[TrainConfig]):
        first = configs[0]
        self.images, self.labels = images, labels
        self.n, self.d = images.shape
        self.k, self.B, self.steps = N_CLASSES, first.batch_size, first.steps
        self.dtype = DTYPES[first.dtype]
        self.seed = first.seed
        self.gap_limit = healthy_gap(first.dtype, self.k)
        init_rng, self.order_rng = rngs(first.seed)
        model = Model.init(self.d, self.k, first.init, self.dtype, init_rng, first.init_std)
        self.init_digest = hashlib.sha256(model.W.tobytes() + model.b.tobytes()).hexdigest()
        self.init = model
        self.runs = [_Run(c, NanReport(), np.empty(self.steps), np.zeros(self.steps, bool), scale=c.input_scale / 255.0)
                     for c in configs]
        self.blocks: dict[str, list[_Block]] = {}
        for run in self.runs:
            blocks = self.blocks.setdefault(run.config.loss, [])
            if not blocks or all(r is not None for r in blocks[-1].runs):
                blocks.append(_Block(self.d, self.k, self.B, self.dtype, run.config.loss))
            block = blocks[-1]
            s = self.dtype(run.scale)
            block.put(block.runs.index(None), run, model.W.T * s, model.b[:, None], 0.0)
        self.x = np.empty((self.B, self.d), self.dtype)  # (B, d) the batch in pixels, unscaled
        self.rows_k = np.arange(self.k)[:, None]  # (k, 1)
        self.cols = np.arange(self.B)  # (B,)

    # --- one step -----------------------------------------------------------------------------

    def step(self, step: int, idx: np.ndarray, y: np.ndarray) -> None:
        np.copyto(self.x, self.images[idx], casting="unsafe")  # (B, d) gather + uint8 -> float, once for all runs
        Y = (self.rows_k == y).astype(self.dtype)  # (k, B) one-hot, transposed
        t = (slice(None), y, self.cols)  # z[t] (S, B): each example's target logit
        retired = False
        for blocks in self.blocks.values():
            for block in blocks:
                retired |= self._block_step(block, step, idx, y, t, Y)
        if retired:
            self._compact()

    def _block_step(self, block: _Block, step: int, idx, y, t, Y) -> bool:
        S, k, B = SLOTS, self.k, self.B
        zt = block.zt
        np.matmul(block.At, self.x.T, out=zt)  # (S k, B) every run's logits x @ W + b, transposed
        zt += block.bt
        z = zt.reshape(S, k, B)
        z_max = np.maximum.reduce(z, axis=1, keepdims=True)  # (S, 1, B) the max shift
        gap = np.maximum.reduce(z_max[:, 0] - np.minimum.reduce(z, axis=1), axis=1)  # (S,) max(z) - min(z), nan if z is
        np.copyto(block.max_gap, gap, where=gap > block.max_gap)
        loss, dz, p = block.loss_fn(z, z_max, t, Y)
        gb = np.add.reduce(dz, axis=2)  # (S, k) dL/db
        runs = list(block.runs)  # retiring a run below empties its slot in block.runs
        for i, run in enumerate(runs):
            if run is not None:
                run.losses[step - 1] = loss[i]
        if not (gap <= self.gap_limit).all():  # a probability may be exactly 0 (or z is nan): count them
            zeros = np.count_nonzero(p == 0, axis=(1, 2))  # (S,)
            for i in np.flatnonzero(~(gap <= self.gap_limit) & (zeros > 0)):
                nan = runs[i].nan
                nan.underflow_probs += int(zeros[i])
                nan.steps_with_underflow += 1
                nan.first_underflow_step = nan.first_underflow_step or step
        np.multiply(dz.reshape(S * k, B), block.coef, out=block.G)  # (S k, B) lr_r s_r**2 dL/dz
        np.matmul(block.G, self.x, out=block.gA)  # (S k, d)
        block.At -= block.gA
        block.bt -= block.lr * gb.reshape(S * k, 1)
        if np.isfinite(loss).all() and np.isfinite(gb).all():  # empty slots are always finite
            return False
        retired = False
        for i in np.flatnonzero(~np.isfinite(loss) | ~np.isfinite(gb).all(axis=1)):
            run = runs[i]
            self._account(run, step, float(loss[i]), bool(np.isfinite(gb[i]).all()), idx, y, z[i].T)
            rows = block.rows(i)
            if not run.nan.params_nonfinite and not (np.isfinite(block.At[rows]).all()
                                                     and np.isfinite(block.bt[rows]).all()):
                run.nan.params_nonfinite, run.nan.first_nonfinite_params_step = True, step
            if np.isnan(block.At[rows]).all() and np.isnan(block.bt[rows]).all():
                self._retire(block, i, step)
                retired = True
        return retired

    @staticmethod
    def _account(run: _Run, step: int, loss: float, grad_finite: bool, idx, y, z) -> None:
        """:meth:`mnist_cli.train._Accounting.record` for a step whose loss or gradient is non-finite."""
        nan = run.nan
        if loss != loss:
            nan.steps_nan_loss += 1
            nan.first_nan_loss_step = nan.first_nan_loss_step or step
        elif not math.isfinite(loss):
            nan.steps_inf_loss += 1
            nan.first_inf_loss_step = nan.first_inf_loss_step or step
        if not grad_finite:
            run.bad_grad[step - 1] = True
            nan.steps_nonfinite_grad += 1
            nan.first_nonfinite_grad_step = nan.first_nonfinite_grad_step or step
        if run.snapshot is None:
            run.snapshot = Snapshot(step, np.array(idx), np.array(y), np.ascontiguousarray(z))

    def _retire(self, block: _Block, i: int, step: int) -> None:
        """Every parameter of slot ``i`` is NaN after ``step``: account the rest in closed form, free the slot."""
        run = block.runs[i]
        rest = self.steps - step
        if rest:
            nan = run.nan
            nan.steps_nan_loss += rest
            nan.first_nan_loss_step = nan.first_nan_loss_step or step + 1
            nan.steps_nonfinite_grad += rest
            nan.first_nonfinite_grad_step = nan.first_nonfinite_grad_step or step + 1
            run.losses[step:] = np.nan
            run.bad_grad[step:] = True
        self._finish(block, i)
        block.empty(i)

    def _finish(self, block: _Block, i: int) -> None:
        run, rows = block.runs[i], block.rows(i)
        run.final = (block.At[rows].copy(), block.bt[rows].copy())
        run.nan.max_logit_gap = max(run.nan.max_logit_gap, float(block.max_gap[i]))

    def _compact(self) -> None:
        """Seat the live runs of each loss in as few blocks as hold them, in their order."""
        for loss, blocks in self.blocks.items():
            seated = [(b, i) for b in blocks for i in b.live()]
            need = -(-len(seated) // SLOTS)
            if need == len(blocks):
                continue
            fresh = [_Block(self.d, self.k, self.B, self.dtype, loss) for _ in range(need)]
            for j, (b, i) in enumerate(seated):
                rows = b.rows(i)
                fresh[j // SLOTS].put(j % SLOTS, b.runs[i], b.At[rows], b.bt[rows], float(b.max_gap[i]))
            self.blocks[loss] = fresh

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
            for blocks in self.blocks.values():
                for block in blocks:
                    for i in block.live():
                        run, rows = block.runs[i], block.rows(i)
                        if not run.nan.params_nonfinite and not (np.isfinite(block.At[rows]).all()
                                                                 and np.isfinite(block.bt[rows]).all()):
                            run.nan.params_nonfinite, run.nan.first_nonfinite_params_step = True, step
                        self._finish(block, i)
        return order_hash.hexdigest()


def log_records(result: TrainResult, every: int) -> list[dict]:
    """The per-step records ``train(on_log=..., log_every=every)`` would have made for ``result``."""
    bad_grad = result.extras["nonfinite_grad_steps"]
    out = []
    for step in range(every, result.steps + 1, every):
        loss = float(result.losses[step - 1])
        out.append({"step": step, "loss": loss, "nan_loss": loss != loss, "inf_loss": loss in (math.inf, -math.inf),
                    "nonfinite_grad": bool(bad_grad[step - 1])})
    return out


def stack_key(config: TrainConfig) -> tuple:
    """Runs with equal keys share a stack: same batches, same init, same dtype."""
    return (config.seed, config.dtype, config.batch_size, config.steps, config.train_limit, config.init,
            config.init_std)


def train_stack(train_images: np.ndarray, train_labels: np.ndarray, configs: list[TrainConfig], *,
                on_stack: Callable[[list[int]], None] | None = None) -> list[TrainResult]:
    """Train every config of ``configs``, stacked (see the module docstring); results in their order.

    Configs are grouped into stacks by :func:`stack_key`; ``on_stack(positions)`` is called as each
    stack finishes, with the positions in ``configs`` of its runs. A run's ``seconds`` is its share of
    its stack's time; ``extras["nonfinite_grad_steps"]`` (steps,) flags the steps with a non-finite
    gradient (for :func:`log_records`); ``extras["stack"]`` is the number of runs it was trained with.
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
        stack = _Stack(images, labels.astype(np.intp), group)
        digest = stack.train()
        share = (time.perf_counter() - t0) / len(group)
        for pos, run in zip(positions, stack.runs):
            results[pos] = _result(stack, run, digest, share, len(group))
        if on_stack is not None:
            on_stack(positions)
    return results


def _result(stack: _Stack, run: _Run, digest: str, seconds: float, size: int) -> TrainResult:
    At, bt = run.final
    kappa = stack.dtype(1.0 / run.scale)
    W = np.ascontiguousarray((At * kappa).T)  # (d, k)
    model = Model(W, bt[:, 0].copy())
    model.meta = {"config": asdict(run.config), "steps": stack.steps, "nan": run.nan.to_dict(),
                  "provenance": provenance(run.config.threads), "engine": "stack"}
    return TrainResult(config=run.config, model=model, nan=run.nan, losses=run.losses, steps=stack.steps,
                       seconds=seconds, order_digest=digest, init_digest=stack.init_digest, snapshot=run.snapshot,
                       extras={"nonfinite_grad_steps": run.bad_grad, "stack": size})


#: Test rows converted at once by :func:`evaluate_stack` (2048 x 784 float64 is 12.8 MB: one block).
EVAL_ROWS = 2048


def evaluate_stack(results: list[TrainResult], images: np.ndarray, labels: np.ndarray) -> list[dict]:
    """:func:`mnist_cli.evaluate.evaluate_model` of every result's model on uint8 ``images`` at its own
    input scale, with the images converted once per dtype and the logits of :data:`SLOTS` models
    computed by one product (of the same shape for any number of models, as in training: a model's
    logits, and so its evaluation, do not depend on the others)."""
    from mnist_cli.evaluate import evaluate_logits

    n, d = images.shape
    k = N_CLASSES
    out: list[dict | None] = [None] * len(results)
    by_dtype: dict[np.dtype, list[int]] = {}
    for pos, r in enumerate(results):
        by_dtype.setdefault(r.model.W.dtype, []).append(pos)
    with np.errstate(over="ignore", invalid="ignore"), blas_pinned():
        for dtype, positions in by_dtype.items():
            for g in range(0, len(positions), SLOTS):
                group = positions[g : g + SLOTS]
                V = np.zeros((d, SLOTS * k), dtype)  # (d, S k) each model's W in pixel units
                bias = np.zeros(SLOTS * k, dtype)
                for i, pos in enumerate(group):
                    model = results[pos].model
                    V[:, i * k : (i + 1) * k] = model.W * dtype.type(results[pos].config.input_scale / 255.0)
                    bias[i * k : (i + 1) * k] = model.b
                z = np.empty((n, SLOTS * k), dtype)  # (n, S k)
                x = np.empty((min(EVAL_ROWS, n), d), dtype)
                for start in range(0, n, EVAL_ROWS):
                    xb = x[: min(EVAL_ROWS, n - start)]
                    np.copyto(xb, images[start : start + EVAL_ROWS], casting="unsafe")  # uint8 -> float
                    np.matmul(xb, V, out=z[start : start + EVAL_ROWS])
                z += bias
                for i, pos in enumerate(group):
                    out[pos] = evaluate_logits(results[pos].model, np.ascontiguousarray(z[:, i * k : (i + 1) * k]),
                                               labels)
    return out
