"""The report of ``train``: settings, accuracies, the NaN accounting, half precision, validation.

    print(format_train(summary, explain=True))   # summary: train --json's document

Also the one-line progress of a run where no bar can be drawn (:func:`progress_line`) and what an
interrupted ``train`` or ``compare`` had done (:func:`interrupted_text`).
"""

from __future__ import annotations

from mnist_cli.report.explain import format_explanation
from mnist_cli.report.text import accuracy_text, data_lines, fitted, plural, provenance_text, short_number, value_text
from mnist_cli.settings import HALF_NAMES


def _first(step) -> str:
    return f" (first at step {step})" if step else ""


def nan_lines(nan: dict, steps: int) -> list[str]:
    """Readable NaN accounting: one line per kind of event, or 'none'."""
    if not nan["any_nonfinite"]:
        return ["none: every loss, gradient and parameter stayed finite"]
    lines = []
    if nan["steps_nan_loss"]:
        lines.append(f"NaN loss in {nan['steps_nan_loss']} of {plural(steps, 'step')}{_first(nan['first_nan_loss_step'])}")
    if nan["steps_inf_loss"]:
        lines.append(f"infinite loss in {nan['steps_inf_loss']} of {plural(steps, 'step')}"
                     f"{_first(nan['first_inf_loss_step'])}")
    if nan["steps_nonfinite_grad"]:
        lines.append(
            f"non-finite gradient in {plural(nan['steps_nonfinite_grad'], 'step')}{_first(nan['first_nonfinite_grad_step'])}"
        )
    if nan["params_nonfinite"]:
        lines.append(f"parameters non-finite from step {nan['first_nonfinite_params_step']} on")
    return lines


#: How the report words a setting that differs from the tutorial (default: ``name value``).
_CHANGED = {"average_epochs": "averaged over the last {} epochs", "fast": "the plain reference loop",
            "stop_on_nan": "stop at the first NaN", "full_batch": "full batch", "input_scale": "input scale {}",
            "lr_decay": "lr decay {}", "weight_decay": "weight decay {}", "train_limit": "first {} examples",
            "batch_size": "batch {}", "init_std": "init std {}",
            "val_split": "the last {} training images held out for validation", "init_from": "started from {}",
            "early_stop": "early stopping with patience {}"}


def _changed_part(name: str, value) -> str:
    """One changed setting in words (``batch 50``; a fractional ``val_split`` is a share, not a count)."""
    if name == "val_split" and isinstance(value, float):
        return f"the last {value:g} of the training images held out for validation"
    return _CHANGED.get(name, name.replace("_", " ") + " {}").format(value if not isinstance(value, float)
                                                                       else f"{value:g}")


def changed_text(changed: dict, preset: str = "tutorial") -> str:
    """``preset best: epochs 12, lr 1, averaged over the last 8 epochs``; ``as the tutorial`` if nothing changed."""
    parts = [_changed_part(k, v) for k, v in changed.items()]
    head = f"preset {preset}" if preset != "tutorial" else ""
    if not parts:
        return head or "as the tutorial"
    return (f"{head}: " if head else "") + ", ".join(parts)


def _softmax_dtype(s: dict) -> str:
    """The dtype softmax ran in: the mixed policy's (float32 under CUDA autocast's), else the run's."""
    c = s["config"]
    return s.get("loss_dtype") or ("float32" if c.get("precision") == "mixed" else c["dtype"])


def half_lines(c: dict, nan: dict) -> list[str]:
    """The report lines of a half-precision run: overflowed logits, and the loss scaler's skips and scale."""
    if c["dtype"] not in HALF_NAMES:
        return []
    lines = [f"  overflow        {nan['overflow_logits']} logits were +-inf (past the largest {c['dtype']})"
             f"{_first(nan['first_overflow_step'])}"] if nan.get("overflow_logits") else []
    if nan.get("loss_scale") is not None:
        lines.append(f"  loss scale      {short_number(nan['loss_scale'])} at the end ({c['loss_scale']}); "
                     f"{plural(nan['steps_skipped'], 'update')} skipped for a non-finite gradient"
                     f"{_first(nan['first_skipped_step'])}")
    return lines


