"""Explain the first non-finite step of a run: which example, which logit gap, which operation.

    r = train(images, labels, TrainConfig(loss="naive", input_scale=255))
    print(format_explanation(explain(r.snapshot, "float32", "naive")))   # mnist_cli.report.explain
    # -> Step 2, naive loss, float32: exp() underflows to 0 past a logit gap of 104.0
    # -> ...
    # -> loss:     p[1] = 0 -> log(p[1]) = -inf -> y_[1] * log(p[1]) = 0 * -inf = NaN -> ...

Pure NumPy on the batch the trainer kept (:class:`mnist_cli.engine.Snapshot`): the logits as the
loss saw them, the labels and their positions in the training set. Each example of the batch is
re-run through the loss alone to *observe* which rows give a non-finite loss or gradient; the
chain of operations is *derived* independently, from which softmax probabilities are exactly 0.
This module finds the numbers; every sentence of the document (``chain``, ``summary``, the
``half_backward`` text) is written by :mod:`mnist_cli.report.explain` from them.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np

from mnist_cli.engine.base import loss_dtype
from mnist_cli.frameworks import profile
from mnist_cli.losses import (
    CLIP_MIN,
    LOSSES,
    gradient_overflow_limit,
    log_softmax,
    softmax,
    underflow_limit,
)
from mnist_cli.report.explain import chain_text, half_backward_text, summary_text
from mnist_cli.rounding import finfo

__all__ = ["explain"]


def _kind(x: float) -> str:
    """'NaN', 'inf', '-inf' or 'finite'."""
    if x != x:
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return "finite"


# --- analysis ----------------------------------------------------------------------------------------


def _observe_rows(loss_fn, z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Run the loss: the batch loss, each row's own loss (n,) and whether its gradient row is finite (n,).

    Gradient rows come from the batch call (the softmax backward is row by row, and ``1/n`` matters
    for overflow); a row's loss from a call on that row alone (the mean of one value is the value).
    """
    batch_loss, grad = loss_fn(z, y)  # (B, k)
    row_loss = np.array([loss_fn(z[i : i + 1], y[i : i + 1])[0] for i in range(z.shape[0])])  # (B,)
    return batch_loss, row_loss, np.isfinite(grad).all(axis=1)


def _culprit(i: int, z: np.ndarray, y: np.ndarray, p: np.ndarray, log_p: np.ndarray, index: int,
             row_loss: float, grad_ok: bool, loss_name: str, params_finite: bool | None = None) -> dict:
    """Everything about example ``i`` of the batch, and the chain its values take through the loss."""
    dtype = z.dtype
    zi, t = z[i].astype(np.float64), int(y[i])
    finite = bool(np.isfinite(zi).all())
    zero = np.flatnonzero(p[i] == 0)  # classes whose probability rounded to exactly 0
    others = zero[zero != t]
    if others.size:  # name the non-target zero farthest below the max: 0 * log(0) is the NaN
        j = int(others[np.argmin(zi[others])])
    elif zero.size or not grad_ok or not finite:
        j = t  # the target's p is 0, or so small that 1/p overflows
    else:  # nothing non-finite: name the smallest probability
        j = int(np.argmin(zi))
    c = {
        "batch_row": i,
        "index": index,
        "label": t,
        "predicted": int(np.argmax(zi)) if finite else None,
        "classes": int(z.shape[1]),
        "logit_max": float(np.max(zi)),
        "logit_target": float(zi[t]),
        "logit_min": float(np.min(zi)),
        "gap_max_minus_target": float(np.max(zi) - zi[t]),
        "gap_max_minus_min": float(np.max(zi) - np.min(zi)),
        "zero_prob_classes": [int(k) for k in zero],
        "target_prob_zero": bool(p[i, t] == 0),
        "underflowed_class": j,
        "underflowed_gap": float(np.max(zi) - zi[j]),
        "underflowed_p": float(p[i, j]),  # as rounded in the run's dtype
        "underflowed_log_p": float(log_p[i, j]),  # the exact log-probability, computed in float64
        "underflowed_log10_p": float(log_p[i, j] / math.log(10)),
        "row_loss": float(row_loss),
        "row_loss_kind": _kind(float(row_loss)),
        "row_grad_finite": grad_ok,
        "logits_finite": finite,
    }
    # what the chain's words need besides (not part of the JSON: its schema is fixed)
    with np.errstate(over="ignore", invalid="ignore"):
        shifted = z[i] - np.amax(z[i])  # (k,) in the run's dtype: -inf where the gap overflows
    others = np.delete(zi - np.max(zi), t)  # (k - 1,) exact shifts of the other classes
    ties = float(np.sum(np.exp(others)))  # sum_{j != t} exp(z_j - max): p[t] ~ exp(-gap) / ties
    facts = {
        "dtype": dtype.name, "dtype_max": float(finfo(dtype).max), "batch_size": int(z.shape[0]),
        "smallest_subnormal": float(finfo(dtype).smallest_subnormal),
        "inv_n": float(np.asarray(1.0 / z.shape[0]).astype(dtype)),
        "clip_floor": float(dtype.type(CLIP_MIN)),
        "logit_overflow": ("+inf" if np.any(zi == np.inf) else "-inf" if np.any(zi == -np.inf) else None),
        "target_shift_overflow": bool(finite and shifted[t] == -np.inf),
        "row_gradient_limit": gradient_overflow_limit(dtype, z.shape[0], ties) if finite and ties > 0 else math.inf,
        "params_finite": params_finite,
    }
    c["chain"] = chain_text({**c, **facts}, loss_name)
    return c


