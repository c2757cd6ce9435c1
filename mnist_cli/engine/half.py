"""Training and inference in float16 and bfloat16: pure half precision, and mixed precision under a policy.

    r = train(images, labels, TrainConfig(dtype="float16", precision="mixed", loss_scale="dynamic", input_scale=16))
    r.nan.steps_skipped, r.nan.loss_scale       # the first 3 scaled gradients overflow float16
    # -> (3, 8192.0)

NumPy has no float16 BLAS kernel (and ml_dtypes' bfloat16 none at all), so every array of a step is
held in **float32 arrays whose values are representable in the low dtype**, and each operation that
the framework would round is rounded here by :func:`round_to` (round to nearest, ties to even, via
NumPy's or ml_dtypes' casts). Where the rounding happens, step by step (``rnd`` rounds to the dtype):

==============  =====================================================  ==================================
what            pure (``--precision pure``)                            mixed (``--precision mixed``)
==============  =====================================================  ==================================
parameters      ``W, b`` in the dtype                                  float32 master ``W, b``
inputs          ``x = rnd(float32(pixel) * float32(s))``               the same (autocast casts x)
logits          ``z = rnd(x @ W + b)``: products exact in float32,     the same with ``rnd(W)``, ``rnd(b)``
                summed in float32, rounded once (a fused ``linear``)
loss, dL/dz     :data:`mnist_cli.losses.LOSSES` in the dtype: every    the policy's (``Loss.mixed_dtype``):
                op rounded, reductions accumulated in float32          in float32 on ``float32(z)`` where it
                (each profile's half arithmetic)                       lists the loss's first op, else as pure
scaled dL/dz    --                                                     ``g = rnd(d(scale L)/dz)``: the scale
                                                                       enters where autograd's backward takes it
dL/dW, dL/db    ``rnd(x.T @ dL/dz)``, ``rnd(sum(dL/dz))`` (float32     ``rnd(x.T @ g)``, ``rnd(sum(g))``,
                accumulation, one rounding)                            then ``float32(.) / scale``
update          ``W = rnd(W - rnd(lr) * dL/dW)``, one rounding;        ``W -= lr * dL/dW`` in float32,
                ``b = rnd(b - rnd(rnd(lr) * dL/db))``: as              skipped when the scaler says so
                ``torch.optim.SGD``'s ``add_`` computes (below)
==============  =====================================================  ==================================

**The pure update** is what ``param.add_(grad, alpha=-lr)`` (``torch.optim.SGD``) does to float16 and
bfloat16 tensors on the CPU, measured in torch 2.13: ``alpha`` is converted to the tensor's dtype (so the
learning rate and the weight decay are rounded to it); the SIMD loop, which takes ``W`` (7840 entries, a
multiple of every vector width), computes ``W + alpha * g`` in float32 and rounds once; ``b`` (10 entries,
shorter than a vector) goes through the scalar loop, which computes in the dtype and also rounds the
product. (A build without SIMD, ``ATEN_CPU_CAPABILITY=default``, rounds ``W``'s product too.) Under TensorFlow's
profile, ``W.assign_sub(lr * g)`` on a half variable rounds the product as well (``Rules.update``).

**The mixed policy** (``TrainConfig.mixed_policy``, :meth:`mnist_cli.frameworks.Profile.policy`) decides only
where the loss computes: the numpy profile's ``float32-softmax`` and torch's ``autocast-cuda`` (the default) in
float32; torch's ``autocast-cpu`` the fused loss in float32 (``cross_entropy``) but naive and clipped in the dtype
(``softmax`` and ``log`` follow their input); Keras's ``mixed_float16`` / ``mixed_bfloat16`` every loss in the dtype.

**Loss scaling** (:class:`LossScaler`, mixed precision only) has ``torch.amp.GradScaler``'s semantics, with the
profile's rules (:class:`mnist_cli.frameworks.Scaler`; Keras's ``LossScaleOptimizer`` starts at ``2**15``):
``dynamic`` starts at ``2**16``, doubles after 2000 consecutive steps with finite gradients, and on a
step with a non-finite gradient halves and skips the update; a number ``N`` scales by ``N`` always and
skips the same steps (GradScaler with growth and backoff factors of 1); ``none`` neither scales nor
skips (autocast alone: a NaN gradient reaches the weights).

A gradient is *non-finite* here when any entry of ``dL/dW`` or ``dL/db`` is (the NaN report counts
these): in half precision ``x.T @ dL/dz`` can overflow although ``dL/dz`` is finite. The scaler decides
to skip on the *scaled* gradients, as GradScaler does (its ``found_inf`` is taken on each entry before the
multiplication by ``1/scale``). Below a scale of 1 the unscaling can itself overflow (below about
``2**-128`` the float32 reciprocal is inf, and ``0 * inf`` is NaN): GradScaler then applies the non-finite
gradient, and so does this emulation; the report counts it as a non-finite gradient, not a skipped step.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np

from mnist_cli.engine import base
from mnist_cli.engine.base import Accounting, BatchesTaken, Snapshot, TrainResult, loss_dtype
from mnist_cli.frameworks import Scaler, profile
from mnist_cli.losses import LOSSES
from mnist_cli.model import N_CLASSES
from mnist_cli.rounding import DTYPES, Inputs, as_dtype, linear_bias, round_to
from mnist_cli.settings import LossScale, TrainConfig
from mnist_cli.threads import blas_pinned

__all__ = ["LossScaler", "LowPrecisionSGD", "train_half_stack"]

#: GradScaler's defaults (torch.amp.GradScaler: init_scale, growth_factor, backoff_factor, growth_interval): the
#: default profile's :class:`mnist_cli.frameworks.Scaler`; a run takes its own profile's (Keras: 2**15).
_DEFAULT = profile().scaler
INIT_SCALE, GROWTH, BACKOFF = _DEFAULT.init_scale, _DEFAULT.growth, _DEFAULT.backoff
GROWTH_INTERVAL = _DEFAULT.growth_interval


class LossScaler:
    """``torch.amp.GradScaler`` for one run: the scale, and whether a step's update is skipped.

    ``LossScaler(LossScale("dynamic"))``: scale ``2**16``, x2 after :data:`GROWTH_INTERVAL` finite steps in a
    row, x0.5 and skip on a non-finite gradient; ``rules``: another profile's :class:`mnist_cli.frameworks.Scaler`
    (Keras's ``LossScaleOptimizer``: ``2**15``, the same growth and backoff). ``LossScale("fixed", 1024)``: a fixed
    scale, non-finite steps skipped. ``LossScale("none")``: scale 1, nothing skipped (:attr:`active` is False).
    """

    def __init__(self, how: LossScale, rules: Scaler = _DEFAULT):
        self.active = how.kind != "none"
        self.dynamic = how.kind == "dynamic"
        self.rules = rules
        self.scale = np.float32(rules.init_scale if self.dynamic else (how.value or 1.0))  # a float32, as GradScaler's
        self.good_steps = 0  # consecutive finite steps since the last change (GradScaler's growth tracker)

    def update(self, finite: bool) -> bool:
        """After a step whose scaled gradient was (not) ``finite``: return whether its update is skipped."""
        if not self.active:
            return False
        if not finite:
            if self.dynamic:
                self.scale = np.float32(self.scale * np.float32(self.rules.backoff))  # 0 after 165 halvings
            self.good_steps = 0
            return True
        if self.dynamic:
            self.good_steps += 1
            if self.good_steps == self.rules.growth_interval:
                with np.errstate(over="ignore"):
                    self.scale = np.float32(self.scale * np.float32(self.rules.growth))
                self.good_steps = 0
        return False


def _finite(a: np.ndarray) -> bool:
    return bool(np.isfinite(a).all())


def _finite_runs(a: np.ndarray) -> np.ndarray:
    """(runs,) whether every entry of each run's ``a`` (runs, ...) is finite."""
    return np.isfinite(a).reshape(a.shape[0], -1).all(axis=1)


class LowPrecisionSGD(BatchesTaken):
    """The SGD engine of float16 or bfloat16 runs (an :class:`mnist_cli.engine.base.Engine`), pure or mixed: one
    run (:func:`mnist_cli.engine.train`), or a stack of runs that share the seed, dtype, precision and profile
    (:func:`mnist_cli.engine.stacked.train_stack`), stepped together by :meth:`step_runs`.

    The parameters are one float32 array ``[W; b]`` (runs, d + 1, k): the dtype's values (pure) or the float32
    master weights (mixed); :attr:`params` is the first run's (d + 1, k). See the module docstring for every
    rounding. A stack computes each run as it computes alone: each run's products are its own BLAS calls (one
    per run, the shapes of a run alone), and every other operation is element-wise or reduces one run's own
    numbers in the order of a run alone (the loss sees the runs' logits (runs, k, B) as a view of a (runs, B, k)
    array: the reference layout's memory order; ``tests/test_engine_half_stacked.py``). Like every engine it runs
    inside the trainer's ``np.errstate(all="ignore")``: overflow to inf and NaN are results here, not errors.
    """

    def __init__(self, images, labels, model, configs, accts):
        first = configs[0]
        self.images, self.labels, self.accts = images, labels, accts
        names = list(dict.fromkeys(c.loss for c in configs))
        runs_of = {name: [i for i, c in enumerate(configs) if c.loss == name] for name in names}
        # each loss record, its runs, and whether it computes in the half dtype (pure, or a policy's half ops)
        self.by_loss = [(LOSSES[name], np.array(runs), loss_dtype(configs[runs[0]]) != "float32")
                        for name, runs in runs_of.items()]
        self.loss_low = all(low for _, _, low in self.by_loss)  # every loss in the dtype: the logits cast once
        self.run_low = np.array([loss_dtype(c) != "float32" for c in configs])  # (runs,) its loss sees the dtype's logits
        self.healthy = np.array([acct.healthy_gap for acct in accts])  # (runs,) Accounting.healthy_gap
        self.low = as_dtype(first.dtype)
        self.mixed = first.precision == "mixed"
        self.framework = base.emulated_framework(first)  # the profile the loss computes as
        R, d, k = len(configs), images.shape[1], model.b.shape[0]
        self.stack = np.empty((R, d + 1, k), np.float32)  # (runs, d + 1, k)
        self.stack[:] = np.concatenate([model.W, model.b[None, :]]).astype(np.float32)
        self.params = self.stack[0]
        self.W, self.b = self.stack[:, :-1], self.stack[:, -1]  # (runs, d, k), (runs, k)
        self.B = first.batch_size
        scales = list(dict.fromkeys(c.input_scale for c in configs))
        self.inputs = [Inputs(s, self.low, self.B, d) for s in scales]  # one per input scale of the runs
        self.scale_of = [scales.index(c.input_scale) for c in configs]  # run -> its inputs
        self.wd = np.float32(first.weight_decay)
        self.scalers = [LossScaler(c.loss_scaling, profile(c.framework).scaler) for c in configs]
        rules = profile(first.framework).rules(first.dtype)
        self.bias_after = rules.bias_after  # TF's MatMul, then BiasAdd
        self.product_rounded = rules.update == "product_rounded"  # TF's assign_sub(lr * g): lr * g rounded too
        self.scaler = self.scalers[0]
        self.z = np.empty((R, self.B, k), np.float32)  # (runs, B, k) reused
        self.gW = np.empty((R, d, k), np.float32)  # (runs, d, k) reused
        self.rows_k = np.arange(k)

    def _weights(self) -> tuple[np.ndarray, np.ndarray]:
        """``(W, b)`` as the product sees them: the parameters (pure), rounded master weights (mixed)."""
        if self.mixed:
            return round_to(self.W, self.low), round_to(self.b, self.low)
        return self.W, self.b

    def _gradients(self, xs: list, dz: np.ndarray, scale) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(dL/dW, dL/db, scaled ones finite, unscaled ones finite)`` of every run: the gradients in float32,
        rounded half products of ``dz`` (runs, B, k) (scaled in mixed precision), unscaled; whether each run's
        scaled ones were finite (GradScaler's test) and whether its unscaled ones are (the NaN report's)."""
        g = np.array(dz, np.float32, order="C")  # (runs, B, k), already scaled: the loss took the scale (its grad_scale)
        if self.mixed:
            g = round_to(g, self.low, out=g)  # autocast's cast of the gradient to the dtype
        gW = self.gW
        for r, x in enumerate(xs):
            np.matmul(x.T, g[r], out=gW[r])  # (d, k) each run's own product
        round_to(gW, self.low, out=gW)
        gb = round_to(np.sum(g, axis=1, dtype=np.float32), self.low)  # (runs, k)
        scaled_ok = _finite_runs(gW) & _finite_runs(gb)  # GradScaler's found_inf, before the unscaling
        if not self.mixed or not (scale != 1).any():
            return gW, gb, scaled_ok, scaled_ok
        inv = (np.float64(1.0) / scale.astype(np.float64)).astype(np.float32)  # GradScaler's float32 reciprocal
        gW *= inv  # (runs, 1, 1): runs of scale 1 unchanged
        gb *= inv[:, 0]
        # a factor in (0, 1] keeps finite finite and non-finite non-finite; a larger one can overflow
        tame = ((inv > 0) & (inv <= 1))[:, 0, 0]
        if tame.all():
            return gW, gb, scaled_ok, scaled_ok
        return gW, gb, scaled_ok, np.where(tame, scaled_ok, _finite_runs(gW) & _finite_runs(gb))

    def step(self, step: int, j: int, lr) -> tuple[float, bool]:
        idx, y = self.take(j)
        loss, bad = self.step_runs(step, idx, y, lr)
        return float(loss[0]), bool(bad[0])

    def step_runs(self, step: int, idx: np.ndarray, y: np.ndarray, lr) -> tuple[np.ndarray, np.ndarray]:
        """Step every run on the batch ``idx`` (labels ``y``) at learning rate ``lr`` (float32: one, or (runs, 1, 1));
        return each run's mean loss (runs,) and whether its loss or gradient was non-finite (runs,)."""
        pixels = self.images[idx]  # (B, d) gather, once
        by_scale = [inputs(pixels) for inputs in self.inputs]  # (B, d) scale + round, once per input scale
        xs = [by_scale[i] for i in self.scale_of]  # each run's
        W, b = self._weights()
        for r, x in enumerate(xs):
            np.matmul(x, W[r], out=self.z[r])  # (B, k) each run's own product
        z = linear_bias(self.z, b[:, None, :], self.low, held=not self.loss_low, bias_after=self.bias_after)
        # (runs, B, k) the dtype's logits: in the dtype where every loss computes in it (pure, a policy's half ops),
        # else held in float32 (autocast's float32 loss; _loss casts a half-dtype loss's own runs)
        scale = np.array([s.scale for s in self.scalers], np.float32)[:, None, None] if self.mixed else 1.0
        loss, dz, p = self._loss(z, y, scale)  # (runs,), (runs, B, k): d(scale L)/dz, softmax(z)
        gW, gb, scaled_ok, grad_ok = self._gradients(xs, dz, scale)
        bad = self._account(step, z, loss, p, grad_ok, idx, y)  # (runs,) non-finite loss or gradient
        apply = np.ones(len(xs), bool)
        for r, (acct, scaler) in enumerate(zip(self.accts, self.scalers)):
            if bad[r] and self.mixed and acct.snapshot.step == step:
                acct.snapshot.loss_scale = float(scaler.scale)  # before the scaler changes it
            skipped = acct.skip(step, scaler, bool(scaled_ok[r])) if self.mixed else False
            apply[r] = not (acct.halts(bad[r]) or skipped)
        if apply.all():
            self._update(gW, gb, lr)
        else:
            for r in np.flatnonzero(apply):
                self._update(gW[r], gb[r], lr if np.ndim(lr) == 0 else lr[r], runs=slice(r, r + 1))
        return loss, bad

    def _account(self, step: int, z: np.ndarray, loss: np.ndarray, p: np.ndarray, grad_ok: np.ndarray, idx: np.ndarray,
                 y: np.ndarray) -> np.ndarray:
        """:meth:`Accounting.record` of every run on its logits ``z`` (runs, B, k), in block form
        (:meth:`Accounting.record_block`); returns (runs,) whether each run's loss or gradient was non-finite.

        Each example's gap ``max(z) - min(z)`` is the one its run's loss arithmetic gives (:meth:`_as_seen`):
        found in float32 on a (runs, k, B) copy, where a reduction over the classes reduces rows (~10x faster
        than over ten contiguous classes), and rounded once to the half dtype where the loss computes in it.
        That is the dtype's own subtraction: max and min are exact, and float32's 24 bits are at least twice
        a half format's significand plus 2, so the double rounding is harmless. A run past the healthy gap has
        its zero probabilities ``p`` counted in all its rows, as the stacked engine counts them: a row within it
        has none (:func:`mnist_cli.losses.healthy_gap`'s proof), nor an infinite logit (its gap is inf or nan)."""
        zt = np.ascontiguousarray(z.transpose(0, 2, 1), np.float32)  # (runs, k, B) the held values
        gaps = np.maximum.reduce(zt, axis=1)
        gaps -= np.minimum.reduce(zt, axis=1)  # (runs, B) max - min, nan where z has nan
        if self.run_low.all():
            round_to(gaps, self.low, out=gaps)
        elif self.run_low.any():
            gaps[self.run_low] = round_to(gaps[self.run_low], self.low)
        gap = np.maximum.reduce(gaps, axis=1)  # (runs,) each run's largest (nan if any is)
        for acct, g in zip(self.accts, gap.tolist()):
            acct.observe_gap(g)
        unhealthy = ~(gap <= self.healthy)  # a probability may be 0 (or z is nan): count them
        zeros = infs = np.zeros(len(gap), np.intp)
        if unhealthy.any():
            zeros = (p == 0).reshape(len(gap), -1).sum(axis=1)
            if not np.isfinite(gap).all():  # an inf logit makes its gap inf or nan
                infs = np.isinf(zt).reshape(len(gap), -1).sum(axis=1)
        return Accounting.record_block(self.accts, step, loss, grad_ok, unhealthy, zeros, infs, lambda r: Snapshot(
            step, np.array(idx), np.array(y), np.array(self._as_seen(z[r], self.run_low[r]))))

    def _loss(self, z: np.ndarray, y: np.ndarray, scale) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each run's loss record on its logits ``z`` (runs, B, k): ``(L (runs,), d(scale L)/dz, softmax(z))``
        (runs, B, k), as the record's reference computes one run (the ``logits`` of its record in
        :data:`mnist_cli.losses.LOSSES`), one call per loss."""
        t = (slice(None), y, np.arange(y.shape[0]))  # zt[t] (runs, B): each example's target
        onehot = y[:, None] == self.rows_k  # (B, k)
        Y = onehot.astype(z.dtype).T  # (k, B) one-hot, as a view of (B, k), in the dtype of the logits the loss sees
        if len(self.by_loss) == 1 and self.loss_low == (z.dtype == self.low):
            (rec, _, _), = self.by_loss
            loss, dzt, p = rec.logits(z.transpose(0, 2, 1), t, Y, scale, self.framework)  # classes on axis 1
            return np.asarray(loss).reshape(-1), dzt.transpose(0, 2, 1), p.transpose(0, 2, 1)
        loss, dz, p = np.empty(z.shape[0], z.dtype), np.empty_like(z), np.empty_like(z)
        for rec, runs, low in self.by_loss:  # z[runs]: a C-ordered copy, so each run's classes stay contiguous
            part = scale if np.ndim(scale) == 0 else scale[runs]
            zr = self._as_seen(z[runs], low)  # z[runs]: a copy, cast where the policy computes this loss in the dtype
            Yr = Y if zr.dtype == Y.dtype else onehot.astype(zr.dtype).T
            loss[runs], dzt, pt = rec.logits(zr.transpose(0, 2, 1), t, Yr, part, self.framework)
            dz[runs], p[runs] = dzt.transpose(0, 2, 1), pt.transpose(0, 2, 1)
        return loss, dz, p

    def _as_seen(self, z: np.ndarray, low: bool) -> np.ndarray:
        """Logits ``z`` as a loss sees them: cast to the dtype where the loss computes in it (``low``), else as held."""
        return z.astype(self.low) if low and z.dtype != self.low else z

    def _update(self, gW: np.ndarray, gb: np.ndarray, lr, runs: slice = slice(None)) -> None:
        """``W -= lr * (dL/dW + wd * W)``, ``b -= lr * dL/db`` of the ``runs`` (``gW`` (runs, d, k) or one run's (d, k),
        ``lr`` a number or (runs, 1, 1)): in float32 (mixed); pure as torch's
        ``add_`` (the module docstring): lr and wd rounded to the dtype, ``W`` rounded once, ``b``'s product
        rounded too."""
        W, b = self.W[runs], self.b[runs]
        lr = np.asarray(lr, np.float32)
        if self.mixed:
            if self.wd:
                gW = gW + self.wd * W
            W -= lr * gW
            b -= lr[..., 0] * gb if lr.ndim else lr * gb
            return
        lr = lr.astype(self.low).astype(np.float32)  # add_'s alpha, in the tensor's dtype
        if self.wd:
            gW = round_to(gW + np.float32(self.low.type(self.wd)) * W, self.low)
        W -= round_to(lr * gW, self.low) if self.product_rounded else lr * gW
        b -= round_to((lr[..., 0] if lr.ndim else lr) * gb, self.low)
        params = self.stack[runs]
        round_to(params, self.low, out=params)

    def finite(self) -> bool:
        return _finite(self.params)

    def finite_run(self, r: int) -> bool:
        """Whether every parameter of run ``r`` is finite."""
        return _finite(self.stack[r])

    def export(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dtype = np.float32 if self.mixed else self.low
        return params[:-1].astype(dtype), params[-1].astype(dtype)

    def close(self) -> None:
        pass


def train_half_stack(images: np.ndarray, labels: np.ndarray, configs: list[TrainConfig], t0: float) -> list[TrainResult]:
    """Train float16/bfloat16 runs of one :func:`mnist_cli.engine.stacked.stack_key` (started at ``t0``), stepped
    together by one :class:`LowPrecisionSGD` (each run's numbers those of the run alone: its docstring), on the
    schedule :func:`mnist_cli.engine.train` gives a run the stack admits (no decay, averaging or early stop)."""
    first = configs[0]
    n, d = images.shape
    steps = first.steps
    model, init_digest, order_rng = base.initial_model(first, d, N_CLASSES)
    accts = [base.run_accounting(c, steps, N_CLASSES) for c in configs]
    engine = LowPrecisionSGD(images, labels, model, configs, accts)
    losses = np.empty((len(configs), steps))  # (runs, steps)
    lr = np.array([DTYPES["float32"].type(c.lr) for c in configs], np.float32)[:, None, None]  # half: float32 opmath
    order_hash = hashlib.sha256()
    step = 0
    with np.errstate(all="ignore"), blas_pinned():
        for perm, count in base._epochs(n, first.batch_size, steps, order_rng):
            engine.begin_epoch(perm, count)
            for j in range(count):
                step += 1
                idx, y = engine.take(j)
                losses[:, step - 1], bad = engine.step_runs(step, idx, y, lr)
                for r in np.flatnonzero(bad):
                    if not accts[r].nan.params_nonfinite:
                        accts[r].check_params(step, engine.finite_run(r))
            base.consumed_digest(order_hash, *engine.consumed(count))
        for r, acct in enumerate(accts):
            acct.steps_done = step
            acct.check_params(step, engine.finite_run(r))
    digest, share = order_hash.hexdigest(), (time.perf_counter() - t0) / len(configs)
    results = []
    for r, (config, acct) in enumerate(zip(configs, accts)):
        W, b = (np.array(a) for a in engine.export(engine.stack[r]))
        results.append(base.build_result(config, W, b, acct, losses[r].copy(), share, digest, init_digest, engine="stack",
                                    extras={"accounting": acct, "stack": len(configs)}))
    return results
