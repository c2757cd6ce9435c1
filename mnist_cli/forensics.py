"""Explain the first non-finite step of a run: which example, which logit gap, which operation.

    r = train(images, labels, TrainConfig(loss="naive", input_scale=255))
    print(format_explanation(explain(r.snapshot, "float32", "naive")))   # mnist_cli.report
    # -> Step 2, naive loss, float32: exp() underflows to 0 past a logit gap of 104.0
    # -> ...
    # -> loss:     p[1] = 0 -> log(p[1]) = -inf -> y_[1] * log(p[1]) = 0 * -inf = NaN -> ...

Pure NumPy on the batch the trainer kept (:class:`mnist_cli.engine.Snapshot`): the logits as the
loss saw them, the labels and their positions in the training set. Each example of the batch is
re-run through the loss alone to *observe* which rows give a non-finite loss or gradient; the
chain of operations is *derived* independently, from which softmax probabilities are exactly 0.
"""

from __future__ import annotations

import math

import numpy as np

from mnist_cli.losses import (
    CLIP_MIN,
    LOSSES,
    breaks_like_naive,
    gradient_overflow_limit,
    log_softmax,
    softmax,
    underflow_limit,
)
from mnist_cli.precision import DTYPES, finfo
from mnist_cli.report import short_number

__all__ = ["explain"]


def _kind(x: float) -> str:
    """'NaN', 'inf', '-inf' or 'finite'."""
    if x != x:
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return "finite"


# --- the chain of operations, in words, for one culprit example (a name -> writer table) -----------


def _chain_nonfinite_logits(c: dict) -> dict:
    if c["logit_overflow"]:  # +-inf among the logits: the product left the dtype's range
        head = (f"the logits are already non-finite: a logit is {c['logit_overflow']}, z = x @ W + b exceeded the "
                f"largest {c['dtype']} ({c['dtype_max']:.5g}) and rounded to infinity (overflow, not underflow)")
    elif c["params_finite"]:  # finite W and b, NaN logits: a partial sum of the product overflowed
        head = (f"W and b are finite, but z = x @ W + b overflowed inside the product: a product or partial sum passed the "
                f"largest {c['dtype']} ({c['dtype_max']:.5g}), became +-inf, and inf - inf gave NaN (overflow, not "
                "underflow)")
    else:
        head = "z = x @ W + b is already non-finite (NaN: W or b went non-finite at an earlier step)"
    return {
        "loss": f"{head} -> z - max(z) = inf - inf = NaN -> every p in the row is NaN -> loss = NaN",
        "gradient": "p = NaN -> dL/dz = NaN for the whole row -> dL/dW = x.T @ dL/dz = NaN",
    }


def _chain_naive(c: dict) -> dict:
    """Reverse-mode autodiff through ``mean(-sum(y_ * log(softmax(z))))``, in PyTorch autograd's order."""
    j, t = c["underflowed_class"], c["label"]
    backward = (
        "softmax backward p * (g - sum(g * p)): sum(g * p) = NaN, so all "
        f"{c['classes']} entries of dL/dz in this row are NaN -> dL/dW = x.T @ dL/dz and dL/db are NaN "
        "-> W and b are NaN after the update"
    )
    if j != t:  # a non-target probability is 0: 0 * log(0)
        return {
            "loss": f"p[{j}] = 0 -> log(p[{j}]) = -inf -> y_[{j}] * log(p[{j}]) = 0 * -inf = NaN "
            "-> loss = mean(-sum(y_ * log(p))) = NaN",
            "gradient": f"dL/dp[{j}] = (-y_[{j}] / n) / p[{j}] = -0/0 = NaN (y_/p = 0/0) -> {backward}",
        }
    if c["target_prob_zero"]:  # only the target's probability is 0: -1 * log(0)
        return {
            "loss": f"p[{t}] = 0 (the target) -> log(p[{t}]) = -inf -> -y_[{t}] * log(p[{t}]) = -1 * -inf = +inf "
            "-> loss = inf",
            "gradient": f"dL/dp[{t}] = (-y_[{t}] / n) / p[{t}] = -{c['inv_n']:.3g}/0 = -inf -> g[{t}] * p[{t}] = "
            f"-inf * 0 = NaN -> {backward}",
        }
    return {  # the target's probability is tiny but not 0: the loss is finite, 1/p overflows
        "loss": f"p[{t}] = {c['underflowed_p']:.3g} (the target, not 0: the gap {c['gap_max_minus_target']:.1f} is "
        f"below the underflow limit) -> log(p[{t}]) is finite -> the loss is finite",
        "gradient": f"dL/dp[{t}] = (-y_[{t}] / n) / p[{t}] = -{c['inv_n']:.3g} / {c['underflowed_p']:.3g} overflows "
        f"to -inf (1/p overflow: beyond the largest {c['dtype']}, {c['dtype_max']:.3g}; this row's gradient "
        f"breaks from a gap of {c['row_gradient_limit']:.1f} at batch {c['batch_size']}) -> sum(g * p) = -inf -> "
        f"softmax backward p * (g - sum(g * p)): dL/dz[{t}] = p[{t}] * (-inf - -inf) = NaN, the other entries "
        "p * (0 + inf) = +inf -> dL/dW = x.T @ dL/dz is NaN (0 * inf, inf - inf) -> W and b are non-finite "
        "after the update",
    }


