"""Explain the first non-finite step of a run: which example, which logit gap, which operation.

    >>> r = train(images, labels, TrainConfig(loss="naive", input_scale=255))   # doctest: +SKIP
    >>> print(format_explanation(explain(r.snapshot, "float32", "naive")))      # doctest: +SKIP
    Step 2, naive loss, float32: exp() underflows to 0 past a logit gap of 104.0
    ...
      loss:     p[1] = 0 -> log(p[1]) = -inf -> y_[1] * log(p[1]) = 0 * -inf = NaN -> ...

Pure NumPy on the batch the trainer kept (:class:`mnist_cli.train.Snapshot`): the logits as the
loss saw them, the labels and their positions in the training set. Each example of the batch is
re-run through the loss alone to *observe* which rows give a non-finite loss or gradient; the
chain of operations is *derived* independently, from which softmax probabilities are exactly 0.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np

from mnist_cli.losses import CLIP_MIN, LOSSES, log_softmax, softmax

__all__ = ["underflow_limit", "explain", "format_explanation"]


def underflow_limit(dtype) -> float:
    """``-log(smallest subnormal / 2)``: a logit farther than this below the row maximum has an exact
    ``exp(z - max)`` below half the smallest positive number of ``dtype``, which rounds to exactly 0
    (and so does its probability); a shade nearer, exp still rounds up to the smallest subnormal.

    About 104.0 for float32 and 745.1 for float64. (``-log(smallest subnormal)``, 103.3 and 744.4,
    is where the exact value drops below the smallest subnormal, not where the rounded one is 0.)
    """
    # log(2) - log(s), not -log(s / 2): half the float64 smallest subnormal is 0 in Python floats
    return math.log(2) - math.log(float(np.finfo(dtype).smallest_subnormal))


def _kind(x: float) -> str:
    """'NaN', 'inf', '-inf' or 'finite'."""
    if x != x:
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return "finite"


# --- the chain of operations, in words, for one culprit example (a name -> writer table) -----------


def _chain_nonfinite_logits(c: dict) -> dict:
    return {
        "loss": "z = x @ W + b is already non-finite (W or b overflowed at an earlier step) -> "
        "z - max(z) = inf - inf = NaN -> every p in the row is NaN -> loss = NaN",
        "gradient": "p = NaN -> dL/dz = NaN for the whole row -> dL/dW = x.T @ dL/dz = NaN",
    }


def _chain_naive(c: dict) -> dict:
    """Reverse-mode autodiff through ``mean(-sum(y_ * log(softmax(z))))``, as TF computes it."""
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
            "gradient": f"dL/dp[{j}] = -y_[{j}] / p[{j}] / n = -0/0 = NaN (y_/p = 0/0) -> {backward}",
        }
    if c["target_prob_zero"]:  # only the target's probability is 0: -1 * log(0)
        return {
            "loss": f"p[{t}] = 0 (the target) -> log(p[{t}]) = -inf -> -y_[{t}] * log(p[{t}]) = -1 * -inf = +inf "
            "-> loss = inf",
            "gradient": f"dL/dp[{t}] = -y_[{t}] / p[{t}] / n = -1/0 = -inf -> g[{t}] * p[{t}] = -inf * 0 = NaN "
            f"-> {backward}",
        }
    return {  # the target's probability is tiny but not 0: the loss is finite, 1/p overflows
        "loss": f"p[{t}] = {c['underflowed_p']:.3g} (the target, not 0) -> log(p[{t}]) is finite -> the loss is finite",
        "gradient": f"dL/dp[{t}] = -y_[{t}] / p[{t}] / n overflows to -inf -> sum(g * p) = -inf -> softmax "
        f"backward p * (g - sum(g * p)): dL/dz[{t}] = p[{t}] * (-inf - -inf) = NaN, the other entries "
        "p * (0 + inf) = +inf -> dL/dW = x.T @ dL/dz is NaN (0 * inf, inf - inf) -> W and b are non-finite "
        "after the update",
    }


def _chain_clipped(c: dict) -> dict:
    j = c["underflowed_class"]
    return {
        "loss": f"p[{j}] = 0 -> clip(p[{j}], {CLIP_MIN:g}, 1) = {CLIP_MIN:g} -> log = {math.log(CLIP_MIN):.2f} "
        "-> the loss stays finite but is biased",
        "gradient": f"clip passes no gradient below {CLIP_MIN:g}: dL/dp[{j}] = 0 -> this example stops "
        "pulling its logits apart (a dead gradient, not a NaN)",
    }


def _chain_fused(c: dict) -> dict:
    j = c["underflowed_class"]
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
             row_loss: float, grad_ok: bool, loss_name: str) -> dict:
    """Everything about example ``i`` of the batch, and the chain its values take through the loss."""
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
    writer = CHAINS.get(loss_name, _chain_naive) if finite else _chain_nonfinite_logits
    c["chain"] = writer(c)
    return c


def explain(snapshot, dtype=None, loss_name: str = "naive", *, max_culprits: int = 3) -> dict:
    """Explain ``snapshot`` (the batch of a run's first non-finite step) as a JSON-able dict.

    ``dtype`` is the run's dtype (default: the logits'); ``loss_name`` a key of ``LOSSES``. The
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
            _culprit(int(i), z, y, p, log_p, int(idx[i]), row_loss[i], bool(grad_ok[i]), loss_name)
            for i in order[:max_culprits]
        ]
    finite_gap = gap[np.isfinite(gap)]
    out = {
        "step": int(snapshot.step),
        "loss": loss_name,
        "dtype": dtype.name,
        "underflow_limit": limit,
        "smallest_subnormal": float(np.finfo(dtype).smallest_subnormal),
        "batch_size": int(z.shape[0]),
        "batch_loss": float(batch_loss),
        "batch_loss_kind": _kind(float(batch_loss)),
        "batch_grad_finite": bool(grad_ok.all()),
        "logits_finite": bool(np.isfinite(z).all()),
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
    out["summary"] = _summary(out)
    return out


def _summary(e: dict) -> str:
    """One sentence: what happened at this step and why."""
    head = f"At step {e['step']} ({e['loss']} loss, {e['dtype']})"
    if not e["culprits"]:
        return f"{head} no example of the batch has a zero probability or a non-finite loss or gradient."
    c = e["culprits"][0]
    if not e["logits_finite"] and not c["logits_finite"]:
        return f"{head} the logits themselves were already non-finite: the parameters had overflowed earlier."
    turned = {
        "naive": "and log() turned each 0 into -inf, then 0 * -inf and 0/0 into NaN",
        "clipped": "and clip() hid them: the loss stayed finite but those examples got no gradient",
        "fused": "but the fused loss never takes log(p), so they did no harm",
    }.get(e["loss"], "")
    return (
        f"{head} {e['rows_with_zero_prob']} of {e['batch_size']} examples had a softmax probability rounded to "
        f"exactly 0 because a logit gap exceeded the {e['dtype']} limit of {e['underflow_limit']:.1f} "
        f"(training example #{c['index']}, label {c['label']}: gap {c['gap_max_minus_min']:.1f}; "
        f"largest in the batch {e['max_gap_max_minus_min']:.1f}), "
        f"{turned}."
    )


_WIDTH = 100  # wrap long chains for an ordinary terminal


def _num(x) -> str:
    return f"{x:.1f}" if isinstance(x, (int, float)) and math.isfinite(x) else str(x)


def _para(head: str, text: str, indent: int) -> str:
    """``head`` + ``text`` wrapped to the terminal width, continuation lines under the text."""
    first = " " * indent + head
    return textwrap.fill(text, width=_WIDTH, initial_indent=first, subsequent_indent=" " * len(first),
                         break_on_hyphens=False)


def format_explanation(e: dict) -> str:
    """The readable form of :func:`explain`'s dict (several lines, no trailing newline)."""
    batch_loss = e["batch_loss_kind"] if e["batch_loss_kind"] != "finite" else _num(e["batch_loss"])
    lines = [
        _para("", f"Step {e['step']}, {e['loss']} loss, {e['dtype']}: exp() underflows to 0 past a logit gap of "
              f"{e['underflow_limit']:.1f} (smallest subnormal {e['smallest_subnormal']:.3g})", 0),
        _para("batch: ", f"loss {batch_loss}, gradient {'finite' if e['batch_grad_finite'] else 'non-finite'}; "
              f"{e['rows_with_zero_prob']} of {e['batch_size']} examples have a probability of exactly 0 "
              f"({e['rows_nan_loss']} give a NaN loss, {e['rows_inf_loss']} an infinite one, "
              f"{e['rows_nonfinite_grad']} a non-finite gradient row)", 2),
    ]
    if not e["culprits"]:
        lines.append("  no example in this batch explains it")
        return "\n".join(lines)
    c = e["culprits"][0]
    j = c["underflowed_class"]
    lines += [
        f"  culprit: training example #{c['index']} (batch row {c['batch_row']}), label {c['label']}, "
        f"predicted {c['predicted']}",
        f"    logits: max {_num(c['logit_max'])}, target {_num(c['logit_target'])}, min {_num(c['logit_min'])}",
        f"    gap max - target {_num(c['gap_max_minus_target'])}, max - min {_num(c['gap_max_minus_min'])} "
        f"(limit {e['underflow_limit']:.1f})",
    ]
    if c["logits_finite"]:
        lines.append(
            f"    p[{j}] = exp({_num(c['underflowed_log_p'])}) ~ 1e{c['underflowed_log10_p']:.0f} -> "
            + ("rounds to exactly 0" if j in c["zero_prob_classes"] else f"rounds to {c['underflowed_p']:.3g}, not 0")
            + f" in {e['dtype']}"
        )
    lines += [_para(f"{name + ':':<10}", c["chain"][name], 2) for name in ("loss", "gradient")]
    rest = e["culprits"][1:]
    if rest:
        more = ", ".join(f"#{r['index']} (label {r['label']}, gap {_num(r['gap_max_minus_min'])})" for r in rest)
        extra = e["n_culprits"] - len(e["culprits"])
        lines.append(_para("also: ", more + (f" and {extra} more" if extra > 0 else ""), 2))
    if e["loss"] == "naive":
        lines.append("  fix: the fused loss (softmax_cross_entropy_with_logits) never forms log(p)")
    return "\n".join(lines)
