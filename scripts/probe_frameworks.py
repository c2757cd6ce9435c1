"""Measure, in the real frameworks, every fact a framework profile (:mod:`mnist_cli.frameworks`) holds (issue 19).

    .venv/bin/pip install torch==2.13.0 tensorflow-cpu==2.21.0      # both from this machine's local mirror
    .venv/bin/python scripts/probe_frameworks.py                     # JSON on stdout: every setting, every fact
    .venv/bin/python scripts/probe_frameworks.py --framework torch   # one framework
    .venv/bin/python scripts/probe_frameworks.py --check             # exit 1 if a profile disagrees with a probe

TensorFlow is probed in four settings, each in a fresh interpreter (``TF_ENABLE_ONEDNN_OPTS`` is read at
import): oneDNN off and on, eager and ``tf.function``. Each fact is measured, never copied from documentation,
except CUDA autocast's op lists, which no CPU can run: they are PyTorch's published lists
(``aten/src/ATen/autocast_mode.h``, ``AT_FORALL_FP32`` and ``AT_FORALL_FP32_SET_OPT_DTYPE``), quoted here for
the ops the lab's graphs use.

Facts, per dtype (float16, bfloat16, float32, float64):

- ``ftz``: a result below the smallest normal is flushed to 0 (``smallest_normal * 0.5``, and ``exp(x)``
  at ``x = log(smallest_normal) - 0.3``);
- ``daz``: a subnormal input is read as 0 (``smallest_subnormal * 2**20`` is 0, where IEEE gives a normal);
- ``exp_gap``: the largest gap ``g`` (on a 0.01 grid) with ``exp(-g) > 0``: the underflow limit of softmax's
  numerator; ``softmax_gap``: the same for ``softmax([0, -g])[1] > 0`` (and with 9 ties at the max);
- ``softmax_rounding``: over 22890 random probabilities, the fraction bit-identical to (a) a float32 softmax
  rounded once to the dtype, (b) NumPy with every op rounded to the dtype (the lab's ``numpy`` profile);
- ``log_rounding``: the same for ``log`` (a) float32 log rounded once;
- ``sum_accumulation``: the accumulator of a half-precision ``sum`` (``sum([2048] + [1] * 2048)``: 4096 in
  float32); ``mean_overflows``, ``nll_mean_overflows`` (float16): whether ``mean`` (``reduce_mean``) and
  PyTorch's ``nll_loss`` mean are inf for a batch whose sum passes 65504 but whose mean does not;
- ``log_backward``: the gradient of ``log(x)`` with upstream ``g``: ``g / x`` or ``g * reciprocal(x)``,
  decided on float16 pairs where the two differ;
- ``fused_neg_inf``: the fused loss's pattern for a non-target ``-inf`` logit.

And per framework: the autocast/mixed policies (which dtype ``softmax``, ``log``, ``exp``, ``sum``,
``nll_loss``/``cross_entropy`` compute in) and the loss scaler's rules (initial scale, growth factor, backoff,
growth interval).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

DTYPES = ("float16", "bfloat16", "float32", "float64")
#: CUDA autocast (PyTorch's published lists, ``aten/src/ATen/autocast_mode.h``): the ops the lab's graphs use.
CUDA_AUTOCAST_FP32 = ("exp", "log", "softmax", "log_softmax", "sum", "nll_loss", "cross_entropy")
ROWS, K = 2289, 10  # 22890 probabilities, the count


def _np_dtype(name):
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _finfo(name):
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.finfo(_np_dtype(name))
    return np.finfo(name)


def _random_logits(dtype) -> np.ndarray:
    """(ROWS, K) logits of several spreads, rounded to ``dtype``; seeded."""
    rng = np.random.default_rng(19)
    scale = np.repeat([1.0, 3.0, 10.0, 30.0], ROWS // 4 + 1)[:ROWS, None]
    return (rng.standard_normal((ROWS, K)) * scale).astype(np.float32).astype(_np_dtype(dtype))


def _per_op_softmax(z: np.ndarray) -> np.ndarray:
    """NumPy rounding every op to z's dtype (the lab's ``numpy`` profile), float32-accumulated sum."""
    with np.errstate(all="ignore"):
        sh = z - np.max(z, axis=1, keepdims=True)
        e = np.exp(sh)
        s = np.sum(e, axis=1, keepdims=True, dtype=np.float32).astype(z.dtype)
        return e / s


def _once_softmax(z: np.ndarray) -> np.ndarray:
    """float32 softmax rounded once to z's dtype."""
    z32 = z.astype(np.float32)
    with np.errstate(all="ignore"):
        e = np.exp(z32 - z32.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(z.dtype)


def _bits_equal(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    return float(same.mean())


def _grid(lo: float, hi: float, step: float = 0.01) -> np.ndarray:
    return np.round(np.arange(lo, hi, step), 4)


def _largest(grid: np.ndarray, positive: np.ndarray) -> float:
    """The largest ``g`` of ``grid`` whose result is still > 0 (``positive``, one entry per ``g``)."""
    ok = grid[np.asarray(positive) > 0]
    return float(ok.max()) if ok.size else float("nan")


def _gap_rows(grid: np.ndarray, ties: int) -> np.ndarray:
    """(len(grid), ties + 1) rows ``[0] * ties + [-g]``: the last entry's softmax underflows past a gap."""
    rows = np.zeros((grid.size, ties + 1))
    rows[:, -1] = -grid
    return rows


def _accumulation(total: float) -> str:
    """The accumulator of ``sum([2048] + [1] * 2048)`` in a half dtype: float32 gives 4096; a half-dtype
    accumulator sticks at 2048 (``2048 + 1`` rounds back to 2048, ties to even; bfloat16 sticks at 256 sooner)."""
    return "float32" if total == 4096.0 else f"dtype (sum = {total:g})"


GAP_RANGE = {"float16": (5.0, 25.0), "bfloat16": (80.0, 100.0), "float32": (80.0, 110.0),
             "float64": (700.0, 750.0)}
#: float16 pairs (upstream g, x) where g / x and g * (1 / x) round differently: decided per framework.
def _update_case(name: str):
    """A pure half SGD step's operands: seeded ``W`` (784, 10) and ``b`` (10,) and their gradients in ``name``, and
    lr 0.37 (rounded to the dtype, as both frameworks round it); on many entries the two roundings of the update
    differ: ``rnd(W - lr g)`` ("fused": computed in float32, rounded once) and ``rnd(W - rnd(lr g))``."""
    dt, rng = _np_dtype(name), np.random.default_rng(7)
    half = lambda a: a.astype(dt).astype(np.float32)
    W, gW = half(rng.normal(0, 0.05, (784, 10))), half(rng.normal(0, 0.01, (784, 10)))
    b, gb = half(rng.normal(0, 0.05, 10)), half(rng.normal(0, 0.01, 10))
    lr = np.float32(half(np.float32(0.37)))
    forms = {key: {"fused": half(p - lr * g), "product_rounded": half(p - half(lr * g))}
             for key, p, g in (("W", W, gW), ("b", b, gb))}
    return (W, gW, b, gb), forms


def _update_votes(got: dict, forms: dict) -> dict:
    """{"W": {form: share of entries equal}, "b": ...}: which rounding a framework's update made."""
    return {key: {form: _bits_equal(got[key], want) for form, want in forms[key].items()} for key in forms}


def _log_pairs(count: int = 64):
    """``count`` seeded float16 pairs ``(g, x, g / x, g * rnd(1 / x))`` on which the two orders differ."""
    f, rng, keep = np.float16, np.random.default_rng(7), []
    while len(keep) < count:
        g, x = f(-rng.uniform(1e-3, 1)), f(rng.uniform(1e-3, 1))
        div = f(np.float32(g) / np.float32(x))
        rec = f(np.float32(g) * np.float32(f(np.float32(1) / np.float32(x))))
        if div != rec and np.isfinite(div) and np.isfinite(rec):
            keep.append((float(g), float(x), float(div), float(rec)))
    return keep


# --- PyTorch -------------------------------------------------------------------------------------------


def probe_torch() -> dict:
    import torch
    import torch.nn.functional as F

    TD = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}
    out: dict = {"framework": "torch", "version": torch.__version__, "settings": {
        "flush_denormal": "default (torch.set_flush_denormal not called)", "threads": torch.get_num_threads()}}
    per = {}
    for name, td in TD.items():
        fi = _finfo(name)
        tiny, sub = float(fi.smallest_normal), float(fi.smallest_subnormal)
        t = lambda v, td=td: torch.tensor(v, dtype=td)
        ftz = float(t(tiny) * t(0.5)) == 0.0
        ftz_exp = float(torch.exp(t(np.log(tiny) - 0.3))) == 0.0
        daz = float(t(sub) * t(2.0**20)) == 0.0
        lo, hi = GAP_RANGE[name]
        grid = _grid(lo, hi)
        sm = lambda ties, grid=grid, td=td: torch.softmax(torch.from_numpy(_gap_rows(grid, ties)).to(td), 1)[:, -1].double()
        exp_gap = _largest(grid, torch.exp(torch.from_numpy(-grid).to(td)).double().numpy())
        sm_gap, sm_gap9 = _largest(grid, sm(1).numpy()), _largest(grid, sm(9).numpy())
        facts = {"ftz": ftz or ftz_exp, "daz": daz, "exp_gap": exp_gap, "softmax_gap": sm_gap,
                 "softmax_gap_9_ties": sm_gap9}
        if name in ("float16", "bfloat16"):
            z = _random_logits(name)
            zt = torch.from_numpy(z.astype(np.float32)).to(td)
            p = torch.softmax(zt, 1).float().numpy()
            facts["softmax_rounding"] = {"float32_rounded_once": _bits_equal(p, _once_softmax(z).astype(np.float32)),
                                         "every_op_rounded": _bits_equal(p, _per_op_softmax(z).astype(np.float32))}
            x = np.abs(z).astype(np.float32) + np.float32(1e-3)
            xh = x.astype(_np_dtype(name))
            lt = torch.log(torch.from_numpy(xh.astype(np.float32)).to(td)).float().numpy()
            facts["log_rounding"] = {"float32_rounded_once": _bits_equal(
                lt, np.log(xh.astype(np.float32)).astype(_np_dtype(name)).astype(np.float32))}
            facts["sum_accumulation"] = _accumulation(float(torch.cat([t([2048.0]), torch.ones(2048, dtype=td)]).sum()))
            if name == "float16":  # a bfloat16 sum past its range is past float32's too: nothing to tell apart
                big = float(fi.max) / 4
                facts["mean_overflows"] = bool(torch.isinf(torch.full((8,), big, dtype=td).mean()))
                logp = torch.full((8, 2), -big, dtype=td)
                facts["nll_mean_overflows"] = bool(torch.isinf(F.nll_loss(logp, torch.zeros(8, dtype=torch.long))))
            (W, gW, b, gb), forms = _update_case(name)  # torch.optim.SGD's step: param.add_(grad, alpha=-lr)
            got = {}
            for key, p, g in (("W", W, gW), ("b", b, gb)):
                pt = torch.from_numpy(p).to(td)
                pt.add_(torch.from_numpy(g).to(td), alpha=-0.37)
                got[key] = pt.float().numpy()
            facts["sgd_update"] = _update_votes(got, forms)
        per[name] = facts
    # the log backward, float16
    pairs = _log_pairs()
    votes = {"grad / x": 0, "grad * reciprocal(x)": 0}
    for g, x, div, rec in pairs:
        xt = torch.tensor(x, dtype=torch.float16, requires_grad=True)
        torch.log(xt).backward(torch.tensor(g, dtype=torch.float16))
        got = float(xt.grad)
        votes["grad / x"] += got == div
        votes["grad * reciprocal(x)"] += got == rec
    out["log_backward"] = {"votes": votes, "pairs": len(pairs), "order": max(votes, key=votes.get)}
    # the fused loss: a non-target -inf logit
    ce = F.cross_entropy(torch.tensor([[0.0, -float("inf")]], requires_grad=True), torch.tensor([0]))
    out["fused_neg_inf"] = "finite" if torch.isfinite(ce) else str(float(ce))
    # autocast on the CPU, measured: the dtype each op of the lab's graphs returns
    cpu = {}
    for name in ("bfloat16", "float16"):
        td = TD[name]
        x, W = torch.randn(4, 3), torch.randn(5, 3)
        with torch.autocast("cpu", dtype=td):
            z = F.linear(x, W)
            ops = {"linear": z, "exp": torch.exp(z), "log": torch.log(z.abs()), "softmax": torch.softmax(z, 1),
                   "log_softmax": torch.log_softmax(z, 1), "sum": z.sum(),
                   "nll_loss": F.nll_loss(z, torch.zeros(4, dtype=torch.long)),
                   "cross_entropy": F.cross_entropy(z, torch.zeros(4, dtype=torch.long))}
        cpu[name] = {op: str(v.dtype).replace("torch.", "") for op, v in ops.items()}
    out["autocast"] = {"cpu": cpu, "cuda": {"fp32_ops": list(CUDA_AUTOCAST_FP32), "linear": "float16",
                                            "source": "aten/src/ATen/autocast_mode.h (AT_FORALL_FP32, "
                                                      "AT_FORALL_FP32_SET_OPT_DTYPE), not runnable on a CPU"}}
    s = torch.amp.GradScaler("cpu")
    out["scaler"] = {"class": "torch.amp.GradScaler", "init_scale": s.get_scale(),
                     "growth_factor": s.get_growth_factor(), "backoff_factor": s.get_backoff_factor(),
                     "growth_interval": s.get_growth_interval()}
    out["dtypes"] = per
    return out


# --- TensorFlow (one setting per interpreter) --------------------------------------------------------------


def probe_tensorflow_setting(graph: bool) -> dict:
    import tensorflow as tf

    TD = {"float16": tf.float16, "bfloat16": tf.bfloat16, "float32": tf.float32, "float64": tf.float64}
    run = (lambda f: tf.function(f)) if graph else (lambda f: f)
    per = {}
    for name, td in TD.items():
        fi = _finfo(name)
        tiny, sub = float(fi.smallest_normal), float(fi.smallest_subnormal)
        mul = run(lambda a, b: a * b)
        exp = run(tf.exp)
        c = lambda v, td=td: tf.constant(v, dtype=td)
        ftz = float(mul(c(tiny), c(0.5))) == 0.0
        ftz_exp = float(exp(c(np.log(tiny) - 0.3))) == 0.0
        daz = float(mul(c(sub), c(2.0**20))) == 0.0 if float(c(sub)) != 0 else True
        lo, hi = GAP_RANGE[name]
        sm = run(lambda v: tf.nn.softmax(v))
        grid = _grid(lo, hi)
        f64 = lambda a: tf.cast(a, tf.float64).numpy()  # float64: a float64 subnormal is > 0
        exp_gap = _largest(grid, f64(exp(tf.cast(tf.constant(-grid), td))))
        sm_gap, sm_gap9 = (_largest(grid, f64(sm(tf.cast(tf.constant(_gap_rows(grid, ties)), td)))[:, -1])
                           for ties in (1, 9))
        facts = {"ftz": ftz or ftz_exp, "ftz_mul": ftz, "ftz_exp": ftz_exp, "daz": daz, "exp_gap": exp_gap,
                 "softmax_gap": sm_gap, "softmax_gap_9_ties": sm_gap9}
        if name in ("float16", "bfloat16"):
            z = _random_logits(name)
            p = tf.cast(sm(tf.cast(tf.constant(z.astype(np.float32)), td)), tf.float32).numpy()
            facts["softmax_rounding"] = {"float32_rounded_once": _bits_equal(p, _once_softmax(z).astype(np.float32)),
                                         "every_op_rounded": _bits_equal(p, _per_op_softmax(z).astype(np.float32))}
            x = np.abs(z).astype(np.float32) + np.float32(1e-3)
            xh = x.astype(_np_dtype(name))
            lt = tf.cast(run(tf.math.log)(tf.cast(tf.constant(xh.astype(np.float32)), td)), tf.float32).numpy()
            facts["log_rounding"] = {"float32_rounded_once": _bits_equal(
                lt, np.log(xh.astype(np.float32)).astype(_np_dtype(name)).astype(np.float32))}
            ones = tf.concat([c([2048.0]), tf.ones([2048], td)], 0)
            facts["sum_accumulation"] = _accumulation(float(run(tf.reduce_sum)(ones)))
            if name == "float16":
                big = float(fi.max) / 4
                facts["mean_overflows"] = bool(np.isinf(float(run(tf.reduce_mean)(tf.fill([8], c(big))))))
            (W, gW, b, gb), forms = _update_case(name)  # the update a TF user writes: v.assign_sub(lr * g)
            got = {}
            for key, p, g in (("W", W, gW), ("b", b, gb)):
                v = tf.Variable(tf.cast(tf.constant(p), td))
                run(lambda v, g, td=td: v.assign_sub(tf.constant(0.37, td) * g))(v, tf.cast(tf.constant(g), td))
                got[key] = tf.cast(v, tf.float32).numpy()
            facts["sgd_update"] = _update_votes(got, forms)
        per[name] = facts
    pairs = _log_pairs()
    votes = {"grad / x": 0, "grad * reciprocal(x)": 0}

    def log_grad(x, g):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.math.log(x)
        return tape.gradient(y, x, output_gradients=g)

    lg = run(log_grad)
    for g, x, div, rec in pairs:
        got = float(lg(tf.constant(x, tf.float16), tf.constant(g, tf.float16)))
        votes["grad / x"] += got == div
        votes["grad * reciprocal(x)"] += got == rec
    fused = run(lambda z, y: tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=z))
    ce = float(fused(tf.constant([[0.0, -np.inf]], tf.float32), tf.constant([[1.0, 0.0]], tf.float32))[0])
    return {"dtypes": per, "log_backward": {"votes": votes, "pairs": len(pairs), "order": max(votes, key=votes.get)},
            "fused_neg_inf": "finite" if np.isfinite(ce) else str(ce)}


