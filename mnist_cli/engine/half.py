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
product. (A build without SIMD, ``ATEN_CPU_CAPABILITY=default``, rounds ``W``'s product too.)

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

from collections.abc import Callable

import numpy as np

from mnist_cli.engine.base import BatchesTaken, loss_dtype
from mnist_cli.frameworks import Scaler, profile
from mnist_cli.rounding import Inputs, as_dtype, linear, round_to
from mnist_cli.settings import LossScale

__all__ = ["LossScaler", "LowPrecisionSGD"]

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


class LowPrecisionSGD(BatchesTaken):
    """The SGD engine of a float16 or bfloat16 run (an :class:`mnist_cli.engine.base.Engine`), pure or mixed.

    The parameters are one float32 array ``[W; b]`` (d + 1, k): the dtype's values (pure) or the float32
    master weights (mixed). See the module docstring for every rounding. Like every engine it runs inside
    the trainer's ``np.errstate(all="ignore")``: overflow to inf and NaN are results here, not errors.
    """

    def __init__(self, images, labels, model, config, loss_fn: Callable, acct):
        self.images, self.labels, self.loss_fn, self.acct = images, labels, loss_fn, acct
        self.low = as_dtype(config.dtype)
        self.mixed = config.precision == "mixed"
        self.params = np.concatenate([model.W, model.b[None, :]]).astype(np.float32)  # (d + 1, k)
        self.W, self.b = self.params[:-1], self.params[-1]
        self.B = config.batch_size
        self.inputs = Inputs(config.input_scale, self.low, self.B, images.shape[1])
        self.wd = np.float32(config.weight_decay)
        self.scaler = LossScaler(config.loss_scaling, profile(config.framework).scaler)
        self.loss_low = loss_dtype(config) != "float32"  # the loss in the half dtype: pure, or a policy's half ops
        self.bias_after = profile(config.framework).rules(config.dtype).linear == "bias_after"  # TF's MatMul, BiasAdd
        self.z = np.empty((self.B, self.b.shape[0]), np.float32)  # (B, k) reused

    def _weights(self) -> tuple[np.ndarray, np.ndarray]:
        """``(W, b)`` as the product sees them: the parameters (pure), rounded master weights (mixed)."""
        if self.mixed:
            return round_to(self.W, self.low), round_to(self.b, self.low)
        return self.W, self.b

    def _gradients(self, x: np.ndarray, dz: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, bool]:
        """``(dL/dW, dL/db, scaled ones finite, unscaled ones finite)``: the gradients in float32, rounded half
        products of ``dz`` (scaled in mixed precision), unscaled; whether the scaled ones were finite
        (GradScaler's test) and whether the unscaled ones are (the NaN report's)."""
        scale = self.scaler.scale if self.mixed else np.float32(1)
        g = dz.astype(np.float32)  # (B, k), already scaled: the loss took the scale (loss_fn's grad_scale)
        if self.mixed:
            g = round_to(g, self.low, out=g)  # autocast's cast of the gradient to the dtype
        gW = round_to(x.T @ g, self.low)  # (d, k)
        gb = round_to(np.sum(g, axis=0, dtype=np.float32), self.low)  # (k,)
        scaled_ok = _finite(gW) and _finite(gb)  # GradScaler's found_inf, before the unscaling
        if scale == 1:
            return gW, gb, scaled_ok, scaled_ok
        inv = np.float32(np.float64(1.0) / np.float64(scale))  # GradScaler's float32 reciprocal (inf at 0)
        gW *= inv
        gb *= inv
        # a factor in (0, 1] keeps finite finite and non-finite non-finite; a larger one can overflow
        unscaled_ok = scaled_ok if 0 < inv <= 1 else _finite(gW) and _finite(gb)
        return gW, gb, scaled_ok, unscaled_ok

    def step(self, step: int, j: int, lr) -> tuple[float, bool]:
        idx, y = self.take(j)
        x = self.inputs(self.images[idx])  # (B, d) gather + scale + round
        W, b = self._weights()
        z32 = linear(x, W, b, self.low, out=self.z, bias_after=self.bias_after)  # (B, k) the dtype's logits, in float32
        z = z32.astype(self.low) if self.loss_low else z32  # what the loss sees: the dtype's, or float32 (the policy)
        loss, dz = self.loss_fn(z, y, self.scaler.scale) if self.mixed else self.loss_fn(z, y)  # d(scale L)/dz
        gW, gb, scaled_ok, grad_ok = self._gradients(x, dz)
        bad = self.acct.record(step, loss, z, gb, idx, y, grad_finite=grad_ok)
        if bad and self.mixed and self.acct.snapshot.step == step:
            self.acct.snapshot.loss_scale = float(self.scaler.scale)  # before the scaler changes it
        skipped = self.acct.skip(step, self.scaler, scaled_ok) if self.mixed else False
        if self.acct.halts(bad) or skipped:
            return loss, bad
        self._update(gW, gb, np.float32(lr))
        return loss, bad

    def _update(self, gW: np.ndarray, gb: np.ndarray, lr: np.float32) -> None:
        """``W -= lr * (dL/dW + wd * W)``, ``b -= lr * dL/db``: in float32 (mixed); pure as torch's ``add_``
        (the module docstring): lr and wd rounded to the dtype, ``W`` rounded once, ``b``'s product rounded too."""
        if self.mixed:
            if self.wd:
                gW = gW + self.wd * self.W
            self.W -= lr * gW
            self.b -= lr * gb
            return
        lr = np.float32(self.low.type(lr))  # add_'s alpha, in the tensor's dtype
        if self.wd:
            gW = round_to(gW + np.float32(self.low.type(self.wd)) * self.W, self.low)
        self.W -= lr * gW
        self.b -= round_to(lr * gb, self.low)
        round_to(self.params, self.low, out=self.params)

    def finite(self) -> bool:
        return _finite(self.params)

    def export(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dtype = np.float32 if self.mixed else self.low
        return params[:-1].astype(dtype), params[-1].astype(dtype)

    def close(self) -> None:
        pass