def explain_result(result, dtype, loss_name: str, images: np.ndarray | None = None) -> dict | None:
    """:func:`explain` for a :class:`mnist_cli.engine.TrainResult`'s first non-finite step (None if it had
    none), told whether W and b were still finite entering that step (from its NaN accounting). With the
    training ``images`` (n, 784) the first culprit also gets its ``digit`` (:func:`digit14`) and all its
    ``logits``, for the terminal picture."""
    if result.snapshot is None:
        return None
    mixed = getattr(result.config, "precision", "pure") == "mixed"
    broke = result.nan.first_nonfinite_params_step  # the parameters were non-finite after this step
    loss_in = loss_dtype(result.config) if mixed else dtype  # mixed: where the policy ran the loss (CUDA's: float32)
    e = explain(result.snapshot, loss_in, loss_name,
                params_finite=broke is None or broke >= result.snapshot.step,
                framework=getattr(result.config, "framework", None))
    if mixed and not e["culprits"]:  # every example's loss and dL/dz finite: the half backward product overflowed
        e["half_backward"] = _half_backward(e, result.config, result.snapshot)
        e["summary"] = e["half_backward"]["text"]
    if images is not None and e["culprits"]:
        c = e["culprits"][0]
        c["digit"] = digit14(images[c["index"]])
        c["logits"] = [float(v) for v in np.asarray(result.snapshot.logits)[c["batch_row"]]]
    return e


def _half_backward(e: dict, config, snapshot) -> dict:
    """Why a mixed-precision step whose float32 loss and dL/dz were finite had a non-finite gradient: the
    backward product ``x.T @ rnd(scale * dL/dz)`` in the half dtype passed its largest value (the numbers,
    and their sentence)."""
    h = {"loss_scale": getattr(snapshot, "loss_scale", None), "dtype": config.dtype,
         "dtype_max": float(finfo(config.dtype).max)}
    return {**h, "text": half_backward_text(e, h, config.loss_scale)}


def digit14(image: np.ndarray) -> list[list[int]]:
    """A 28x28 uint8 image (784,) as 14x14 means of its 2x2 blocks (0-255): enough to see the digit."""
    x = np.asarray(image, dtype=np.float64).reshape(14, 2, 14, 2)
    return np.rint(x.mean(axis=(1, 3))).astype(int).tolist()


