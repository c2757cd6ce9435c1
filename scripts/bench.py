"""Benchmark mnist-softmax against a plain NumPy loop, PyTorch CPU and scikit-learn, in one process tree.

    make bench                                   # installs the bench extra + torch==2.13.0, then runs this
    .venv/bin/python scripts/bench.py            # readable table
    .venv/bin/python scripts/bench.py --json     # the table on stderr, one JSON document on stdout
    .venv/bin/python scripts/bench.py --quick    # fewer repeats, no scikit-learn (a few seconds)

    .venv/bin/python scripts/bench.py --contended  # also each figure with one busy process beside it

Every implementation runs under the same thread policy as ours: BLAS on one thread (NumPy loops inside
``mnist_cli.threads.blas_pinned``, PyTorch with ``torch.set_num_threads(1)``, scikit-learn under
threadpoolctl's limit of 1), so the ratios compare algorithms, not thread counts.

The five figures of issue 5, each a ratio measured in this run (medians over interleaved repeats):

1. tutorial   1000 steps of batch 100, fused, float32: ours / a plain NumPy loop (written below) and
              ours / the same loop in PyTorch CPU (autograd, in a worker process of its own), after
              checking all three see the same batches and reach the same test accuracy. Goals: <= 0.40
              (issue 20) and <= 0.25. Printed with a profile of our step, phase by phase, and the floor of a
              bit-identical step (``products_floor``: its gather, conversion and two products alone) / the
              NumPy loop, in the same rounds.
2. full batch one step over all 60k images: ours (``full_batch``) / a plain float32 pass
              (``X @ W``, softmax, ``X.T @ G``); also ours / the memory floor (one timed read of the
              float32 X), with a profile of one pass. Goal: <= 0.6.
3. cli        whole process ``mnist-softmax train --loss fused --quiet``, data cached, interleaved with
              ``python -c pass`` and ``python -c 'import numpy'`` (numpy's own share). Goal: <= 0.30 s.
4. best       ``--preset best``: test accuracy >= 0.926 in <= 1/10 of scikit-learn's
              ``LogisticRegression().fit`` time on the same data (fitted in a fresh process).
5. memory     peak RSS of a process that loads MNIST, trains the tutorial and evaluates, over the
              float32 size of the images it holds. Goal: <= 2. And the whole default ``compare``'s process
              tree, peak PSS (sampled from /proc every 20 ms; Linux), ``--workers 2`` / ``--workers 1``.
              Goal: <= 1.5.

7. compare    ``run_compare`` stacked (the default) / the same runs one by one (``engine="alone"``),
              interleaved: the default compare's 16 float32/float64 runs (goal <= 0.4), its 10 half-precision
              runs (stacked per seed, dtype, precision and profile), the whole default (30 runs; issue 20:
              with the machine's lanes, ``--workers auto``, <= 0.3 of one by one in one process and <= 2.0 s on
              2 idle cores, a wall-clock goal: read it only on an idle machine, the ratio beside it is
              measured in the same run) and the 180-run map of issue 13 (5 lr x 3 input scales x 2 dtypes x 3
              seeds x 2 losses, 1000 steps of 100; goals <= 0.2 in one process, <= 30 s; with the lanes <= 0.12
              and < 7 s, issue 20), and the time to draw that map (goal <= 5 s).
8. half      the tutorial run (1000 x 100, fused) in float16 and bfloat16, pure and mixed precision
              (``mnist_cli.engine.half``, dynamic loss scaling for mixed) / the same run in float32, interleaved,
              with each one's test accuracy. Goal: <= 2.
6. contended  (``--contended``) ours again with one CPU-bound process beside it (started here, bounded,
              stopped after): the tutorial run, ``--preset best``, the default ``compare`` (16 runs),
              the whole process and the full-batch step with 1 and 2 threads, each as contended / idle.
              Goal: <= 1.3 for the tutorial, best and compare.

PyTorch and scikit-learn are optional: a comparison that needs a missing one is skipped with a note.
The machine's load average is printed, with a warning when it is high: rerun before trusting a close call.
The exit code is 1 when implementations that are compared disagree on accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mnist_cli.compare import CompareConfig, run_compare  # noqa: E402
from mnist_cli.data import load_mnist  # noqa: E402
from mnist_cli.engine import rngs, train  # noqa: E402
from mnist_cli.scoring import score  # noqa: E402
from mnist_cli.settings import PRESETS, TrainConfig  # noqa: E402
from mnist_cli.threads import blas_pinned, provenance  # noqa: E402

SHARED_MNIST = Path(os.environ.get("MNIST_SOFTMAX_TEST_DATA") or ROOT.parent / "shared/datasets/mnist")
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
ACC_TOL = 0.002  # implementations on the same batches must agree on test accuracy within this
GOALS = {"compare_vs_alone": 0.4, "map_vs_alone": 0.2, "map_seconds": 30.0, "map_plot_seconds": 5.0,
         "tutorial_vs_numpy": 0.40, "tutorial_vs_torch": 0.25, "full_batch_vs_numpy": 0.6, "cli_seconds": 0.30,
         "best_vs_sklearn": 0.1, "best_accuracy": 0.926, "memory_ratio": 2.0, "contended_vs_idle": 1.3,
         "half_vs_float32": 2.0, "whole_compare_vs_alone": 0.3, "whole_compare_seconds": 2.0,
         "workers_memory_ratio": 1.5, "map_lanes_vs_alone": 0.12, "map_lanes_seconds": 7.0}


# ----------------------------------------------------------------------------- the plain references

def numpy_tutorial(X, labels, steps=1000, B=100, lr=0.5, seed=0):
    """The straightforward NumPy loop: gather by fancy indexing, matmul, softmax, ``X.T @ G``."""
    with blas_pinned():  # the same thread policy as ours
        return _numpy_tutorial(X, labels, steps, B, lr, seed)


def _numpy_tutorial(X, labels, steps, B, lr, seed):
    _, rng = rngs(seed)  # the batch order mnist_cli.engine draws: same seed, same batches
    n = X.shape[0]
    W = np.zeros((X.shape[1], 10), np.float32)
    b = np.zeros(10, np.float32)
    rows = np.arange(B)
    per_epoch = n // B
    losses = []
    for step in range(steps):
        j = step % per_epoch
        if j == 0:
            perm = rng.permutation(n)
        idx = perm[j * B : (j + 1) * B]
        x = X[idx].astype(np.float32) / np.float32(255)  # (B, 784)
        y = labels[idx]
        z = x @ W + b  # (B, 10)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        losses.append(float(np.mean(np.log(s[:, 0]) - z[rows, y])))
        g = e / s  # softmax
        g[rows, y] -= 1
        g /= B
        W -= np.float32(lr) * (x.T @ g)
        b -= np.float32(lr) * g.sum(axis=0)
    return W, b, losses


def torch_tutorial(Xt, yt, steps=1000, B=100, lr=0.5, seed=0):
    """The same loop as a PyTorch user writes it: cross_entropy, backward, an SGD update.
    ``Xt`` (n, 784) uint8 and ``yt`` (n,) int64 are tensors."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)  # the same thread policy as ours and the NumPy loop's
    _, rng = rngs(seed)
    n = Xt.shape[0]
    W = torch.zeros(Xt.shape[1], 10, requires_grad=True)
    b = torch.zeros(10, requires_grad=True)
    per_epoch = n // B
    losses = []
    for step in range(steps):
        j = step % per_epoch
        if j == 0:
            perm = torch.from_numpy(rng.permutation(n))
        idx = perm[j * B : (j + 1) * B]
        x = Xt[idx].float() / 255
        loss = F.cross_entropy(x @ W + b, yt[idx])
        loss.backward()
        with torch.no_grad():
            W -= lr * W.grad
            b -= lr * b.grad
            W.grad.zero_()
            b.grad.zero_()
        losses.append(loss.item())
    return W.detach().numpy(), b.detach().numpy(), losses