def probe_keras() -> dict:
    import keras
    import tensorflow as tf

    policies = {}
    for name in ("mixed_float16", "mixed_bfloat16"):
        pol = keras.mixed_precision.Policy(name)
        keras.mixed_precision.set_global_policy(pol)
        dense = keras.layers.Dense(10)
        sm = keras.layers.Softmax()
        z = dense(tf.zeros((2, 4)))
        policies[name] = {"compute_dtype": pol.compute_dtype, "variable_dtype": pol.variable_dtype,
                          "dense_output": z.dtype if isinstance(z.dtype, str) else z.dtype.name,
                          "softmax_layer_output": str(getattr(sm(z).dtype, "name", sm(z).dtype))}
    keras.mixed_precision.set_global_policy("float32")
    default = keras.mixed_precision.LossScaleOptimizer(keras.optimizers.SGD(0.5))
    # the rules, measured on a small scale and interval: finite steps, then a NaN gradient
    opt = keras.mixed_precision.LossScaleOptimizer(keras.optimizers.SGD(0.5), initial_scale=8.0,
                                                   dynamic_growth_steps=2)
    v = keras.Variable(1.0)
    opt.build([v])
    trace = []
    for g in (1.0, 1.0, 1.0, float("nan"), 1.0):
        before = float(v.numpy())
        opt.apply([tf.constant(g)], [v])
        trace.append({"grad": g, "scale_after": float(opt.scale_loss(tf.constant(1.0))),
                      "skipped": float(v.numpy()) == before})
    scaler = {"class": "keras.mixed_precision.LossScaleOptimizer", "init_scale": float(default.initial_scale),
              "growth_interval": int(default.dynamic_growth_steps),
              "growth_factor": trace[1]["scale_after"] / 8.0, "backoff_factor": trace[3]["scale_after"] /
              trace[2]["scale_after"], "skips_non_finite": trace[3]["skipped"],
              "trace (initial_scale 8, dynamic_growth_steps 2)": trace}
    return {"keras_version": keras.__version__, "policies": policies, "scaler": scaler}


