"""Cross-entropy losses of softmax regression, in pure NumPy.

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

**Precision.** Every function works in the dtype of ``z``: float64, float32, float16, or bfloat16
(``ml_dtypes.bfloat16``). Each elementwise operation (``-``, ``*``, ``/``, ``exp``, ``log``,
``maximum``...) rounds its result to that dtype: NumPy's float16 loops and ml_dtypes' bfloat16 loops
compute in float32 and round once, which for ``+ - * /`` is the correctly rounded result (float32's 24
bits are at least twice a half format's 11 or 8, plus 2, so the double rounding is harmless). A
reduction (:func:`_row_sum`, :func:`_mean`) rounds once too: float16 and bfloat16 accumulate in
float32 and round the total, as PyTorch's CPU reductions do (left to itself, ml_dtypes would round
every bfloat16 addition). Division by the batch size goes through :func:`_div_n`, so ``n`` is exact
even where the dtype cannot hold it (bfloat16 holds integers exactly only up to 256).
"""

from __future__ import annotations

import math

import numpy as np

from mnist_cli.precision import as_dtype, finfo

__all__ = ["softmax", "log_softmax", "onehot", "fused", "naive", "clipped", "naive_from_probs", "clipped_from_probs",
           "LOSSES", "CLIP_MIN", "underflow_limit", "gradient_overflow_limit", "healthy_gap",
           "breaks_like_naive"]

#: The lower bound of the popular ``log(clip(p, 1e-10, 1))`` workaround.
CLIP_MIN = 1e-10


def _is_low(dtype) -> bool:
    """float16 and bfloat16: the formats whose reductions accumulate in float32."""
    return as_dtype(dtype).itemsize < 4


def _row_sum(x: np.ndarray) -> np.ndarray:
    """``sum_j x_ij`` of an (n, k) array, kept (n, 1); float16/bfloat16 summed in float32, rounded once."""
    if _is_low(x.dtype):
        return np.sum(x, axis=1, keepdims=True, dtype=np.float32).astype(x.dtype)  # (n, 1)
    return np.sum(x, axis=1, keepdims=True)  # (n, 1)


def _mean(v: np.ndarray):
    """``sum_i v_i / n`` of an (n,) array; float16/bfloat16 summed and divided in float32, rounded once."""
    if _is_low(v.dtype):
        return (np.sum(v, dtype=np.float32) / np.float32(v.shape[0])).astype(v.dtype)
    return np.mean(v)


def _div_n(x: np.ndarray, n: int) -> np.ndarray:
    """``x / n``; float16/bfloat16 divided in float32 and rounded once, so ``n`` is never rounded."""
    if _is_low(x.dtype):
        return (x.astype(np.float32) / np.float32(n)).astype(x.dtype)
    return x / n


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise ``softmax(z)_j = exp(z_j - m) / sum_i exp(z_i - m)`` with ``m = max_i z_i``.

    The max shift is what ``tf.nn.softmax`` does: it prevents overflow, but entries whose gap to the
    row maximum exceeds about 104 (float32), 745 (float64), 17.3 (float16) or 92.9 (bfloat16) still
    underflow to exactly 0 (a little less after the division by the row sum); see
    :func:`underflow_limit`. A gap beyond the largest float makes ``z - m`` itself
    ``-inf``, whose exp is 0 as well.
    """
    z_max = np.amax(z, axis=1, keepdims=True)  # (n, 1)
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        e = np.exp(z - z_max)  # (n, k), each in [0, 1]
        return e / _row_sum(e)  # (n, k)


# --- where softmax breaks, per dtype --------------------------------------------------------------


def underflow_limit(dtype) -> float:
    """``-log(smallest subnormal / 2)``: a logit farther than this below the row maximum has an exact
    ``exp(z - max)`` below half the smallest positive number of ``dtype``, which rounds to exactly 0
    (and so does its probability); a shade nearer, exp still rounds up to the smallest subnormal.

    About 104.0 for float32, 745.1 for float64, 17.3 for float16 and 92.9 for bfloat16 (whose exponent
    range is float32's, with 8 significand bits instead of 24). (``-log(smallest subnormal)``, 103.3
    and 744.4, is where the exact value drops below the smallest subnormal, not where the rounded one
    is 0.)
    """
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


def healthy_gap(dtype_name: str, k: int) -> float:
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
    """
    return -math.log(k * float(finfo(dtype_name).smallest_subnormal))