@fitted
def format_train(s: dict, explain: bool = False) -> str:
    """The terminal report of ``train`` (with the explanation of its first non-finite step when ``explain``)."""
    c = s["config"]
    nan = s["nan"]
    head = (
        f"loss={c['loss']} lr={c['lr']:g} batch={c['batch_size']} steps={s['steps']} dtype={c['dtype']} "
        f"input-scale={c['input_scale']:g} init={c['init']} seed={c['seed']}"
    )
    rate = f", {s['steps_per_second']:,.0f} steps/s" if s["steps_per_second"] else ""
    underflow = (
        f"{nan['underflow_probs']} softmax probabilities were exactly 0 in {plural(nan['steps_with_underflow'], 'step')}"
        f"{_first(nan['first_underflow_step'])}; largest logit gap {nan['max_logit_gap']:.4g} "
        f"({_softmax_dtype(s)} exp underflows past {s['underflow_limit']:.1f})"
    )
    nl = nan_lines(nan, s["steps"])
    ok, finite = s.get("accuracy_meaningful", True), not nan["params_nonfinite"]
    rows = [
        head,
        f"  settings        {changed_text(s.get('changed', {}), s.get('preset', 'tutorial'))}",
        f"  test accuracy   {accuracy_text(s['test_accuracy'], ok, finite)}  ({s['n_test']} examples)",
        f"  train accuracy  {accuracy_text(s['train_accuracy'], ok, finite)}  ({s['n_train']} examples)",
        f"  last batch loss {value_text(s['final_loss'], '.6g')}  (step {s['steps']}'s mini-batch of "
        f"{c['batch_size']})",
        *([f"  training loss   {value_text(s['train_loss'], '.6g')}  (mean cross-entropy over the {s['n_train']} "
           "training examples, final model)"] if "train_loss" in s else []),
        f"  NaN / inf       {nl[0]}",
        *[f"                  {line}" for line in nl[1:]],
        f"  underflow       {underflow}",
        *half_lines(c, nan),
        f"  time            {s['seconds']:.3f} s training{rate}",
        f"  computed with   {provenance_text(s.get('provenance'))}",
    ]
    if s.get("early_stop"):
        rows.append(f"  early stop      {early_stop_text(s['early_stop'], s['steps'])}")
    if s.get("checkpoints"):
        rows.append(f"  checkpoints     {', '.join(s['checkpoints'])}")
    if s.get("parent"):
        rows.append(f"  continued from  {parent_text(s['parent'], s['steps'], s.get('steps_total'))}")
    if s["stopped_early"]:
        rows.append(f"  stopped         at step {s['steps']}, before its update (stop on NaN)")
    if s.get("validation"):
        rows += validation_lines(s["validation"], s.get("accuracy_meaningful", True))
    rows += data_lines(s)
    if explain:
        rows += ["", format_explanation(s["explanation"]) if s.get("explanation") else "No non-finite step to explain."]
    if "saved" in s:
        rows.append(f"  saved           {s['saved']}")
    if "plot" in s:
        rows.append(f"  plot            {s['plot']}")
    return "\n".join(rows)


def fail_on_nan_line(nan: dict, steps: int, code: int) -> str:
    """The stderr line of ``train --fail-on-nan`` exiting ``code``: the first kind of non-finite event."""
    return f"--fail-on-nan: {nan_lines(nan, steps)[0]}: exit {code}"


def parent_text(parent: dict, steps: int, total: int | None) -> str:
    """``m.npz (1000 steps there + 500 here = 1500; its W, b sha256 3f2a9c1e0b7d...)``: a continued run's parent."""
    there = parent.get("steps_total")
    count = (f"{there} steps there + {steps} here = {total}" if there is not None and total is not None
             else f"{steps} steps here, its own unknown")
    return f"{parent['path']} ({count}; its W, b sha256 {parent['params_sha256'][:12]}...)"


def early_stop_text(e: dict, steps: int) -> str:
    """Where early stopping ended the run and which step's parameters the model holds."""
    when = (f"stopped at step {e['stopped_at']}: {e['patience']} evaluations without a lower validation loss"
            if e["stopped_at"] is not None else f"ran all {steps} steps (patience {e['patience']} not used up)")
    kept = (f"kept the parameters of step {e['best_step']} (validation loss {e['best_val_loss']:.4f}, the best of "
            f"{e['evaluations']} evaluations)" if e["restored"]
            else "no evaluation had a finite validation loss: the last parameters are kept, none is 'best'")
    return f"{when}; {kept}"


def progress_line(step: int, total: int, loss: float, nonfinite: int) -> str:
    """``train: step 300/1000, batch loss 0.3707, 0 non-finite steps``: progress where no bar can be drawn."""
    return (f"train: step {step}/{total}, batch loss {value_text(loss, '.4g')}, "
            f"{plural(nonfinite, 'non-finite step')}")


def interrupted_text(done: dict | None) -> str:
    """What an interrupted ``train`` or ``compare`` had done (``exc.done`` of the KeyboardInterrupt)."""
    if not done:
        return ""
    if done["command"] == "train":
        lines = nan_lines(done["nan"], max(done["steps"], 1))
        return (f"Done before the interrupt: {plural(done['steps'], 'step')} of {done['of']}; NaN / inf so far: "
                + "; ".join(lines))
    finished = done["finished"]
    return (f"Done before the interrupt: {len(finished)} of {plural(done['runs'], 'run')}"
            + (f" finished: {', '.join(finished)}." if finished else ", none finished."))


def validation_lines(v: dict, meaningful: bool = True) -> list[str]:
    """The held-out score of the final model, and train vs validation per epoch (else per logged step)."""
    acc = accuracy_text(v["accuracy"], meaningful)
    lines = [f"  validation      accuracy {acc}, loss {value_text(v['loss'], '.4f')}  (final model, {v['n']} held-out "
             "examples)"]
    history = v["history"]
    epochs = [r for r in history if float(r["epoch"]).is_integer()] or history
    if epochs:
        lines.append("    epoch     step  train loss  train acc  val loss  val acc")
        lines += [f"    {r['epoch']:5.4g} {r['step']:8d}  {value_text(r['train_loss'], '10.4f')}  "
                  f"{value_text(r['train_accuracy'], '9.4f')}  {value_text(r['val_loss'], '8.4f')}  "
                  f"{value_text(r['val_accuracy'], '7.4f')}" for r in epochs]
    return lines