def _chain_clipped(c: dict) -> dict:
    j = c["underflowed_class"]
    if c["clip_floor"] == 0:  # the floor rounds to 0: clip(p, 0, 1) = p, and clipped is naive
        floor = (f"clip(p, {CLIP_MIN:g}, 1) does nothing: {CLIP_MIN:g} rounds to 0 in {c['dtype']} (smallest "
                 f"subnormal {c['smallest_subnormal']:.3g}), an unrepresentable clip floor, so clipped is exactly naive: ")
        chain = _chain_naive(c)
        return {"loss": floor + chain["loss"], "gradient": "clip passes every gradient (p >= 0): " + chain["gradient"]}
    lo = f"{c['clip_floor']:.6g}"
    return {
        "loss": f"p[{j}] = 0 -> clip(p[{j}], {lo}, 1) = {lo} -> log = {math.log(c['clip_floor']):.2f} "
        "-> the loss stays finite but is biased",
        "gradient": f"clip passes no gradient below {lo}: dL/dp[{j}] = 0 -> this example stops "
        "pulling its logits apart (a dead gradient, not a NaN)",
    }


def _chain_fused(c: dict) -> dict:
    j, t = c["underflowed_class"], c["label"]
    if c["target_shift_overflow"]:  # z[y] - max z itself overflowed: the loss is +inf, correctly rounded
        return {
            "loss": f"z[{t}] - max z = -inf: the gap {c['gap_max_minus_target']:.4g} exceeds the largest "
            f"{c['dtype']} ({c['dtype_max']:.5g}) -> loss = log(sum(exp(z - max z))) - (z[y] - max z) = +inf "
            "(its exact value is beyond the range too)",
            "gradient": f"dL/dz = softmax(z) - y_: p[{t}] = 0 enters as 0 -> finite",
        }
    return {
        "loss": f"p[{j}] = 0 is never logged: loss = log(sum(exp(z - max z))) - (z[y] - max z), "
        "the sum is >= 1 -> finite",
        "gradient": f"dL/dz = softmax(z) - y_: p[{j}] = 0 enters as 0 -> finite",
    }