def explain(snapshot, dtype=None, loss_name: str = "naive", *, max_culprits: int = 3,
            params_finite: bool | None = None, framework: str | None = None) -> dict:
    """Explain ``snapshot`` (the batch of a run's first non-finite step) as a JSON-able dict.

    ``dtype`` is the run's dtype (default: the logits'); ``loss_name`` a key of ``LOSSES``;
    ``params_finite`` whether W and b were finite entering the step (None: not known), which tells
    NaN logits from an overflowing product apart from NaN parameters. The
    culprits are the examples whose loss or gradient is non-finite when run alone through the loss,
    largest logit gap first (at most ``max_culprits`` are described; all are counted).
    """
    if loss_name not in LOSSES:
        raise ValueError(f"unknown loss {loss_name!r}; choose one of {', '.join(LOSSES)}")
    z = np.asarray(snapshot.logits)  # (B, k) as the loss saw them
    dtype = np.dtype(dtype if dtype is not None else z.dtype)
    z = z.astype(dtype, copy=False)
    y = np.asarray(snapshot.labels).astype(np.intp)  # (B,)
    idx = np.asarray(snapshot.indices)  # (B,)
    framework = None if framework in (None, "numpy") else framework  # the profile the run computed as
    limit = underflow_limit(dtype, framework)
    loss_fn = partial(LOSSES[loss_name], framework=framework)

    with np.errstate(all="ignore"):
        p = softmax(z, framework)  # (B, k) in the run's dtype: the zeros the loss saw
        z64 = z.astype(np.float64)
        z_max = np.max(z64, axis=1, keepdims=True)  # (B, 1) the max shift
        # exact log-probabilities (float64 log-sum-exp): what p would be without rounding
        log_p = log_softmax(z64)  # (B, k)
        gap = (z_max - np.min(z64, axis=1, keepdims=True))[:, 0]  # (B,) max - min
        gap_target = z_max[:, 0] - z64[np.arange(len(y)), y]  # (B,) max - target
        batch_loss, row_loss, grad_ok = _observe_rows(loss_fn, z, y)

        bad = ~np.isfinite(row_loss) | ~grad_ok  # (B,) rows the loss turns non-finite
        has_zero = np.any(p == 0, axis=1)  # (B,)
        pool = np.flatnonzero(bad) if bad.any() else np.flatnonzero(has_zero)
        # rows that reproduce the batch's outcome first (NaN, then inf, then gradient only), largest gap first
        outcome = np.where(np.isnan(row_loss), 0, np.where(np.isinf(row_loss), 1, 2))  # (B,)
        order = pool[np.lexsort((-np.nan_to_num(gap[pool], nan=np.inf), outcome[pool]))]
        culprits = [
            _culprit(int(i), z, y, p, log_p, int(idx[i]), row_loss[i], bool(grad_ok[i]), loss_name, params_finite)
            for i in order[:max_culprits]
        ]
    finite_gap = gap[np.isfinite(gap)]
    out = {
        "step": int(snapshot.step),
        "loss": loss_name,
        "dtype": dtype.name,
        "underflow_limit": limit,
        "framework": framework or "numpy",
        "flushes": bool(framework and profile(framework).rules(dtype).ftz),  # FTZ: results below the smallest normal
        "smallest_normal": float(finfo(dtype).smallest_normal),
        "smallest_subnormal": float(finfo(dtype).smallest_subnormal),
        "batch_size": int(z.shape[0]),
        "batch_loss": float(batch_loss),
        "batch_loss_kind": _kind(float(batch_loss)),
        "batch_grad_finite": bool(grad_ok.all()),
        "logits_finite": bool(np.isfinite(z).all()),
        "params_finite": params_finite,
        "rows_with_zero_prob": int(np.count_nonzero(has_zero)),
        "zero_probs": int(np.count_nonzero(p == 0)),
        "rows_above_limit": int(np.count_nonzero(gap > limit)),
        "rows_nan_loss": int(np.count_nonzero(np.isnan(row_loss))),
        "rows_inf_loss": int(np.count_nonzero(np.isinf(row_loss))),
        "rows_nonfinite_grad": int(np.count_nonzero(~grad_ok)),
        "max_gap_max_minus_min": float(finite_gap.max()) if finite_gap.size else float("nan"),
        "max_gap_max_minus_target": float(np.nanmax(gap_target)) if np.isfinite(gap_target).any() else float("nan"),
        "n_culprits": int(pool.size),
        "culprits": culprits,
        "chain": culprits[0]["chain"] if culprits else None,
    }
    out["half_backward"] = None  # mixed precision: set by explain_result when the half backward product overflowed
    out["summary"] = summary_text(out)
    return out
