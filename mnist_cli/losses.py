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
"""

from __future__ import annotations

import numpy as np

__all__ = ["softmax", "log_softmax", "onehot", "fused", "naive", "clipped", "LOSSES", "CLIP_MIN"]

#: The lower bound of the popular ``log(clip(p, 1e-10, 1))`` workaround.
CLIP_MIN = 1e-10


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise ``softmax(z)_j = exp(z_j - m) / sum_i exp(z_i - m)`` with ``m = max_i z_i``.

    The max shift is what ``tf.nn.softmax`` does: it prevents overflow, but entries whose gap to the
    row maximum exceeds about 104 (float32) or 745 (float64) still underflow to exactly 0 (a little
    less after the division by the row sum).
    """
    z_max = np.amax(z, axis=1, keepdims=True)  # (n, 1)
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        e = np.exp(z - z_max)  # (n, k), each in [0, 1]
        return e / np.sum(e, axis=1, keepdims=True)  # (n, k)


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise ``log_softmax(z)_j = (z_j - m) - log(sum_i exp(z_i - m))``, ``m = max_i z_i``: finite for finite z."""
    z_max = np.amax(z, axis=1, keepdims=True)  # (n, 1)
    shifted = z - z_max  # (n, k), all <= 0
    with np.errstate(under="ignore"):
        return shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))


def onehot(y: np.ndarray, k: int, dtype) -> np.ndarray:
    """``Y[i, j] = 1 if y[i] == j else 0``: the tutorial's ``y_``."""
    out = np.zeros((y.shape[0], k), dtype=dtype)
    out[np.arange(y.shape[0]), y] = 1
    return out


def fused(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """``softmax_cross_entropy_with_logits``: ``L = mean_i(logsumexp(z_i) - z_i[y_i])``.

    With ``m_i = max_j z_ij``, ``logsumexp(z_i) = m_i + log(sum_j exp(z_ij - m_i))``; the shifted
    exponentials are at most 1 and their sum is at least 1, so the log never sees 0 and the loss is
    finite for any finite logits. Gradient: ``dL/dz = (softmax(z) - onehot(y)) / n``. Never forms
    ``log(softmax(z))``.
    """
    n = z.shape[0]
    rows = np.arange(n)
    z_max = np.amax(z, axis=1, keepdims=True)  # (n, 1) the max shift
    with np.errstate(under="ignore", invalid="ignore"):  # invalid: only for inf/nan logits
        shifted = z - z_max  # (n, k), <= 0
        e = np.exp(shifted)  # (n, k), in [0, 1]; some may underflow to 0, harmlessly
    s = np.sum(e, axis=1, keepdims=True)  # (n, 1), in [1, k]
    loss = np.mean(np.log(s[:, 0]) - shifted[rows, y])  # logsumexp(z) - z[y], m cancels
    grad = e / s  # (n, k) softmax(z)
    grad[rows, y] -= 1  # softmax(z) - onehot(y)
    grad /= n  # mean over the batch
    return float(loss), grad


def _softmax_backward(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Reverse-mode softmax: ``dL/dz = p * (g - sum_j(g_j * p_j))`` given ``g = dL/dp`` (TF's SoftmaxGrad)."""
    return p * (g - np.sum(g * p, axis=1, keepdims=True))


def naive(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """The tutorial's first version: ``p = softmax(z)``, ``L = mean_i(-sum_j(y_ij * log(p_ij)))``.

    The gradient is what autodiff takes *through* that graph, with no shortcut:
    ``dL/dp = -y_ / p / n`` (``0/0 = nan`` where a non-target p underflowed to 0, ``-inf`` where the
    target's did), then the softmax Jacobian ``dL/dz = p * (g - sum(g * p))``. Where no probability
    underflows it equals the fused gradient to rounding; where one does, the loss is nan
    (``0 * log(0) = 0 * -inf``) and the NaN spreads through the whole row of the gradient.
    """
    n, k = z.shape
    y_ = onehot(y, k, z.dtype)  # (n, k)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        p = softmax(z)  # (n, k), may contain exact zeros
        log_p = np.log(p)  # -inf where p == 0
        loss = np.mean(-np.sum(y_ * log_p, axis=1))  # 0 * -inf = nan
        g = -y_ / p / n  # dL/dp: 0/0 = nan, 1/0 = inf
        grad = _softmax_backward(p, g)
    return float(loss), grad


def clipped(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """The common workaround ``L = mean_i(-sum_j(y_ij * log(clip(p_ij, 1e-10, 1))))``, ``p = softmax(z)``.

    Always finite, but biased: a confidently wrong example costs at most ``-log(1e-10) ~ 23`` and its
    gradient is dead, because ``clip`` passes no gradient where ``p < 1e-10`` (as ``tf.clip_by_value``):
    ``dL/dp = -y_ / clip(p) / n`` where ``1e-10 <= p <= 1``, else 0, then the softmax Jacobian.
    """
    n, k = z.shape
    y_ = onehot(y, k, z.dtype)  # (n, k)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        p = softmax(z)  # (n, k)
        p_c = np.clip(p, z.dtype.type(CLIP_MIN), z.dtype.type(1))  # (n, k)
        loss = np.mean(-np.sum(y_ * np.log(p_c), axis=1))
        live = (p >= z.dtype.type(CLIP_MIN)) & (p <= 1)  # where clip passes the gradient
        g = np.where(live, -y_ / p_c / n, z.dtype.type(0))  # dL/dp
        grad = _softmax_backward(p, g)
    return float(loss), grad


#: name -> loss function; the only place a loss is chosen by name.
LOSSES = {
    "fused": fused,
    "naive": naive,
    "clipped": clipped,
}