def breaks_like_naive(loss: str, dtype) -> bool:
    """Whether ``loss``'s gradient ``(-y_ / n) / p`` can overflow in ``dtype``: naive always, clipped where
    its floor :data:`CLIP_MIN` rounds to 0 (float16), fused never."""
    return loss == "naive" or (loss == "clipped" and bool(as_dtype(dtype).type(CLIP_MIN) == 0))


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise ``log_softmax(z)_j = (z_j - m) - log(sum_i exp(z_i - m))``, ``m = max_i z_i``.

    Finite for finite z, except where ``z_j - m`` itself overflows (a gap beyond the largest float):
    that entry is ``-inf``, the correctly rounded value.
    """
    z_max = np.amax(z, axis=1, keepdims=True)  # (n, 1)
    with np.errstate(under="ignore", over="ignore"):
        shifted = z - z_max  # (n, k), all <= 0
        return shifted - np.log(_row_sum(np.exp(shifted)))  # (n, k)


def onehot(y: np.ndarray, k: int, dtype) -> np.ndarray:
    """``Y[i, j] = 1 if y[i] == j else 0``: the tutorial's ``y_``."""
    out = np.zeros((y.shape[0], k), dtype=dtype)
    out[np.arange(y.shape[0]), y] = 1
    return out


def fused(z: np.ndarray, y: np.ndarray, grad_scale: float = 1.0) -> tuple[float, np.ndarray]:
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
    :data:`LOSSES`.
    """
    n = z.shape[0]
    rows = np.arange(n)
    z_max = np.amax(z, axis=1, keepdims=True)  # (n, 1) the max shift
    with np.errstate(under="ignore", invalid="ignore", over="ignore"):  # invalid: inf/nan logits; over: max - min
        shifted = z - z_max  # (n, k), <= 0; -inf where the gap exceeds the float range
        e = np.exp(shifted)  # (n, k), in [0, 1]; some may underflow to 0, harmlessly
        s = _row_sum(e)  # (n, 1), in [1, k]
        loss = _mean(np.log(s[:, 0]) - shifted[rows, y])  # logsumexp(z) - z[y], m cancels
    grad = e / s  # (n, k) softmax(z)
    grad[rows, y] -= 1  # softmax(z) - onehot(y)
    grad = _div_n(grad, n)  # mean over the batch
    if grad_scale != 1.0:
        with np.errstate(over="ignore"):
            grad *= grad.dtype.type(grad_scale)  # the gradient of grad_scale * L
    return float(loss), grad


def _softmax_backward(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Reverse-mode softmax: ``dL/dz = p * (g - sum_j(g_j * p_j))`` given ``g = dL/dp``.

    PyTorch's CPU ``_softmax_backward_data`` computes ``(g - sum(g * p)) * p`` (TF's SoftmaxGrad the
    same), bit for bit this product.
    """
    return p * (g - _row_sum(g * p))  # (n, k)


def _upstream(y_: np.ndarray, grad_scale: float) -> np.ndarray:
    """``-y_ * grad_scale``: what reaches ``mean``'s backward times the one-hot labels, before ``/ n``
    (exact: ``y_`` is 0 or 1)."""
    return -y_ if grad_scale == 1.0 else -y_ * y_.dtype.type(grad_scale)