#: loss name -> how its graph turns an underflowed probability into (or keeps it from) NaN.
CHAINS = {"naive": _chain_naive, "clipped": _chain_clipped, "fused": _chain_fused}


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
    # what the chain writers need besides (not part of the JSON: its schema is fixed)
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
    writer = CHAINS.get(loss_name, _chain_naive) if finite else _chain_nonfinite_logits
    c["chain"] = writer({**c, **facts})
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
    e = explain(result.snapshot, "float32" if mixed else dtype, loss_name,  # mixed: the loss ran in float32
                params_finite=broke is None or broke >= result.snapshot.step)
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
    backward product ``x.T @ rnd(scale * dL/dz)`` in the half dtype passed its largest value."""
    scale = getattr(snapshot, "loss_scale", None)
    largest = float(finfo(config.dtype).max)
    scaled = f" scaled by the loss scale {short_number(scale)}" if scale not in (None, 1.0) else ""
    after = ("the loss scaler skipped this update and halved the scale: this is how dynamic loss scaling finds a "
             "scale that fits" if config.loss_scale == "dynamic" else
             "the loss scaler skipped this update (a fixed scale never changes)" if config.loss_scale != "none" else
             "with no loss scaler the non-finite gradient reached the weights")
    text = (f"At step {e['step']} ({e['loss']} loss, {config.dtype} mixed precision) every example's loss and dL/dz "
            f"were finite in float32, but the backward product dL/dW = x.T @ dL/dz{scaled}, computed in "
            f"{config.dtype}, passed the largest {config.dtype} ({largest:.5g}) and rounded to infinity "
            f"(overflow in the half-precision product, not underflow): {after}.")
    return {"loss_scale": scale, "dtype": config.dtype, "dtype_max": largest, "text": text}


def digit14(image: np.ndarray) -> list[list[int]]:
    """A 28x28 uint8 image (784,) as 14x14 means of its 2x2 blocks (0-255): enough to see the digit."""
    x = np.asarray(image, dtype=np.float64).reshape(14, 2, 14, 2)
    return np.rint(x.mean(axis=(1, 3))).astype(int).tolist()


def explain(snapshot, dtype=None, loss_name: str = "naive", *, max_culprits: int = 3,
            params_finite: bool | None = None) -> dict:
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
    limit = underflow_limit(dtype)
    loss_fn = LOSSES[loss_name]

    with np.errstate(all="ignore"):
        p = softmax(z)  # (B, k) in the run's dtype: the zeros the loss saw
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
    out["summary"] = _summary(out)
    return out


def _summary(e: dict) -> str:
    """One sentence: what happened at this step and why."""
    head = f"At step {e['step']} ({e['loss']} loss, {e['dtype']})"
    if not e["culprits"]:
        return f"{head} no example of the batch has a zero probability or a non-finite loss or gradient."
    c = e["culprits"][0]
    dtype = DTYPES[e["dtype"]]
    if not e["logits_finite"] and not c["logits_finite"]:
        if np.isinf(c["logit_max"]) or np.isinf(c["logit_min"]):
            return (f"{head} the logits themselves were already non-finite: a logit exceeded the largest "
                    f"{e['dtype']} ({float(finfo(dtype).max):.5g}) and rounded to infinity (overflow, not underflow).")
        if e["params_finite"]:
            return (f"{head} the logits were NaN although W and b were finite: z = x @ W + b overflowed inside the "
                    f"product (a partial sum passed the largest {e['dtype']}, {float(finfo(dtype).max):.5g}, and "
                    "inf - inf = NaN): overflow, not underflow.")
        return f"{head} the logits themselves were already non-finite: the parameters had overflowed earlier."
    if not c["zero_prob_classes"] and not c["row_grad_finite"]:  # no zero: (-y_ / n) / p overflowed
        return (
            f"{head} no probability rounded to 0, but the naive gradient (-y_ / n) / p overflowed: training example "
            f"#{c['index']}'s target probability is {c['underflowed_p']:.3g} (gap {c['gap_max_minus_target']:.1f}, "
            f"below the {e['dtype']} underflow limit of {e['underflow_limit']:.1f} but past the 1/p overflow limit, "
            f"from {gradient_overflow_limit(dtype, e['batch_size']):.1f} at batch {e['batch_size']})."
        )
    if e["loss"] == "fused" and c["row_loss_kind"] == "inf":  # only z[y] - max z = -inf makes fused infinite
        return (f"{head} training example #{c['index']}'s target is {short_number(c['gap_max_minus_target'])} below the "
                f"maximum, beyond the largest {e['dtype']} ({float(finfo(dtype).max):.5g}): z[y] - max z "
                "overflowed to -inf and the loss is +inf, the correctly rounded value; the gradient stays finite.")
    clip_zero = e["loss"] == "clipped" and breaks_like_naive(e["loss"], e["dtype"])
    turned = {
        "naive": "and log() turned each 0 into -inf, then 0 * -inf and 0/0 into NaN",
        "clipped": (f"and clip() could not help: its floor {CLIP_MIN:g} rounds to 0 in {e['dtype']}, so log() "
                    "turned each 0 into -inf as in naive" if clip_zero else
                    "and clip() hid them: the loss stayed finite but those examples got no gradient"),
        "fused": "but the fused loss never takes log(p), so they did no harm",
    }.get(e["loss"], "")
    return (
        f"{head} {e['rows_with_zero_prob']} of {e['batch_size']} examples had a softmax probability rounded to "
        f"exactly 0 because a logit gap exceeded the {e['dtype']} limit of {e['underflow_limit']:.1f} "
        f"(training example #{c['index']}, label {c['label']}: gap {short_number(c['gap_max_minus_min'])}; "
        f"largest in the batch {short_number(e['max_gap_max_minus_min'])}), "
        f"{turned}."
    )