def probe_tensorflow() -> dict:
    """Every setting in its own interpreter; the facts that differ between settings are reported per setting."""
    settings = {}
    for onednn in ("0", "1"):
        for graph in (False, True):
            key = f"onednn={onednn},{'tf.function' if graph else 'eager'}"
            env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, TF_CPP_MIN_LOG_LEVEL="3")
            res = subprocess.run([sys.executable, __file__, "--_tf-setting", "graph" if graph else "eager"],
                                 env=env, capture_output=True, text=True, check=True)
            settings[key] = json.loads(res.stdout)
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="3")
    res = subprocess.run([sys.executable, __file__, "--_tf-keras"], env=env, capture_output=True, text=True,
                         check=True)
    keras_facts = json.loads(res.stdout)
    return {"framework": "tensorflow", "version": keras_facts.pop("tf_version"), "settings": settings, **keras_facts}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--framework", choices=("torch", "tensorflow", "all"), default="all")
    ap.add_argument("--check", action="store_true", help="compare with mnist_cli.frameworks' profiles; exit 1 if not")
    ap.add_argument("--_tf-setting", dest="tf_setting", help=argparse.SUPPRESS)
    ap.add_argument("--_tf-keras", dest="tf_keras", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.tf_setting:
        print(json.dumps(probe_tensorflow_setting(args.tf_setting == "graph")))
        return 0
    if args.tf_keras:
        import tensorflow as tf

        print(json.dumps({"tf_version": tf.__version__, **probe_keras()}))
        return 0
    found = {}
    if args.framework in ("torch", "all"):
        found["torch"] = probe_torch()
    if args.framework in ("tensorflow", "all"):
        found["tensorflow"] = probe_tensorflow()
    print(json.dumps(found, indent=1))
    if args.check:
        from mnist_cli.frameworks import check_probes

        problems = check_probes(found)
        for p in problems:
            print("MISMATCH", p, file=sys.stderr)
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