def numpy_full_batch_step(X32, labels, W, b, lr):
    """One straightforward full-batch step on the float32 images: forward, softmax, ``X.T @ G``."""
    with blas_pinned():
        return _numpy_full_batch_step(X32, labels, W, b, lr)


def _numpy_full_batch_step(X32, labels, W, b, lr):
    n = X32.shape[0]
    z = X32 @ W + b  # (n, 10)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(s[:, 0]) - z[np.arange(n), labels]))
    g = e / s
    g[np.arange(n), labels] -= 1
    g /= n
    W -= np.float32(lr) * (X32.T @ g)
    b -= np.float32(lr) * g.sum(axis=0)
    return loss


def memory_floor(X32, ones):
    """One read of the float32 images: a memory-bound ``ones @ X`` (the fastest full read we found)."""
    with blas_pinned():
        return ones @ X32


# ----------------------------------------------------------------------------- measurement helpers

def interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Median wall seconds of each callable, run round-robin so that machine noise hits all alike.
    A callable that returns a number reports its own seconds (a run timed in another process)."""
    times = {name: [] for name in fns}
    for r in range(warmup + repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            own = fn()
            seconds = own if isinstance(own, float) else time.perf_counter() - t0
            if r >= warmup:
                times[name].append(seconds)
    return {name: {"median": statistics.median(ts), "min": min(ts), "runs": len(ts)} for name, ts in times.items()}


def accuracy_of(W, b, images, labels):
    logits = (images.astype(np.float32) / np.float32(255)) @ W + b
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def blas_info() -> dict:
    from threadpoolctl import threadpool_info

    info = {"numpy": np.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "env": {k: os.environ[k] for k in BLAS_ENV if k in os.environ},
            "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "provenance": provenance(1)}
    info["threadpools"] = [{k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                                      "threading_layer", "filepath")}
                           for p in threadpool_info()]
    return info


def have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# ----------------------------------------------------------------------------- profiles (where our time goes)

class _Phases:
    """Accumulate wall time per phase of a loop: ``ph.mark("name")`` closes the phase that just ran."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._t
        self._t = now


def _class_rows() -> int:
    """The class rows the fast step computes with here (10, or 12 where the BLAS kernel is faster so)."""
    from mnist_cli.engine.fast import class_rows
    from mnist_cli.threads import blas_kernel

    return class_rows(10, np.float32, blas_kernel())


def profile_tutorial(d, steps=1000, B=100) -> dict:
    """Our step's phases, one by one, on the tutorial's batches (milliseconds per 1000 steps), in the
    engine's layout (its class rows) and thread policy (BLAS on one thread)."""
    with blas_pinned():
        return _profile_tutorial(d, steps, B)


