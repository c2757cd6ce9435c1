"""Every sentence about a first non-finite step: the chain of operations, the summary, the terminal form.

    e = explain(result.snapshot, "float32", "naive")      # mnist_cli.forensics: the numbers
    e["summary"], e["culprits"][0]["chain"]["loss"]       # written here, from them
    print(format_explanation(e))

:mod:`mnist_cli.forensics` finds the example, the gap and the numbers, and calls the writers here to
put them in words (:func:`chain_text`, :func:`summary_text`, :func:`half_backward_text`); what one
loss does to an underflowed probability is said in one table, :data:`LOSS_PROSE`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from mnist_cli.losses import CLIP_MIN, breaks_like_naive, gradient_overflow_limit
from mnist_cli.report.text import WIDTH, para, short_number
from mnist_cli.rounding import DTYPES, finfo

# --- the chain of operations, in words, for one culprit example --------------------------------------


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


def _turned_clipped(e: dict) -> str:
    if breaks_like_naive(e["loss"], e["dtype"]):  # the floor rounds to 0: clipped is naive
        return (f"and clip() could not help: its floor {CLIP_MIN:g} rounds to 0 in {e['dtype']}, so log() "
                "turned each 0 into -inf as in naive")
    return "and clip() hid them: the loss stayed finite but those examples got no gradient"


@dataclass(frozen=True)
class LossProse:
    """What one loss does to a softmax probability that rounded to 0, in words."""

    chain: Callable[[dict], dict]  # a culprit's facts -> {"loss": ..., "gradient": ...}, its chain of operations
    turned: Callable[[dict], str]  # the explanation -> how the summary ends: what became of the zeros
    fix: str | None = None  # the way out the terminal explanation names, if the loss is the problem


#: loss name -> how its graph turns an underflowed probability into (or keeps it from) NaN. Every loss
#: of :data:`mnist_cli.settings.LOSS_NAMES` has its entry; an unknown one is a KeyError, not another's words.
LOSS_PROSE = {
    "naive": LossProse(_chain_naive, lambda e: "and log() turned each 0 into -inf, then 0 * -inf and 0/0 into NaN",
                       fix="the fused loss (softmax_cross_entropy_with_logits) never forms log(p)"),
    "clipped": LossProse(_chain_clipped, _turned_clipped),
    "fused": LossProse(_chain_fused, lambda e: "but the fused loss never takes log(p), so they did no harm"),
}


def chain_text(c: dict, loss: str) -> dict:
    """The culprit ``c``'s chain of operations through ``loss``, ``{"loss": ..., "gradient": ...}``; when its
    logits were already non-finite, how they got so (the same for every loss)."""
    prose = LOSS_PROSE[loss]
    return prose.chain(c) if c["logits_finite"] else _chain_nonfinite_logits(c)


# --- the one-sentence summaries ----------------------------------------------------------------------


def summary_text(e: dict) -> str:
    """One sentence: what happened at this step and why."""
    head = f"At step {e['step']} ({e['loss']} loss, {e['dtype']})"
    if not e["culprits"]:
        return f"{head} no example of the batch has a zero probability or a non-finite loss or gradient."
    c = e["culprits"][0]
    dtype = DTYPES[e["dtype"]]
    if not e["logits_finite"] and not c["logits_finite"]:
        if math.isinf(c["logit_max"]) or math.isinf(c["logit_min"]):
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
    return (
        f"{head} {e['rows_with_zero_prob']} of {e['batch_size']} examples had a softmax probability rounded to "
        f"exactly 0 because a logit gap exceeded the {e['dtype']} limit of {e['underflow_limit']:.1f} "
        f"(training example #{c['index']}, label {c['label']}: gap {short_number(c['gap_max_minus_min'])}; "
        f"largest in the batch {short_number(e['max_gap_max_minus_min'])}), "
        f"{LOSS_PROSE[e['loss']].turned(e)}."
    )


def half_backward_text(e: dict, h: dict, loss_scale) -> str:
    """Why a mixed-precision step whose float32 loss and dL/dz were finite had a non-finite gradient: the
    backward product ``x.T @ rnd(scale * dL/dz)`` in the half dtype passed its largest value. ``h``:
    the explanation's ``half_backward`` numbers; ``loss_scale``: the run's setting (none, dynamic, N)."""
    scale = h["loss_scale"]
    scaled = f" scaled by the loss scale {short_number(scale)}" if scale not in (None, 1.0) else ""
    after = ("the loss scaler skipped this update and halved the scale: this is how dynamic loss scaling finds a "
             "scale that fits" if loss_scale == "dynamic" else
             "the loss scaler skipped this update (a fixed scale never changes)" if loss_scale != "none" else
             "with no loss scaler the non-finite gradient reached the weights")
    return (f"At step {e['step']} ({e['loss']} loss, {h['dtype']} mixed precision) every example's loss and dL/dz "
            f"were finite in float32, but the backward product dL/dW = x.T @ dL/dz{scaled}, computed in "
            f"{h['dtype']}, passed the largest {h['dtype']} ({h['dtype_max']:.5g}) and rounded to infinity "
            f"(overflow in the half-precision product, not underflow): {after}.")


def half_backward_clause(h: dict) -> str:
    """One clause: a mixed-precision step whose half backward product overflowed."""
    scale = f" at loss scale {short_number(h['loss_scale'])}" if h.get("loss_scale") not in (None, 1.0) else ""
    return f"losses finite, the {h['dtype']} product x.T @ dL/dz overflowed{scale}"


# --- the terminal form ---------------------------------------------------------------------------------


SHADES = " ░▒▓█"  # ink 0-255 in five steps


def _explanation_head(e: dict, width: int = WIDTH) -> list[str]:
    """Which limits the dtype sets, and what the whole batch did."""
    dtype = DTYPES[e["dtype"]]
    lines = [para("", f"Step {e['step']}, {e['loss']} loss, {e['dtype']}: exp() underflows to 0 past a logit gap of "
                  f"{e['underflow_limit']:.1f} " + (f"({e['framework']} flushes results below the smallest normal "
                  f"{e['smallest_normal']:.3g} to 0)" if e.get("flushes") else
                  f"(smallest subnormal {e['smallest_subnormal']:.3g})"), 0, width)]
    if breaks_like_naive(e["loss"], e["dtype"]):
        n = e["batch_size"]
        lines.append(para("", f"the gradient (-y_ / n) / p[target] can break earlier: 1/p overflows (largest "
                          f"{e['dtype']} {float(finfo(dtype).max):.3g}) from a gap max - target of "
                          f"{gradient_overflow_limit(dtype, n):.1f} (9 logits tied at the max) to "
                          f"{gradient_overflow_limit(dtype, n, 1):.1f} (one) at batch {n}", 2, width))
        if e["loss"] == "clipped":
            lines.append(para("", f"clip floor: {CLIP_MIN:g} rounds to 0 in {e['dtype']} (unrepresentable), so "
                              "clipped behaves exactly like naive", 2, width))
    batch_loss = e["batch_loss_kind"] if e["batch_loss_kind"] != "finite" else short_number(e["batch_loss"])
    lines.append(para("batch: ", f"loss {batch_loss}, gradient {'finite' if e['batch_grad_finite'] else 'non-finite'}; "
                      f"{e['rows_with_zero_prob']} of {e['batch_size']} examples have a probability of exactly 0 "
                      f"({e['rows_nan_loss']} give a NaN loss, {e['rows_inf_loss']} an infinite one, "
                      f"{e['rows_nonfinite_grad']} a non-finite gradient row)", 2, width))
    return lines


def _probability_lines(e: dict, c: dict, width: int = WIDTH) -> list[str]:
    """What became of the culprit's probability that broke the step."""
    j = c["underflowed_class"]
    if not c["logits_finite"]:
        return []
    if c["underflowed_log_p"] < -1e6:  # too far for a power of ten
        return [f"    p[{j}] = exp({short_number(c['underflowed_log_p'])}) -> exactly 0 in {e['dtype']}"]
    zero = j in c["zero_prob_classes"]
    lines = [f"    p[{j}] = exp({short_number(c['underflowed_log_p'])}) ~ 1e{c['underflowed_log10_p']:.0f} -> "
             + (("is flushed to 0" if e.get("flushes") else "rounds to exactly 0") if zero
                else f"rounds to {c['underflowed_p']:.3g}, not 0") + f" in {e['dtype']}"]
    if not zero and not c["row_grad_finite"]:
        lines.append(para("", f"the gap {short_number(c['gap_max_minus_target'])} is below the underflow limit "
                          f"{e['underflow_limit']:.1f}: the loss is finite, the gradient breaks because "
                          f"1/p overflows", 4, width))
    return lines