def _log_backward(g_in: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Reverse-mode ``log``: ``dL/dp = g_in / p`` (PyTorch's ``grad / self``), ``g_in`` the gradient reaching log."""
    return g_in / p  # (n, k): 0/0 = nan, -x/0 = -inf, and -inf where g_in/p overflows


def naive(z: np.ndarray, y: np.ndarray, grad_scale: float = 1.0) -> tuple[float, np.ndarray]:
    """The tutorial's first version: ``p = softmax(z)``, ``L = mean_i(-sum_j(y_ij * log(p_ij)))``.

    The gradient is what autodiff takes *through* that graph, with no shortcut, in PyTorch autograd's
    order: ``mean``, ``-`` and ``sum`` backward give ``-1/n`` per entry, ``*`` backward ``(-1/n) * y_``
    (``= -y_ / n`` exactly), ``log`` backward ``g = dL/dp = (-y_ / n) / p`` (``0/0 = nan`` where a
    non-target p underflowed to 0; ``-inf`` where the target's did, or where ``1/(n p)`` overflows), then
    the softmax Jacobian ``dL/dz = p * (g - sum(g * p))``. Where no probability underflows it equals the
    fused gradient to rounding; where one does, the loss is nan (``0 * log(0) = 0 * -inf``) and the NaN
    spreads through the whole row of the gradient. ``grad_scale``: see :data:`LOSSES`.
    """
    return naive_from_probs(softmax(z), y, grad_scale)


def naive_from_probs(p: np.ndarray, y: np.ndarray, grad_scale: float = 1.0) -> tuple[float, np.ndarray]:
    """:func:`naive` after its softmax: ``(L, dL/dz)`` given ``p = softmax(z)`` (n, k).

    Split off so that a cross-check can replay this half on another framework's probabilities.
    """
    n, k = p.shape
    y_ = onehot(y, k, p.dtype)  # (n, k)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        log_p = np.log(p)  # -inf where p == 0
        loss = _mean(-_row_sum(y_ * log_p)[:, 0])  # 0 * -inf = nan
        g = _log_backward(_div_n(_upstream(y_, grad_scale), n), p)  # dL/dp = (-y_ / n) / p
        grad = _softmax_backward(p, g)  # (n, k)
    return float(loss), grad


def clipped(z: np.ndarray, y: np.ndarray, grad_scale: float = 1.0) -> tuple[float, np.ndarray]:
    """The common workaround ``L = mean_i(-sum_j(y_ij * log(clip(p_ij, 1e-10, 1))))``, ``p = softmax(z)``.

    Finite in float32 and float64, but biased: a confidently wrong example costs at most
    ``-log(1e-10) ~ 23`` and its gradient is dead, because clip passes no gradient outside
    ``1e-10 <= p <= 1`` (bounds included, as ``torch.clamp``'s backward): ``dL/dp = (-y_ / n) / clip(p)``
    there, else 0, then the softmax Jacobian. The bounds are rounded to the dtype: in float16 ``1e-10``
    rounds to 0 (the smallest subnormal is 6e-8), the clip does nothing and ``clipped`` is exactly
    ``naive``; in bfloat16 the floor is 1.00044e-10. ``grad_scale``: see :data:`LOSSES`.
    """
    return clipped_from_probs(softmax(z), y, grad_scale)


def clipped_from_probs(p: np.ndarray, y: np.ndarray, grad_scale: float = 1.0) -> tuple[float, np.ndarray]:
    """:func:`clipped` after its softmax: ``(L, dL/dz)`` given ``p = softmax(z)`` (n, k)."""
    n, k = p.shape
    y_ = onehot(y, k, p.dtype)  # (n, k)
    lo, hi = p.dtype.type(CLIP_MIN), p.dtype.type(1)  # the clip bounds, rounded to the dtype
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        p_c = np.minimum(np.maximum(p, lo), hi)  # (n, k) clip(p); np.clip would promote bfloat16 to float32
        loss = _mean(-_row_sum(y_ * np.log(p_c))[:, 0])
        live = (p >= lo) & (p <= hi)  # (n, k) where clip passes the gradient
        g = np.where(live, _log_backward(_div_n(_upstream(y_, grad_scale), n), p_c), p.dtype.type(0))  # dL/dp
        grad = _softmax_backward(p, g)  # (n, k)
    return float(loss), grad


#: name -> loss function; the only place a loss is chosen by name. Each is ``f(z, y, grad_scale=1.0) ->
#: (L, d(grad_scale * L)/dz)``: ``grad_scale`` is the gradient autodiff starts from (a loss scaler's
#: scale), entering where PyTorch's backward takes it. For naive and clipped that is before the ``log``
#: backward's division by ``p``, so ``(scale / n) / p`` can overflow where ``(1 / n) / p`` does not
#: (with ``scale = 2**16``, ``n = 100``: from a gap of about 80 in float32 instead of 91).
LOSSES = {
    "fused": fused,
    "naive": naive,
    "clipped": clipped,
}
