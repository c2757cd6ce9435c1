"""Cross-entropy losses of softmax regression, in pure NumPy: one record per loss (:data:`LOSSES`).

Every loss takes raw logits ``z`` of shape (n, k) and integer labels ``y`` of shape (n,) and returns
``(loss, dlogits)``: the mean loss over the batch (a Python float) and its gradient with respect to
``z`` (same shape and dtype as ``z``). The trainer picks a loss from :data:`LOSSES` by name and never
looks inside.

    >>> import numpy as np
    >>> z = np.array([[1000.0, 0.0]], dtype=np.float32)
    >>> fused(z, np.array([1]))[0]     # log-sum-exp inside: finite
    1000.0
    >>> naive(z, np.array([1]))[0]     # the target's p underflowed: -log(0) = inf
    inf
    >>> naive(z, np.array([0]))[0]     # a non-target p underflowed: 0 * log(0) = 0 * -inf = nan
    nan

**Layouts.** Each formula is written once, shape-generic, with the classes on axis 1 and the examples
on the last axis of a per-example array: the reference layout of one run, ``z`` (n, k), and the stacked
layout of many runs sharing a batch, ``shifted`` (runs, k, B) (:mod:`mnist_cli.engine.stacked`), run
through the same lines. The fast engine's healthy steps take a third layout, :class:`FusedKernel`
(transposed, in place), tested against :func:`fused` bit for bit in its loss and to rounding in its
gradient.

**Precision.** Every function works in the dtype of ``z``: float64, float32, float16, or bfloat16
(``ml_dtypes.bfloat16``). Each elementwise operation (``-``, ``*``, ``/``, ``exp``, ``log``,
``maximum``...) rounds its result to that dtype: NumPy's float16 loops and ml_dtypes' bfloat16 loops
compute in float32 and round once, which for ``+ - * /`` is the correctly rounded result (float32's 24
bits are at least twice a half format's 11 or 8, plus 2, so the double rounding is harmless). The
reductions are :mod:`mnist_cli.rounding`'s (float32 accumulation for the half formats, as PyTorch's CPU
reductions do; the division by ``n`` exact).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mnist_cli.frameworks import PLAIN, Rules, profile
from mnist_cli.rounding import as_dtype, batch_mean, cast, class_sum, div_n, finfo, flush, is_half

__all__ = ["Loss", "LOSSES", "rules_of", "softmax", "log_softmax", "onehot", "fused", "naive", "clipped", "naive_from_probs",
           "clipped_from_probs", "softmax_backward", "FusedKernel", "CLIP_MIN", "underflow_limit", "gradient_overflow_limit",
           "healthy_gap", "breaks_like_naive"]

#: The lower bound of the popular ``log(clip(p, 1e-10, 1))`` workaround.
CLIP_MIN = 1e-10


def rules_of(framework, dtype) -> Rules:
    """The arithmetic :class:`mnist_cli.frameworks.Rules` of ``framework`` (a name, a profile, or None: the
    lab's plain IEEE arithmetic) in ``dtype``."""
    return PLAIN if framework is None else profile(framework).rules(dtype)


def _once(rules: Rules, dtype) -> bool:
    """Whether softmax (and its backward) is computed in float32 and rounded once to the half ``dtype``."""
    return rules.softmax == "float32_once" and is_half(dtype)


def _divide(e: np.ndarray, s: np.ndarray, rules: Rules) -> np.ndarray:
    """``e / s`` (NumPy, PyTorch's division) or ``e * (1 / s)`` (TF's Eigen softmax), results flushed under FTZ."""
    return flush(e * (s.dtype.type(1) / s) if rules.softmax_divide == "reciprocal" else e / s, rules.ftz)


def _softmax_shifted(shifted: np.ndarray, rules: Rules = PLAIN) -> np.ndarray:
    """``exp(shifted) / sum_j exp(shifted_j)`` over the classes (axis 1), ``shifted = z - max(z)``."""
    e = flush(np.exp(shifted), rules.ftz)  # each in [0, 1]; under FTZ 0 below the smallest normal
    return _divide(e, class_sum(e), rules)


def _shift(z: np.ndarray, rules: Rules) -> np.ndarray:
    """``z - max(z)`` over the classes as the framework computes it: in float32 for a softmax rounded once,
    else in z's dtype (subnormal inputs read as 0 under DAZ, subnormal results flushed under FTZ)."""
    if _once(rules, z.dtype):
        z = z.astype(np.float32)
    z = flush(z, rules.daz)
    return flush(z - np.amax(z, axis=1, keepdims=True), rules.ftz)


def softmax(z: np.ndarray, framework=None) -> np.ndarray:
    """Row-wise ``softmax(z)_j = exp(z_j - m) / sum_i exp(z_i - m)`` with ``m = max_i z_i``.

    The max shift is what ``tf.nn.softmax`` does: it prevents overflow, but entries whose gap to the
    row maximum exceeds about 104 (float32), 745 (float64), 17.3 (float16) or 92.9 (bfloat16) still
    underflow to exactly 0 (a little less after the division by the row sum); see
    :func:`underflow_limit`. A gap beyond the largest float makes ``z - m`` itself
    ``-inf``, whose exp is 0 as well. ``framework``: compute as that profile does
    (:mod:`mnist_cli.frameworks`: TensorFlow flushes subnormals, so its float32 limit is 87.3; PyTorch computes
    a half-precision softmax in float32 and rounds it once).
    """
    rules = rules_of(framework, z.dtype)
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        return cast(_softmax_shifted(_shift(z, rules), rules), z.dtype)  # (n, k)


# --- where softmax breaks, per dtype --------------------------------------------------------------


def underflow_limit(dtype, framework=None) -> float:
    """``-log(smallest subnormal / 2)``: a logit farther than this below the row maximum has an exact
    ``exp(z - max)`` below half the smallest positive number of ``dtype``, which rounds to exactly 0
    (and so does its probability); a shade nearer, exp still rounds up to the smallest subnormal.

    About 104.0 for float32, 745.1 for float64, 17.3 for float16 and 92.9 for bfloat16 (whose exponent
    range is float32's, with 8 significand bits instead of 24). (``-log(smallest subnormal)``, 103.3
    and 744.4, is where the exact value drops below the smallest subnormal, not where the rounded one
    is 0.)
    """
    if framework is not None:  # TensorFlow's FTZ: -log(smallest normal), 87.3 in float32
        return profile(framework).underflow_limit(dtype)
    # log(2) - log(s), not -log(s / 2): half the float64 smallest subnormal is 0 in Python floats
    return math.log(2) - math.log(float(finfo(dtype).smallest_subnormal))


def _overflow_threshold(dtype) -> float:
    """``max + ulp(max) / 2``: the smallest exact value that rounds to +inf (ties to even go up here)."""
    f = finfo(dtype)
    return float(f.max) * (1 + float(f.eps) / 4)  # ulp(max) = max * eps / (2 - eps) ~ max * eps / 2


def gradient_overflow_limit(dtype, batch: int = 1, ties: float = 9) -> float:
    """The gap ``max(z) - z[target]`` from which the naive gradient ``(-1/n) / p[target]`` overflows to -inf.

    ``log(M / (r * ties))``, with ``M`` the smallest value that rounds to inf in ``dtype``
    (:func:`_overflow_threshold`), ``r = 1/n`` rounded to the dtype (what ``mean``'s backward divides
    by), and ``ties = sum over the other classes of exp(z_j - max)``, so ``p[target] ~ exp(-gap) / ties``:
    ``r / p`` reaches ``M`` when ``exp(gap) = M / (r * ties)``.

    The earliest case is the default: one example (``n = 1``) whose target is the low logit and whose 9
    other logits tie at the maximum, 86.5 in float32 (bfloat16 too), 707.6 in float64, 8.9 in float16.
    A batch of 100 moves it by ``log(100)``, to 91.1 / 712.2 / 13.5 (bfloat16 91.1), and a single
    maximum (``ties = 1``) by ``log(9)`` more, to 93.3 / 714.4 / 15.7. Below :func:`underflow_limit`
    the loss is still finite there: only the gradient breaks.
    """
    r = float(np.asarray(1.0 / batch).astype(as_dtype(dtype)))  # 1/n as the dtype holds it
    return math.log(_overflow_threshold(dtype)) - math.log(r) - math.log(ties)


def healthy_gap(dtype_name: str, k: int, framework=None) -> float:
    """``-log(k * u)``, ``u`` the smallest subnormal (about 101.0 in float32, 742.1 in float64 for
    ``k = 10``): when an example's logit gap ``max(z) - min(z)`` is at most this, none of its ``k``
    softmax probabilities is 0. The accounting counts zero probabilities only past it, and the fast
    kernel takes only steps within it. ``log(2 k)`` below :func:`underflow_limit`:
    conservative on purpose.

    Proof, for ``p_j = fl(e_j / s)``, ``e_j = fl(exp(x_j))``, ``x_j = fl(z_j - max(z))``, ``s = fl(sum_j e_j)``
    (:func:`mnist_cli.losses.softmax`; the fused kernel shifts and sums the same way), assuming exp is
    within fewer than ``k / 2`` ulps of the exact value (NumPy's, measured near these limits: float32
    < 2.5 ulps, float64 < 1 ulp) and rounding to nearest:

    1. The computed gap ``g = fl(max - min) = -fl(min - max)`` is minus the smallest ``x_j``, so every
       ``x_j`` is in ``[-g, 0]``, and the exact ``exp(x_j) >= exp(-g) >= k u``.
    2. Below the smallest normal number the ulp is ``u``, so ``e_j > k u - (k / 2) u = (k / 2) u``
       (above it, the relative error is far too small to matter).
    3. Every ``e_j <= 1`` (``exp(0) = 1`` exactly) and the row maximum gives one ``e = 1``, so
       ``1 <= s <= k``: rounding is monotone and a rounded sum of ``m`` terms of at most 1 is at most
       ``m``, which is representable.
    4. So ``e_j / s > (k / 2) u / k = u / 2``, which rounds to at least ``u > 0``. QED

    Under a profile that flushes subnormals (``framework``, TensorFlow) the same holds with ``u`` the smallest
    normal number and a factor 2 to spare: ``-log(2 k u)`` (84.6 in float32): every ``e_j >= 2 k u (1 - eps)``,
    so ``e_j / s >= 2 u (1 - eps)^2 > u``, never flushed.
    """
    if framework is not None and profile(framework).rules(dtype_name).ftz:
        return -math.log(2 * k * float(finfo(dtype_name).smallest_normal))
    return -math.log(k * float(finfo(dtype_name).smallest_subnormal))


def breaks_like_naive(loss: str, dtype) -> bool:
    """Whether ``loss``'s gradient ``(-y_ / n) / p`` can overflow in ``dtype`` (its record's ``breaks``)."""
    return LOSSES[loss].breaks(as_dtype(dtype))


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise ``log_softmax(z)_j = (z_j - m) - log(sum_i exp(z_i - m))``, ``m = max_i z_i``.

    Finite for finite z, except where ``z_j - m`` itself overflows (a gap beyond the largest float):
    that entry is ``-inf``, the correctly rounded value.
    """
    z_max = np.amax(z, axis=1, keepdims=True)  # (n, 1)
    with np.errstate(under="ignore", over="ignore"):
        shifted = z - z_max  # (n, k), all <= 0
        return shifted - np.log(class_sum(np.exp(shifted)))  # (n, k)


def onehot(y: np.ndarray, k: int, dtype) -> np.ndarray:
    """``Y[i, j] = 1 if y[i] == j else 0``: the tutorial's ``y_``."""
    out = np.zeros((y.shape[0], k), dtype=dtype)
    out[np.arange(y.shape[0]), y] = 1
    return out


def softmax_backward(p: np.ndarray, g: np.ndarray, rules: Rules = PLAIN) -> np.ndarray:
    """Reverse-mode softmax over the classes: ``dL/dz = p * (g - sum_j(g_j * p_j))`` given ``g = dL/dp``.

    PyTorch's CPU ``_softmax_backward_data`` computes ``(g - sum(g * p)) * p`` (TF's SoftmaxGrad the
    same), bit for bit this product; in a half dtype PyTorch computes it in float32 and rounds once
    (``rules.softmax == "float32_once"``); under FTZ each product's subnormals are flushed.
    """
    if _once(rules, p.dtype):
        p32, g32 = p.astype(np.float32), g.astype(np.float32)
        return cast(p32 * (g32 - np.sum(g32 * p32, axis=1, keepdims=True)), p.dtype)
    return flush(p * (g - class_sum(flush(g * p, rules.ftz))), rules.ftz)


def _upstream(Y: np.ndarray, grad_scale) -> np.ndarray:
    """``-Y * grad_scale``: what reaches ``mean``'s backward times the one-hot labels, before ``/ n``
    (exact: ``Y`` is 0 or 1; ``grad_scale`` a number or one per run of a stack, (runs, 1, 1))."""
    return -Y * np.asarray(grad_scale).astype(Y.dtype) if np.any(grad_scale != 1.0) else -Y


def _log_backward(g_in: np.ndarray, p: np.ndarray, rules: Rules = PLAIN) -> np.ndarray:
    """Reverse-mode ``log``: ``dL/dp = g_in / p`` (PyTorch's ``grad / self``), ``g_in`` the gradient reaching log;
    TensorFlow's ``grad * reciprocal(x)`` (``rules.log_backward == "reciprocal"``: another rounding in float16)."""
    if rules.log_backward == "reciprocal":
        return flush(g_in * (p.dtype.type(1) / p), rules.ftz)  # 0 * inf = nan, -x * inf = -inf
    return g_in / p  # 0/0 = nan, -x/0 = -inf, and -inf where g_in/p overflows


def _examples(a: np.ndarray) -> int:
    """The examples of a batch: rows of the reference layout (n, k), the last axis of the stacked (runs, k, B)."""
    return a.shape[-1] if a.ndim == 3 else a.shape[0]


def _fused(shifted, t, Y, grad_scale: float = 1.0, rules: Rules = PLAIN):
    """:func:`fused` in either layout: ``(L, dL/dz, softmax(z))`` from ``shifted = z - max(z)`` (float32 for a
    half dtype computed once, ``Y``'s dtype the result's: each row's loss and ``p`` rounded once to it)."""
    n, dtype = _examples(shifted), Y.dtype
    e = flush(np.exp(shifted), rules.ftz)  # in [0, 1]; some may underflow to 0, harmlessly
    s = class_sum(e)  # in [1, k]
    if rules.fused_form == "labels":  # TF's kernel: sum_j y_j (logsumexp - z_j): 0 * inf = nan for a -inf z_j
        rows = class_sum(Y.astype(shifted.dtype, copy=False) * (np.log(s) - shifted))[:, 0].astype(dtype, copy=False)
    else:
        rows = (np.log(s[:, 0]) - shifted[t]).astype(dtype, copy=False)  # logsumexp(z) - z[y], m cancels
    loss = batch_mean(rows, rules.nll_sum)
    p = cast(_divide(e, s, rules), dtype)  # softmax(z)
    grad = flush(div_n(p - Y, n), rules.ftz)  # (softmax(z) - onehot(y)) / n
    if np.any(grad_scale != 1.0):
        grad *= np.asarray(grad_scale).astype(grad.dtype)  # the gradient of grad_scale * L (per run in a stack)
    return loss, grad, p


def _fused_logits(z, t, Y, grad_scale=1.0, framework=None):
    """:func:`fused` in either layout, from the logits (classes on axis 1): ``(L, dL/dz, softmax(z))``."""
    rules = rules_of(framework, z.dtype)
    loss, grad, p = _fused(_shift(z, rules), t, Y, grad_scale, rules)
    if rules.fused_float32 and is_half(z.dtype):  # TF's float16 kernel: the loss from a float32 shift, no -inf
        loss = _fused(_shift(z.astype(np.float32), rules), t, Y, grad_scale, rules)[0]
    return loss, grad, p


def _naive(p, Y, grad_scale: float = 1.0, rules: Rules = PLAIN):
    """:func:`naive_from_probs` in either layout: ``(L, dL/dz)`` from ``p = softmax(z)``."""
    n = _examples(p)
    loss = batch_mean(-class_sum(Y * np.log(p))[:, 0], rules.mean_sum)  # log(0) = -inf, 0 * -inf = nan
    g = _log_backward(div_n(_upstream(Y, grad_scale), n), p, rules)  # dL/dp = (-y_ / n) / p
    return loss, softmax_backward(p, g, rules)


def _clipped(p, Y, grad_scale: float = 1.0, rules: Rules = PLAIN):
    """:func:`clipped_from_probs` in either layout: ``(L, dL/dz)`` from ``p = softmax(z)``."""
    n = _examples(p)
    lo, hi = p.dtype.type(CLIP_MIN), p.dtype.type(1)  # the clip bounds, rounded to the dtype
    p_c = np.minimum(np.maximum(p, lo), hi)  # clip(p); np.clip would promote bfloat16 to float32
    loss = batch_mean(-class_sum(Y * np.log(p_c))[:, 0], rules.mean_sum)
    live = (p >= lo) & (p <= hi)  # where clip passes the gradient
    g = np.where(live, _log_backward(div_n(_upstream(Y, grad_scale), n), p_c, rules), p.dtype.type(0))  # dL/dp
    return loss, softmax_backward(p, g, rules)


_QUIET = dict(divide="ignore", invalid="ignore", over="ignore", under="ignore")


def fused(z: np.ndarray, y: np.ndarray, grad_scale: float = 1.0, framework=None) -> tuple[float, np.ndarray]:
    """``softmax_cross_entropy_with_logits``: ``L = mean_i(logsumexp(z_i) - z_i[y_i])``.

    With ``m_i = max_j z_ij``, ``logsumexp(z_i) = m_i + log(sum_j exp(z_ij - m_i))``; the shifted
    exponentials are at most 1 and their sum is at least 1, so the log never sees 0 and the loss is
    finite for any finite logits whose spread ``max - min`` is within the float range. Gradient:
    ``dL/dz = (softmax(z) - onehot(y)) / n``. Never forms ``log(softmax(z))``.

    Where ``max - min`` exceeds the largest float (float32 logits ``[3e38, -3e38]``, float16
    ``[6e4, -6e4]``), ``z - m`` rounds to ``-inf`` (silently) and its exp to 0: the row's loss is
    ``+inf`` if the target is such a logit (its exact value exceeds the largest float too, so ``inf`` is
    the correctly rounded loss) and finite otherwise; the gradient stays finite, that entry's
    probability being 0. Non-finite logits give NaN (``inf - inf`` in the shift). ``grad_scale``: see
    :class:`Loss`. ``framework``: as that profile computes it (TF's kernel: NaN for a non-target ``-inf``
    logit; PyTorch's float16 ``nll_loss``: the batch sum rounded to float16).
    """
    with np.errstate(**_QUIET):
        loss, grad, _ = _fused_logits(z, (np.arange(z.shape[0]), y), onehot(y, z.shape[1], z.dtype), grad_scale, framework)
    return float(loss), grad


def naive(z: np.ndarray, y: np.ndarray, grad_scale: float = 1.0, framework=None) -> tuple[float, np.ndarray]:
    """The tutorial's first version: ``p = softmax(z)``, ``L = mean_i(-sum_j(y_ij * log(p_ij)))``.

    The gradient is what autodiff takes *through* that graph, with no shortcut, in PyTorch autograd's
    order: ``mean``, ``-`` and ``sum`` backward give ``-1/n`` per entry, ``*`` backward ``(-1/n) * y_``
    (``= -y_ / n`` exactly), ``log`` backward ``g = dL/dp = (-y_ / n) / p`` (``0/0 = nan`` where a
    non-target p underflowed to 0; ``-inf`` where the target's did, or where ``1/(n p)`` overflows), then
    the softmax Jacobian ``dL/dz = p * (g - sum(g * p))``. Where no probability underflows it equals the
    fused gradient to rounding; where one does, the loss is nan (``0 * log(0) = 0 * -inf``) and the NaN
    spreads through the whole row of the gradient. ``grad_scale``: see :class:`Loss`.
    """
    return naive_from_probs(softmax(z, framework), y, grad_scale, framework)


def naive_from_probs(p: np.ndarray, y: np.ndarray, grad_scale: float = 1.0,
                     framework=None) -> tuple[float, np.ndarray]:
    """:func:`naive` after its softmax: ``(L, dL/dz)`` given ``p = softmax(z)`` (n, k).

    Split off so that a cross-check can replay this half on another framework's probabilities.
    """
    with np.errstate(**_QUIET):
        loss, grad = _naive(p, onehot(y, p.shape[1], p.dtype), grad_scale, rules_of(framework, p.dtype))
    return float(loss), grad


def clipped(z: np.ndarray, y: np.ndarray, grad_scale: float = 1.0, framework=None) -> tuple[float, np.ndarray]:
    """The common workaround ``L = mean_i(-sum_j(y_ij * log(clip(p_ij, 1e-10, 1))))``, ``p = softmax(z)``.

    Finite in float32 and float64, but biased: a confidently wrong example costs at most
    ``-log(1e-10) ~ 23`` and its gradient is dead, because clip passes no gradient outside
    ``1e-10 <= p <= 1`` (bounds included, as ``torch.clamp``'s backward): ``dL/dp = (-y_ / n) / clip(p)``
    there, else 0, then the softmax Jacobian. The bounds are rounded to the dtype: in float16 ``1e-10``
    rounds to 0 (the smallest subnormal is 6e-8), the clip does nothing and ``clipped`` is exactly
    ``naive``; in bfloat16 the floor is 1.00044e-10. ``grad_scale``: see :class:`Loss`.
    """
    return clipped_from_probs(softmax(z, framework), y, grad_scale, framework)


def clipped_from_probs(p: np.ndarray, y: np.ndarray, grad_scale: float = 1.0,
                       framework=None) -> tuple[float, np.ndarray]:
    """:func:`clipped` after its softmax: ``(L, dL/dz)`` given ``p = softmax(z)`` (n, k)."""
    with np.errstate(**_QUIET):
        loss, grad = _clipped(p, onehot(y, p.shape[1], p.dtype), grad_scale, rules_of(framework, p.dtype))
    return float(loss), grad


def _from_probs(rule):
    """A loss written on ``p`` (:func:`_naive`, :func:`_clipped`): its ``stacked`` and ``logits`` facets (:class:`Loss`)."""

    def stacked(shifted, t, Y):
        p = _softmax_shifted(shifted)  # (runs, k, B), may hold exact zeros
        return (*rule(p, Y), p)

    def logits(z, t, Y, grad_scale=1.0, framework=None):
        p = softmax(z, framework)  # as naive() and clipped() take it
        return (*rule(p, Y, grad_scale, rules_of(framework, p.dtype)), p)

    return stacked, logits


class FusedKernel:
    """:func:`fused` on transposed logits (the fast engine's layout), scaled for the SGD update; only for steps it
    proves healthy (``tests/test_engine_fast.py`` checks it against ``fused``)."""

    def __init__(self, k: int, dtype, healthy_gap: float):
        self.k, self.dtype, self.healthy_gap = k, dtype, healthy_gap
        self._buffers: dict[tuple, tuple] = {}  # shape -> (shifted, its class rows, row max, row sum, flat view)

    def _for_shape(self, shape: tuple) -> tuple:
        if shape not in self._buffers:
            m, _, w = shape
            sh = np.zeros(shape, self.dtype)  # rows past k (padding) stay zero: their gradient
            self._buffers[shape] = (sh, sh[:, : self.k], np.empty((m, 1, w), self.dtype),
                                    np.empty((m, 1, w), self.dtype), sh.reshape(-1))
        return self._buffers[shape]

    def __call__(self, zt: np.ndarray, t: np.ndarray, coef) -> tuple[float, float | None, np.ndarray]:
        """From logits ``zt`` (m, r, w) (m blocks of w examples, transposed; the first k of the r rows
        are the classes, any others padding) and the flat positions ``t`` of the targets in that
        array, return ``(gap, loss_sum, G)``: the largest logit gap of an example,
        ``sum_i(logsumexp(z_i) - z_i[y_i])`` and ``G = coef * (softmax(z) - onehot(y))`` (m, r, w), zero
        in the padding rows. ``loss_sum`` is None (and G unset) when the step is not proved healthy;
        the caller then runs the reference loss."""
        sh, shk, z_max, s, flat = self._for_shape(zt.shape)
        zk = zt[:, : self.k]  # (m, k, w) the class rows
        np.maximum.reduce(zk, axis=1, keepdims=True, out=z_max)  # (m, 1, w) the max shift
        np.subtract(zk, z_max, out=shk)  # (m, k, w), <= 0
        gap = -float(np.minimum.reduce(shk, axis=None))  # max over examples of max(z) - min(z); nan if z is
        if not gap <= self.healthy_gap:  # nan, inf, or a probability may underflow: not proved healthy
            return gap, None, sh
        z_y = flat[t]  # (m * w,) shifted target logits
        np.exp(shk, out=shk)  # (m, k, w) in (0, 1]
        np.add.reduce(shk, axis=1, keepdims=True, out=s)  # (m, 1, w) in [1, k]
        loss_sum = float(np.add.reduce(np.log(s).reshape(-1) - z_y))  # sum logsumexp(z) - z[y]; the max cancels
        np.divide(coef, s, out=s)  # (m, 1, w) coef / sum(exp)
        shk *= s  # (m, k, w) coef * softmax(z)
        flat[t] -= coef  # coef * (softmax(z) - onehot(y))
        return gap, loss_sum, sh


@dataclass(frozen=True)
class Loss:
    """Everything about one loss, read by every engine, the analysis and ``compare``.

    ``reference(z, y, grad_scale=1.0, framework=None) -> (L, d(grad_scale * L)/dz)`` on (n, k) logits
    (``framework``: a profile of :mod:`mnist_cli.frameworks`, None the plain IEEE arithmetic): ``grad_scale`` is
    the gradient autodiff starts from (a loss scaler's scale), entering where PyTorch's backward takes
    it; for naive and clipped that is before the ``log`` backward's division by ``p``, so
    ``(scale / n) / p`` can overflow where ``(1 / n) / p`` does not (with ``scale = 2**16``, ``n = 100``:
    from a gap of about 80 in float32 instead of 91). ``stacked(shifted, t, Y) -> (L (runs,), dL/dz, p)``
    is the same formula on the stacked layout (``shifted`` (runs, k, B) the logits less their max,
    ``shifted[t]`` the targets (runs, B), ``Y`` (k, B) one-hot). ``logits(z, t, Y, grad_scale=1.0, framework=None)``: the
    reference from logits in either layout (``grad_scale`` may be (runs, 1, 1)). ``fast``: the fast engine's kernel for
    the steps it proves healthy (None: the reference every step). ``promised_finite``: finite at every
    step in float32 and float64 whatever the setting (``compare`` checks it). ``breaks(dtype)``: whether
    the gradient ``(-y_ / n) / p`` can overflow in ``dtype``. Its sentences live in
    :mod:`mnist_cli.report.explain` under the same name.
    """

    name: str
    reference: Callable
    stacked: Callable
    logits: Callable
    fast: type | None
    promised_finite: bool
    breaks: Callable[[np.dtype], bool]
    ops: tuple[str, ...] = ()  # the graph's framework ops, the one taking the logits first (a policy's names)

    def mixed_dtype(self, float32_ops, dtype: str) -> str:
        """This loss's dtype under a policy running ``float32_ops`` in float32: float32 if its first op is listed (later
        ones follow their input), else ``dtype`` (CPU autocast's naive, Keras's); a later op listed alone is refused."""
        later = [op for op in self.ops[1:] if op in float32_ops]
        if self.ops[0] not in float32_ops and later:
            raise ValueError(f"a mixed policy listing {', '.join(later)} but not {self.ops[0]} is not computed here")
        return "float32" if self.ops[0] in float32_ops else dtype

    def __call__(self, z: np.ndarray, y: np.ndarray, grad_scale: float = 1.0, framework=None) -> tuple[float, np.ndarray]:
        return self.reference(z, y, grad_scale, framework)


def _clip_floor_is_zero(dtype: np.dtype) -> bool:
    """Whether :data:`CLIP_MIN` rounds to 0 in ``dtype`` (float16): then ``clipped`` is exactly ``naive``."""
    return bool(dtype.type(CLIP_MIN) == 0)


#: name -> :class:`Loss`: the only place a loss is chosen by name (:data:`mnist_cli.settings.LOSS_NAMES`' order).
LOSSES: dict[str, Loss] = {
    "fused": Loss("fused", fused, _fused, _fused_logits, FusedKernel, promised_finite=True,
                  breaks=lambda dtype: False, ops=("cross_entropy", "log_softmax", "nll_loss")),
    "naive": Loss("naive", naive, *_from_probs(_naive), None, False, lambda dtype: True, ("softmax", "log", "sum")),
    "clipped": Loss("clipped", clipped, *_from_probs(_clipped), None, False, _clip_floor_is_zero, ("softmax", "log", "sum")),
}