def digit_lines(c: dict) -> list[str]:
    """The culprit's digit (14x14 block characters) beside its ten logits, label and prediction marked."""
    logits = c.get("logits") or []
    rows = []
    for r, row in enumerate(c["digit"]):
        art = "".join(SHADES[min(len(SHADES) - 1, v * len(SHADES) // 256)] * 2 for v in row)
        side = ""
        if r < len(logits):
            mark = ("  <- label" if r == c["label"] else "") + ("  <- max" if r == c["predicted"] else "")
            side = f"   z[{r}] = {short_number(logits[r]):>10}{mark}"
        rows.append(f"    |{art}|{side}".rstrip())
    return rows


def format_explanation(e: dict, width: int = WIDTH) -> str:
    """The readable form of :func:`mnist_cli.forensics.explain`'s dict (several lines, no trailing newline),
    wrapped to ``width``."""
    lines = _explanation_head(e, width)
    if not e["culprits"]:
        if e.get("half_backward"):
            return "\n".join([*lines, para("", e["half_backward"]["text"], 2, width)])
        return "\n".join([*lines, "  no example in this batch explains it"])
    c = e["culprits"][0]
    lines += [
        f"  culprit: training example #{c['index']} (batch row {c['batch_row']}), label {c['label']}, "
        f"predicted {c['predicted']}",
        f"    logits: max {short_number(c['logit_max'])}, target {short_number(c['logit_target'])}, "
        f"min {short_number(c['logit_min'])}",
        f"    gap max - target {short_number(c['gap_max_minus_target'])}, max - min "
        f"{short_number(c['gap_max_minus_min'])} (limit {e['underflow_limit']:.1f})",
        *_probability_lines(e, c, width),
        *(para(f"{name + ':':<10}", c["chain"][name], 2, width) for name in ("loss", "gradient")),
    ]
    if c.get("digit"):
        lines += digit_lines(c)
    rest = e["culprits"][1:]
    if rest:
        more = ", ".join(f"#{r['index']} (label {r['label']}, gap {short_number(r['gap_max_minus_min'])})" for r in rest)
        extra = e["n_culprits"] - len(e["culprits"])
        lines.append(para("also: ", more + (f" and {extra} more" if extra > 0 else ""), 2, width))
    fix = LOSS_PROSE[e["loss"]].fix
    if fix:
        lines.append(f"  fix: {fix}")
    return "\n".join(lines)