def _profile_tutorial(d, steps, B) -> dict:
    from mnist_cli.engine.fast import _aligned_rows
    from mnist_cli.losses import FusedKernel

    X, labels = d.train_images, d.train_labels.astype(np.intp)
    _, rng = rngs(0)
    r = _class_rows()
    xa = _aligned_rows(B, 785, np.float32)
    xa[:, 784] = 255
    Va = np.zeros((r, 785), np.float32)
    zt, gW = np.empty((1, r, B), np.float32), np.empty((r, 785), np.float32)
    kernel = FusedKernel(10, np.float32, 100.0)
    ph = _Phases()
    for step in range(steps):
        if step % (X.shape[0] // B) == 0:
            perm = rng.permutation(X.shape[0])
            ph.mark("permutation")
        idx = perm[(step % 600) * B : (step % 600 + 1) * B]
        np.copyto(xa[:, :784], X[idx], casting="unsafe")
        ph.mark("gather + uint8->float32")
        np.matmul(Va, xa.T, out=zt[0])
        ph.mark("forward product")
        gap, loss, G = kernel(zt, labels[idx] * B + np.arange(B), np.float32(1e-7))
        ph.mark("fused kernel, 12 NumPy calls incl. NaN accounting")
        np.matmul(G[0], xa, out=gW)
        ph.mark("backward product")
        Va -= gW
        ph.mark("update")
        float(np.minimum.reduce(G, axis=None))  # the kernel's one accounting reduction, done again
        ph.mark("[its NaN accounting alone, timed again]")
    return {k: v * 1e3 for k, v in ph.seconds.items()}


def products_floor(X, steps=1000, B=100) -> None:
    """What no bit-identical tutorial step can skip: the gather and uint8->float32 conversion of its rows and
    its two BLAS products in the fast engine's layout (the same shapes and strides, so the same sums), with
    none of the kernel's or the schedule's other NumPy calls. Its time over the plain loop's is the floor of
    the tutorial ratio for an engine that keeps every result bit-identical."""
    with blas_pinned():
        _products_floor(X, steps, B)


def _products_floor(X, steps, B):
    from mnist_cli.engine.fast import _aligned_rows

    _, rng = rngs(0)
    r, n = _class_rows(), X.shape[0]
    xa = _aligned_rows(B, 785, np.float32)
    xa[:, 784] = 255
    Va = np.zeros((r, 785), np.float32)
    zt, gW = np.empty((r, B), np.float32), np.empty((r, 785), np.float32)
    for step in range(steps):
        j = step % (n // B)
        if j == 0:
            perm = rng.permutation(n)
        np.copyto(xa[:, :784], X[perm[j * B : (j + 1) * B]], casting="unsafe")
        np.matmul(Va, xa.T, out=zt)  # (r, B) forward
        np.matmul(zt, xa, out=gW)  # (r, 785) backward


def profile_full_batch(d) -> dict:
    """One full-batch pass, single thread, phase by phase (milliseconds), in the engine's layout (its
    class rows) and thread policy (BLAS on one thread)."""
    with blas_pinned():
        return _profile_full_batch(d)


def _profile_full_batch(d) -> dict:
    from mnist_cli.engine.fast import _aligned_rows, row_groups
    from mnist_cli.losses import FusedKernel

    X, labels = d.train_images, d.train_labels.astype(np.intp)
    groups = row_groups(X.shape[0])
    r = _class_rows()
    xa = _aligned_rows(max(m * w for _, m, w in groups), 785, np.float32)
    xa[:, 784] = 255
    Va = np.zeros((r, 785), np.float32)
    Va[:10] = np.random.default_rng(0).standard_normal((10, 785)) * 1e-4
    kernel = FusedKernel(10, np.float32, 100.0)
    acc = np.zeros((r, 785), np.float32)
    ph = _Phases()
    for start, m, w in groups:
        rows = m * w
        np.copyto(xa[:rows, :784], X[start : start + rows], casting="unsafe")
        x = xa[:rows].reshape(m, w, 785)
        ph.mark("uint8->float32 (one read of uint8 X)")
        zt = np.matmul(Va, x.transpose(0, 2, 1))
        ph.mark(f"forward products ({w} rows each)")
        p = np.arange(rows)
        gap, loss, G = kernel(zt, labels[start : start + rows] * w + (p // w) * r * w + p % w, np.float32(1e-9))
        ph.mark("fused kernel")
        acc += np.add.reduce(np.matmul(G, x), axis=0)
        ph.mark("backward products")
    return {k: v * 1e3 for k, v in ph.seconds.items()}


# ----------------------------------------------------------------------------- the five figures

def torch_worker(data_dir: Path) -> None:
    """Serve the PyTorch loop from a process of its own (``bench.py --torch-worker``), so that its
    OpenMP threads cannot slow the NumPy loops: one JSON line of set-up facts, then, per line read
    on stdin, one run and its seconds."""
    import torch

    d = load_mnist(data_dir, offline=True)
    X, y = torch.from_numpy(np.array(d.train_images)), torch.from_numpy(d.train_labels.astype(np.int64))
    W, b, losses = torch_tutorial(X, y)
    print(json.dumps({"version": torch.__version__, "threads": torch.get_num_threads(), "losses": losses,
                      "accuracy": accuracy_of(W, b, d.test_images, d.test_labels)}), flush=True)
    for _ in sys.stdin:
        t0 = time.perf_counter()
        torch_tutorial(X, y)
        print(time.perf_counter() - t0, flush=True)


class _TorchWorker:
    """The parent's handle on ``torch_worker``: ``run()`` times one PyTorch run in the worker."""

    def __init__(self, data_dir: Path):
        self.proc = subprocess.Popen([sys.executable, __file__, "--torch-worker", "--data-dir", str(data_dir)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = json.loads(self.proc.stdout.readline())

    def run(self) -> float:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def bench_tutorial(d, data_dir: Path, repeats: int, with_torch: bool = True) -> dict:
    X, y, Xt, yt = d.train_images, d.train_labels, d.test_images, d.test_labels
    out = {"notes": []}
    ours = train(X, y, TrainConfig())
    accs = {"ours": score(ours.model, Xt, yt, 1.0).accuracy}
    W, b, losses = numpy_tutorial(X, y)
    accs["numpy"] = accuracy_of(W, b, Xt, yt)
    np.testing.assert_allclose(losses, ours.losses, rtol=1e-3, atol=1e-5)  # the same batches, the same numbers
    fns = {"ours": lambda: train(X, y, TrainConfig()), "numpy": lambda: numpy_tutorial(X, y),
           "floor": lambda: products_floor(X)}
    worker = _TorchWorker(data_dir) if with_torch and have("torch") else None
    try:
        if worker is not None:
            np.testing.assert_allclose(worker.info.pop("losses"), ours.losses, rtol=1e-3, atol=1e-5)
            accs["torch"] = worker.info.pop("accuracy")
            out["torch"] = worker.info
            fns["torch"] = worker.run  # timed in the worker, interleaved with ours and numpy
        else:
            out["notes"].append("PyTorch skipped (--no-torch)" if have("torch") else
                                "PyTorch not installed: pip install torch==2.13.0 (a CPU build from local disk)")
        out["times"] = interleaved(fns, repeats)
    finally:
        if worker is not None:
            worker.close()
    out["accuracy"] = accs
    out["accuracy_agrees"] = max(accs.values()) - min(accs.values()) <= ACC_TOL
    out["nan_accounting"] = ours.nan.to_dict()
    out["profile_ms"] = profile_tutorial(d)
    t = {k: v["median"] for k, v in out["times"].items()}
    out["ratio_vs_numpy"] = t["ours"] / t["numpy"]
    out["floor_vs_numpy"] = t["floor"] / t["numpy"]  # the bit-identical floor (products_floor)
    out["goal_vs_numpy"] = out["ratio_vs_numpy"] <= GOALS["tutorial_vs_numpy"]
    if "torch" in t:
        out["ratio_vs_torch"] = t["ours"] / t["torch"]
        out["goal_vs_torch"] = out["ratio_vs_torch"] <= GOALS["tutorial_vs_torch"]
    return out


def bench_full_batch(d, repeats: int, steps: int) -> dict:
    X, y = d.train_images, d.train_labels
    labels = y.astype(np.intp)
    X32 = X.astype(np.float32) / np.float32(255)  # the plain pass starts from float32 images, untimed
    ones = np.ones(X.shape[0], np.float32)
    lr = 0.5
    # the same steps from zeros: both must agree before their times mean anything
    ours = train(X, y, TrainConfig(full_batch=True, steps=steps, lr=lr))
    W, b = np.zeros((784, 10), np.float32), np.zeros(10, np.float32)
    plain_losses = [numpy_full_batch_step(X32, labels, W, b, lr) for _ in range(steps)]
    accs = {"ours": score(ours.model, d.test_images, d.test_labels, 1.0).accuracy,
            "numpy": accuracy_of(W, b, d.test_images, d.test_labels)}
    np.testing.assert_allclose(ours.losses, plain_losses, rtol=1e-4)
    W, b = np.zeros((784, 10), np.float32), np.zeros(10, np.float32)
    times = interleaved({
        "ours": lambda: train(X, y, TrainConfig(full_batch=True, steps=steps, lr=lr)),
        "ours_2_threads": lambda: train(X, y, TrainConfig(full_batch=True, steps=steps, lr=lr, threads=2)),
        "numpy": lambda: [numpy_full_batch_step(X32, labels, W, b, lr) for _ in range(steps)],
        "floor": lambda: [memory_floor(X32, ones) for _ in range(steps)],
    }, repeats)
    per_step = {k: {kk: (vv / steps if kk != "runs" else vv) for kk, vv in v.items()} for k, v in times.items()}
    t = {k: v["median"] for k, v in per_step.items()}
    return {
        "profile_ms_single_thread": profile_full_batch(d),
        "ratio_2_threads_vs_1": t["ours_2_threads"] / t["ours"],
        "steps_per_run": steps,
        "accuracy": accs,
        "accuracy_agrees": abs(accs["ours"] - accs["numpy"]) <= ACC_TOL,
        "times_per_step": per_step,
        "ratio_vs_numpy": t["ours"] / t["numpy"],
        "goal_vs_numpy": t["ours"] / t["numpy"] <= GOALS["full_batch_vs_numpy"],
        "ratio_vs_floor": t["ours"] / t["floor"],
        "floor_bytes": X32.nbytes,
        "ours_reads_bytes": X.nbytes,
    }


_SKLEARN_PROBE = """
import json, sys, time, warnings
import numpy as np
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from mnist_cli.data import load_mnist
d = load_mnist(sys.argv[1], offline=True)
X, Xt = d.train_images / 255.0, d.test_images / 255.0  # what a scikit-learn user writes: float64 in [0, 1]
clf = LogisticRegression()  # the defaults: lbfgs, C=1, max_iter=100
from threadpoolctl import threadpool_limits
with threadpool_limits(1), warnings.catch_warnings(record=True) as caught:  # the same thread policy as ours
    warnings.simplefilter("always", ConvergenceWarning)
    t0 = time.perf_counter()
    clf.fit(X, d.train_labels)
    fit = time.perf_counter() - t0
print(json.dumps({"version": sklearn.__version__, "fit_seconds": fit, "accuracy": float(clf.score(Xt, d.test_labels)),
                  "n_iter": int(np.max(clf.n_iter_)),
                  "converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught),
                  "estimator": "LogisticRegression() defaults (lbfgs, C=1, max_iter=100), X/255 float64"}))
"""


def _sklearn_fit(data_dir: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", _SKLEARN_PROBE, str(data_dir)], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    return json.loads(proc.stdout)


def bench_best(d, data_dir: Path, repeats: int, with_sklearn: bool) -> dict:
    X, y, Xt, yt = d.train_images, d.train_labels, d.test_images, d.test_labels
    config = TrainConfig(**PRESETS["best"])
    out = {"preset": PRESETS["best"], "notes": []}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = train(X, y, config)
        times.append(time.perf_counter() - t0)
    out["ours"] = {"median": statistics.median(times), "min": min(times), "runs": len(times),
                   "accuracy": score(result.model, Xt, yt, 1.0).accuracy, "steps": result.steps}
    out["goal_accuracy"] = out["ours"]["accuracy"] >= GOALS["best_accuracy"]
    if not with_sklearn:
        out["notes"].append("scikit-learn skipped (--quick)" if have("sklearn") else
                            "scikit-learn not installed: pip install scikit-learn")
        return out
    out["sklearn"] = sk = _sklearn_fit(data_dir)  # in a fresh process: no PyTorch threads around it
    fit = sk["fit_seconds"]
    out["ratio_vs_sklearn"] = out["ours"]["median"] / fit
    out["goal_vs_sklearn"] = out["ratio_vs_sklearn"] <= GOALS["best_vs_sklearn"]
    return out


# Peak RSS from /proc/self/status VmHWM: ru_maxrss would carry over the parent's peak through fork + exec.
_MEMORY_PROBE = """
import json, resource, sys
def peak():
    try:
        with open("/proc/self/status") as fh:
            return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmHWM:"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
from mnist_cli.data import load_mnist
from mnist_cli.scoring import score
from mnist_cli.engine import TrainConfig, train
base = peak()
d = load_mnist(sys.argv[1], offline=True)
r = train(d.train_images, d.train_labels, TrainConfig())
acc = score(r.model, d.test_images, d.test_labels, 1.0).accuracy
held = sum(a.nbytes for a in (d.train_images, d.train_labels, d.test_images, d.test_labels))
f32 = (d.train_images.size + d.test_images.size) * 4
print(json.dumps({"peak_rss": peak(), "rss_after_imports": base, "data_bytes": held, "float32_bytes": f32,
                  "accuracy": acc}))
"""


def bench_memory(data_dir: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(data_dir)], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    m = json.loads(proc.stdout)
    m["ratio"] = m["peak_rss"] / m["float32_bytes"]
    m["ratio_above_imports"] = (m["peak_rss"] - m["rss_after_imports"]) / m["float32_bytes"]
    m["goal"] = m["ratio"] <= GOALS["memory_ratio"]
    return m


def _tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes summed over ``pid`` and its children: PSS shares each shared page (the dataset in
    shared memory, the libraries) among the processes mapping it, so its sum is the tree's real footprint."""
    rss = pss = 0
    pids = [pid] + [int(t.parent.name) for t in Path("/proc").glob("[0-9]*/stat")
                    if _parent_of(t) == pid]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith(("Rss:", "Pss:")):
                    value = int(line.split()[1]) * 1024
                    rss, pss = (rss + value, pss) if line.startswith("Rss:") else (rss, pss + value)
        except OSError:  # ended meanwhile
            pass
    return rss, pss


def _parent_of(stat: Path) -> int:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def bench_compare_memory(data_dir: Path) -> dict:
    """Peak memory of the whole process tree of ``mnist-softmax compare --workers 1`` and ``--workers 2`` (the
    default compare, data cached), sampled every 20 ms from /proc (Linux)."""
    if not Path("/proc/self/smaps_rollup").exists():
        return {}
    cli = Path(sys.executable).with_name("mnist-softmax")
    env = {**os.environ, "MNIST_SOFTMAX_DATA_DIR": str(data_dir), "MNIST_SOFTMAX_OFFLINE": "1"}
    out = {}
    for workers in (1, 2):
        proc = subprocess.Popen([str(cli), "compare", "--workers", str(workers), "--quiet"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak_rss = peak_pss = 0
        while proc.poll() is None:
            rss, pss = _tree_memory(proc.pid)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            time.sleep(0.02)
        out[f"workers_{workers}"] = {"peak_rss": peak_rss, "peak_pss": peak_pss}
    one, two = out["workers_1"], out["workers_2"]
    out["ratio_pss"], out["ratio_rss"] = two["peak_pss"] / one["peak_pss"], two["peak_rss"] / one["peak_rss"]
    out["goal"] = out["ratio_pss"] <= GOALS["workers_memory_ratio"]
    return out


def _import_ms(module: str) -> float:
    """Cumulative import time of ``module`` in a fresh interpreter (``python -X importtime``)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True,
                          text=True, cwd=ROOT)
    for line in proc.stderr.splitlines()[::-1]:
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1]) / 1000
    return float("nan")


def bench_cli(data_dir: Path, repeats: int) -> dict:
    cli = Path(sys.executable).with_name("mnist-softmax")
    out = {"notes": []}
    out["import_ms"] = {m: _import_ms(m) for m in ("numpy", "mnist_cli.engine", "mnist_cli.cli")}
    heavy = subprocess.run([sys.executable, "-c", "import sys, mnist_cli.cli, mnist_cli.engine; "
                            "print(','.join(m for m in ('requests', 'tqdm', 'matplotlib', 'scipy', 'torch') "
                            "if m in sys.modules))"], capture_output=True, text=True, cwd=ROOT)
    out["heavy_modules_at_import"] = [m for m in heavy.stdout.strip().split(",") if m]
    env = {**os.environ, "MNIST_SOFTMAX_DATA_DIR": str(data_dir), "MNIST_SOFTMAX_OFFLINE": "1"}
    probe = subprocess.run([str(cli), "train", "--help"], capture_output=True, text=True, env=env)
    if not cli.exists() or probe.returncode != 0:
        out["notes"].append("`mnist-softmax train` not available: whole-process time not measured")
        return out
    # as an installed package runs: pip compiles a wheel's .pyc, an editable install (and PYTHONDONTWRITEBYTECODE=1)
    # does not, which costs ~60 ms of compiling at every start here
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "mnist_cli")], check=True)
    cmd = [str(cli), "train", "--loss", "fused", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)  # also warms the data cache
    if proc.returncode != 0:
        out["notes"].append(f"`{' '.join(cmd[1:])}` exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
        return out
    run = lambda args: (lambda: subprocess.run(args, env=env, check=True, capture_output=True) and None)
    times = interleaved({"train": run(cmd), "python -c pass": run([sys.executable, "-c", "pass"]),
                         "python -c 'import numpy'": run([sys.executable, "-c", "import numpy"])}, repeats)
    out["command"] = "mnist-softmax train --loss fused --quiet"
    out["wall"] = times.pop("train")
    out["python_startup"] = times["python -c pass"]["median"]
    out["numpy_startup"] = times["python -c 'import numpy'"]["median"]  # numpy's own import, in the same rounds
    out["goal"] = out["wall"]["median"] <= GOALS["cli_seconds"]
    return out


# ----------------------------------------------------------------------------- contended: one busy neighbour

_SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


class Neighbour:
    """One CPU-bound process beside the bench while the ``with`` body runs: what every CI runner and
    laptop has. Bounded (it exits by itself after ``seconds``) and stopped on exit."""

    def __init__(self, seconds: float = 600.0):
        self.seconds = seconds
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", _SPIN.format(seconds=self.seconds)])
        time.sleep(0.2)  # let it get going
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def _process_seconds(data_dir: Path, args: list[str]) -> float:
    """Wall seconds of one whole ``mnist-softmax`` process (data cached)."""
    cli = Path(sys.executable).with_name("mnist-softmax")
    env = {**os.environ, "MNIST_SOFTMAX_DATA_DIR": str(data_dir), "MNIST_SOFTMAX_OFFLINE": "1"}
    t0 = time.perf_counter()
    subprocess.run([str(cli), *args, "--quiet"], check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def bench_contended(d, data_dir: Path, repeats: int) -> dict:
    """Each of our figures idle and with one busy process beside it, rounds alternating (idle, busy,
    idle, ...) so that drifting machine noise hits both alike; contended / idle per figure."""
    X, y, Xt, yt = d.train_images, d.train_labels, d.test_images, d.test_labels
    fns = {
        "tutorial run (1000 x 100)": lambda: train(X, y, TrainConfig()),
        "--preset best": lambda: train(X, y, TrainConfig(**PRESETS["best"])),
        "default compare (16 runs)": lambda: run_compare(X, y, Xt, yt, CompareConfig(**DEFAULT_FULL, workers=1)),
        "whole default compare, --workers auto": lambda: run_compare(X, y, Xt, yt, CompareConfig()),
        "whole process train --loss fused": lambda: _process_seconds(data_dir, ["train", "--loss", "fused"]),
        "full batch x3, --threads 1": lambda: train(X, y, TrainConfig(full_batch=True, steps=3)),
        "full batch x3, --threads 2": lambda: train(X, y, TrainConfig(full_batch=True, steps=3, threads=2)),
    }
    idle, busy = {k: [] for k in fns}, {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for times, neighbour in ((idle, None), (busy, Neighbour())):
            if neighbour is not None:
                neighbour.__enter__()
            try:
                for name, fn in fns.items():
                    t0 = time.perf_counter()
                    own = fn()
                    times[name].append(own if isinstance(own, float) else time.perf_counter() - t0)
            finally:
                if neighbour is not None:
                    neighbour.__exit__(None, None, None)
    out = {}
    for name in fns:
        i, b = statistics.median(idle[name]), statistics.median(busy[name])
        out[name] = {"idle": i, "contended": b, "ratio": b / i}
    for name in ("tutorial run (1000 x 100)", "--preset best", "default compare (16 runs)"):
        out[name]["goal"] = out[name]["ratio"] <= GOALS["contended_vs_idle"]
    return {"figures": out, "repeats": repeats}


# ----------------------------------------------------------------------------- compare, stacked

#: The default compare's float32/float64 scenarios (8 cells x 2 losses = 16 runs: the goal of issue 13). Its
#: half-precision scenarios (5 cells x 2 losses) are stacked per seed, dtype, precision and profile; the whole
#: default (issue 20's goal) is timed too.
DEFAULT_FULL = dict(lrs=(0.5, 5.0), input_scales=(1.0, 255.0), dtypes=("float32", "float64"))
#: The default compare's half-precision scenarios (mnist_cli.scenarios.SCENARIOS).
DEFAULT_HALF = ("f16", "f16-raw-pixels", "f16-mixed", "f16-mixed-raw", "bf16-lr-5")

#: The dense map of issue 13: 5 lr x 3 input scales x 2 dtypes x 3 seeds x 2 losses = 180 runs.
MAP = dict(lrs=(0.1, 0.3162, 1.0, 3.162, 10.0), input_scales=(1.0, 16.0, 255.0), dtypes=("float32", "float64"),
           seeds=(0, 1, 2))


def _lanes(config) -> int:
    """The lanes ``compare`` gives ``config`` (its ``workers``)."""
    from mnist_cli.compare_workers import lanes, run_groups

    jobs = [(cell, loss) for cell in config.cells() for loss in config.losses]
    return lanes(config, jobs, run_groups(config, jobs))


def bench_compare(d, repeats: int, map_repeats: int) -> dict:
    """``run_compare`` stacked (the default engine) against the same runs one by one (``engine="alone"``,
    ``train`` + ``evaluate_model`` per run), interleaved: the default compare (16 runs) and the 180-run
    map (trained and evaluated, then drawn: the drawing is timed apart)."""
    from dataclasses import replace

    from mnist_cli.compare import add_plot
    from mnist_cli.compare_document import to_document

    X, y, Xt, yt = d.train_images, d.train_labels, d.test_images, d.test_labels
    out = {}
    whole = CompareConfig(workers=1)  # the ratios are single-process: the lanes are timed apart below
    half = CompareConfig(scenarios=DEFAULT_HALF, workers=1)
    for name, config, n in (("default compare (16 runs)", CompareConfig(**DEFAULT_FULL, workers=1), repeats),
                            (f"its half-precision runs ({len(half.cells()) * len(half.losses)} runs)", half, repeats),
                            (f"whole default compare ({len(whole.cells()) * len(whole.losses)} runs)", whole, repeats),
                            ("180-run map (1000 steps of 100)", CompareConfig(**MAP, workers=1), map_repeats)):
        fns = {"stack": lambda c=config: run_compare(X, y, Xt, yt, c),
               "alone": lambda c=config: run_compare(X, y, Xt, yt, replace(c, engine="alone"))}
        if name.startswith("180"):  # and with the machine's lanes (--workers auto)
            fns["lanes"] = lambda c=config: run_compare(X, y, Xt, yt, replace(c, workers="auto"))
        times = interleaved(fns, n, warmup=0)
        stack, alone = times["stack"]["median"], times["alone"]["median"]
        out[name] = {"stack": stack, "alone": alone, "ratio": stack / alone}
        if "lanes" in times:
            out[name].update(lanes_seconds=times["lanes"]["median"], lanes_ratio=times["lanes"]["median"] / alone)
    w = next(f for name, f in out.items() if name.startswith("whole"))
    lanes = {"one": lambda: run_compare(X, y, Xt, yt, whole),
             "auto": lambda: run_compare(X, y, Xt, yt, replace(whole, workers="auto"))}
    times = interleaved(lanes, repeats, warmup=0)  # the default (--workers auto) against one process
    w.update(one_process=times["one"]["median"], auto=times["auto"]["median"], lanes=_lanes(replace(whole, workers="auto")))
    m = out["180-run map (1000 steps of 100)"]
    with tempfile.TemporaryDirectory() as tmp:
        result = run_compare(X, y, Xt, yt, CompareConfig(**MAP))
        doc = to_document(result)
        add_plot(doc, result, Path(tmp) / "map.png")
    m["plot_seconds"] = doc["plot_seconds"]
    out["default compare (16 runs)"]["goal"] = out["default compare (16 runs)"]["ratio"] <= GOALS["compare_vs_alone"]
    m["goal"] = m["ratio"] <= GOALS["map_vs_alone"]
    w["lanes_ratio"] = w["auto"] / w["alone"]  # the machine's lanes against one by one in one process (issue 20)
    w["goal"] = w["lanes_ratio"] <= GOALS["whole_compare_vs_alone"]
    w["goal_seconds"] = w["auto"] <= GOALS["whole_compare_seconds"]
    m["goal_seconds"] = m["stack"] <= GOALS["map_seconds"]
    m["goal_plot"] = m["plot_seconds"] <= GOALS["map_plot_seconds"]
    m["lanes"] = _lanes(CompareConfig(**MAP))
    m["goal_lanes"] = m["lanes_ratio"] <= GOALS["map_lanes_vs_alone"]
    m["goal_lanes_seconds"] = m["lanes_seconds"] <= GOALS["map_lanes_seconds"]
    return out


# ----------------------------------------------------------------------------- report

# ----------------------------------------------------------------------------- half precision

HALF_RUNS = {"float16 pure": dict(dtype="float16"), "bfloat16 pure": dict(dtype="bfloat16"),
             "float16 mixed (dynamic loss scale)": dict(dtype="float16", precision="mixed", loss_scale="dynamic"),
             "bfloat16 mixed": dict(dtype="bfloat16", precision="mixed")}


def bench_half(d, repeats: int) -> dict:
    """The tutorial run in each half precision / the float32 run (the default engine), interleaved."""
    X, y, Xt, yt = d.train_images, d.train_labels, d.test_images, d.test_labels
    configs = {"float32": TrainConfig(), **{name: TrainConfig(**kw) for name, kw in HALF_RUNS.items()}}
    fns = {name: (lambda c=c: train(X, y, c)) for name, c in configs.items()}
    times = interleaved(fns, repeats)
    out = {"times": times, "runs": {}}
    for name, config in configs.items():
        r = train(X, y, config)
        ratio = times[name]["median"] / times["float32"]["median"]
        out["runs"][name] = {"ratio": ratio, "goal": ratio <= GOALS["half_vs_float32"],
                             "accuracy": score(r.model, Xt, yt, 1.0).accuracy,
                             "nonfinite_steps": r.nan.steps_nonfinite_grad, "skipped": r.nan.steps_skipped}
    return out


def _goal(ok) -> str:
    return "n/a" if ok is None else ("MET" if ok else "MISSED")


def _row(label: str, seconds: float | None = None, ratio: float | None = None, goal: str = "", tail: str = "") -> str:
    """One line of the table: label, time, ratio, goal, result."""
    time_s = "" if seconds is None else (f"{seconds * 1e3:8.1f} ms" if seconds < 10 else f"{seconds:8.2f} s ")
    ratio_s = "" if ratio is None else f"{ratio:8.3f}"
    return f"   {label:44s} {time_s:>12s} {ratio_s:>8s} {goal:>9s}  {tail}".rstrip()


def _profile(ms: dict, per: str) -> str:
    return f"   profile ({per}): " + ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items())


def table(doc: dict) -> str:
    blas = doc["blas"]
    pools = blas["threadpools"] if isinstance(blas["threadpools"], list) else []
    kernels = ", ".join(f"{p['internal_api']} {p.get('version')} {p.get('architecture') or ''} x{p['num_threads']}"
                        for p in pools if p["internal_api"] != "openmp") or blas["threadpools"]
    lines = [f"mnist-softmax bench  (numpy {blas['numpy']}, {blas['cpu_count']} CPUs, BLAS: {kernels})"]
    add = lines.append
    start, end = blas.get("load_average_at_start"), doc.get("load_average_at_end")
    if start and end:
        add(f"  load average (1 min) {start[0]:.2f} at the start, {end[0]:.2f} at the end: other work on the machine "
            "slows every figure")
    if start and start[0] > 0.5 * (blas["cpu_count"] or 1):
        add(f"  WARNING: load average {start[0]:.2f} on {blas['cpu_count']} CPUs at the start: other work is running; "
            "idle figures are not idle, rerun on a quiet machine before trusting a close call")
    if blas["env"]:
        add(f"  environment: {blas['env']}")
    add(f"\n   {'figure':44s} {'median':>12s} {'ratio':>8s} {'goal':>9s}  result")
    if t := doc.get("tutorial"):
        tt = t["times"]
        add("1. tutorial: 1000 steps x 100, fused, float32")
        add(_row("ours (incl. NaN accounting)", tt["ours"]["median"]))
        add(_row("plain NumPy loop", tt["numpy"]["median"], t["ratio_vs_numpy"], f"<= {GOALS['tutorial_vs_numpy']}",
                 _goal(t["goal_vs_numpy"]) + " (ours / this)"))
        if "floor" in tt:
            add(_row("floor: gather + convert + the 2 products alone", tt["floor"]["median"], t["floor_vs_numpy"], "",
                     "floor / NumPy loop: no bit-identical step is faster"))
        if "torch" in tt:
            add(_row(f"PyTorch {t['torch']['version']} (autograd, own process)", tt["torch"]["median"], t["ratio_vs_torch"],
                     "<= 0.25", _goal(t["goal_vs_torch"])))
        add("   test accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in t["accuracy"].items())
            + ("  (agree)" if t["accuracy_agrees"] else "  (DISAGREE: times not comparable)"))
        add(_profile(t["profile_ms"], "ours, per 1000 steps"))
        for note in t["notes"]:
            add(f"   note: {note}")
    if f := doc.get("full_batch"):
        ft = f["times_per_step"]
        add("2. full batch: one step over 60000 images, float32")
        add(_row("ours (row groups from uint8, --threads 1, the default)", ft["ours"]["median"]))
        add(_row("ours, --threads 2", ft["ours_2_threads"]["median"], f["ratio_2_threads_vs_1"], "", "2 threads / 1"))
        add(_row("plain NumPy pass (float32 X)", ft["numpy"]["median"], f["ratio_vs_numpy"], "<= 0.6",
                 _goal(f["goal_vs_numpy"])))
        add(_row("memory floor: one read of float32 X", ft["floor"]["median"], f["ratio_vs_floor"], "", "ours / floor"))
        add("   test accuracy after the same steps: " + ", ".join(f"{k} {v:.4f}" for k, v in f["accuracy"].items()))
        add(_profile(f["profile_ms_single_thread"], "ours, one thread, one pass"))
    if c := doc.get("cli"):
        add("3. whole process: mnist-softmax train --loss fused --quiet (data cached)")
        if "wall" in c:
            add(_row("wall", c["wall"]["median"], None, f"<= {GOALS['cli_seconds']} s",
                     f"{_goal(c['goal'])} (fastest {c['wall']['min']:.2f} s)"))
            add(_row("python -c pass", c["python_startup"]))
            add(_row("python -c 'import numpy'", c["numpy_startup"], None, "",
                     f"the process above less this: {c['wall']['median'] - c['numpy_startup']:.3f} s"))
        add("   import: " + ", ".join(f"{k} {v:.0f} ms" for k, v in c["import_ms"].items())
            + f"; heavy modules at import: {', '.join(c['heavy_modules_at_import']) or 'none'}")
        for note in c["notes"]:
            add(f"   note: {note}")
    if bst := doc.get("best"):
        o = bst["ours"]
        add(f"4. --preset best: {bst['preset']}")
        add(_row("ours", o["median"], None, ">= 0.926", f"test accuracy {o['accuracy']:.4f} {_goal(bst['goal_accuracy'])}"))
        if s := bst.get("sklearn"):
            add(_row("scikit-learn LogisticRegression().fit", s["fit_seconds"], bst["ratio_vs_sklearn"], "<= 0.1",
                     f"{_goal(bst['goal_vs_sklearn'])}; its accuracy {s['accuracy']:.4f}, {s['n_iter']} iterations"
                     f"{'' if s['converged'] else ', not converged'}"))
        for note in bst["notes"]:
            add(f"   note: {note}")
    if cmp := doc.get("compare"):
        add("7. compare stacked (runs sharing a seed and dtype as one) / the same runs one by one")
        for name, f in cmp.items():
            goal = {"default": "<= 0.4", "180": "<= 0.2"}.get(name.split(" ")[0], "")
            add(_row(f"{name}, stacked", f["stack"], f["ratio"], goal,
                     (f"{_goal(f['goal'])}; " if goal else "") + f"one by one {f['alone']:.2f} s"))
            if "goal_seconds" in f and not name.startswith("180"):
                add(_row("whole default compare, one process", f["one_process"], None, "", "interleaved with the next"))
                add(_row(f"whole default compare, --workers auto ({f['lanes']} lanes)", f["auto"], f["lanes_ratio"],
                         "<= 0.3", f"{_goal(f['goal'])} (ratio: / one by one in one process; / one process stacked "
                         f"{f['auto'] / f['one_process']:.3f})"))
                add(_row("   ... in seconds", f["auto"], None, "<= 2.0 s",
                         f"{_goal(f['goal_seconds'])} (a wall-clock goal: idle machine only; load average at the end "
                         f"{', '.join(f'{x:.1f}' for x in doc.get('load_average_at_end') or ())})"))
            if "plot_seconds" in f:
                add(_row("180-run map, training + evaluation", f["stack"], None, "<= 30 s", _goal(f["goal_seconds"])))
                add(_row(f"180-run map, --workers auto ({f['lanes']} lanes)", f["lanes_seconds"], f["lanes_ratio"],
                         "<= 0.12", f"{_goal(f['goal_lanes'])} (ratio: / one by one in one process); < 7 s: "
                                    f"{_goal(f['goal_lanes_seconds'])}"))
                add(_row("180-run map, drawing the PNG", f["plot_seconds"], None, "<= 5 s", _goal(f["goal_plot"])))
    if h := doc.get("half"):
        add("8. half precision: the tutorial run (1000 x 100, fused) / the same run in float32")
        add(_row("float32 (the default engine)", h["times"]["float32"]["median"], None, "",
                 f"test accuracy {h['runs']['float32']['accuracy']:.4f}"))
        for name, f in h["runs"].items():
            if name != "float32":
                add(_row(name, h["times"][name]["median"], f["ratio"], "<= 2", f"{_goal(f['goal'])}; test accuracy "
                         f"{f['accuracy']:.4f}" + (f", {f['skipped']} updates skipped" if f["skipped"] else "")))
    if c := doc.get("contended"):
        add(f"6. one busy process beside us (idle / contended medians of {c['repeats']} alternating rounds)")
        add(f"   {'figure':44s} {'idle':>12s} {'contended':>12s} {'ratio':>8s} {'goal':>9s}  result")
        for name, f in c["figures"].items():
            goal = "<= 1.3" if "goal" in f else ""
            add(f"   {name:44s} {f['idle'] * 1e3:9.1f} ms {f['contended'] * 1e3:9.1f} ms {f['ratio']:8.3f} {goal:>9s}  "
                f"{_goal(f.get('goal')) if goal else ''}".rstrip())
    if m := doc.get("memory"):
        add("5. peak memory: load + tutorial + evaluate, in a fresh process")
        add(_row(f"peak RSS {m['peak_rss'] / 2**20:.0f} MB / float32 images {m['float32_bytes'] / 2**20:.0f} MB",
                 None, m["ratio"], "<= 2", f"{_goal(m['goal'])} (the interpreter and imports: "
                 f"{m['rss_after_imports'] / 2**20:.0f} MB)"))
    if c := doc.get("compare_memory"):
        add("   the whole default compare's process tree, peak (sampled every 20 ms), --workers 2 / --workers 1")
        one, two = c["workers_1"], c["workers_2"]
        add(_row(f"PSS {two['peak_pss'] / 2**20:.0f} MB / {one['peak_pss'] / 2**20:.0f} MB", None, c["ratio_pss"],
                 "<= 1.5", f"{_goal(c['goal'])} (RSS, shared pages counted in each process: "
                 f"{two['peak_rss'] / 2**20:.0f} / {one['peak_rss'] / 2**20:.0f} MB = {c['ratio_rss']:.2f})"))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, skip scikit-learn")
    ap.add_argument("--json", action="store_true", help="one JSON document on stdout (the table goes to stderr)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per figure (default 9, quick 3)")
    ap.add_argument("--data-dir", type=Path, default=None, help="MNIST data directory (default: a temporary one)")
    ap.add_argument("--only", default="tutorial,full_batch,cli,best,memory,compare,half",
                    help="comma-separated figures to run (also: contended)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    ap.add_argument("--contended", action="store_true",
                    help="also run our figures with one busy process beside them (contended / idle)")
    ap.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 9)
    if args.torch_worker:
        torch_worker(args.data_dir)
        return 0
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="mnist-bench-") as tmp:
        data_dir = args.data_dir or Path(tmp)
        mirrors = [str(SHARED_MNIST)] if SHARED_MNIST.is_dir() else []
        load_mnist(data_dir, mirrors=mirrors)  # fetch / verify / cache once, so every load below is cached
        d = load_mnist(data_dir, offline=True)
        doc = {"blas": blas_info(), "quick": args.quick, "repeats": repeats, "goals": GOALS}
        # subprocess figures first, while this process is small
        if "memory" in only:
            doc["memory"] = bench_memory(data_dir)
            doc["compare_memory"] = bench_compare_memory(data_dir)
        if "cli" in only:
            doc["cli"] = bench_cli(data_dir, repeats)
        if "best" in only:
            doc["best"] = bench_best(d, data_dir, 1 if args.quick else 3, with_sklearn=not args.quick and have("sklearn"))
        if "full_batch" in only:
            doc["full_batch"] = bench_full_batch(d, repeats, steps=3 if args.quick else 10)
        if "tutorial" in only:
            doc["tutorial"] = bench_tutorial(d, data_dir, repeats, with_torch=not args.no_torch)
        if "compare" in only:
            doc["compare"] = bench_compare(d, 1 if args.quick else 3, 1)
        if "half" in only:
            doc["half"] = bench_half(d, repeats)
        if args.contended or "contended" in only:
            doc["contended"] = bench_contended(d, data_dir, 2 if args.quick else 3)
    doc["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    doc = {k: doc[k] for k in ("blas", "quick", "repeats", "goals", "tutorial", "full_batch", "cli", "best", "memory",
                               "compare_memory", "compare", "half", "contended", "load_average_at_end")
           if k in doc}  # the issues' order
    report = table(doc)
    print(report, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(doc, indent=2, default=float))
    agree = all(doc[k]["accuracy_agrees"] for k in ("tutorial", "full_batch") if k in doc)
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
