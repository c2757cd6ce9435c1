"""Cross-check the losses and the trainer against independent PyTorch and TensorFlow implementations (issues 12, 19).

    make crosscheck                         # installs torch==2.13.0 and tensorflow-cpu==2.21.0, then runs this
    .venv/bin/python scripts/crosscheck.py [--level all|loss|scenarios|training] [--framework all|torch|tensorflow]

**Profiles (issue 19).** The loss level runs once per framework, ours computing as that framework's profile
(``--framework``, :mod:`mnist_cli.frameworks`): against PyTorch with the ``torch`` profile (half softmax in
float32 rounded once, float16 ``nll_loss`` summed in float16), against TensorFlow eager (``GradientTape``,
oneDNN off) with the ``tensorflow`` profile (FTZ/DAZ, ``e * (1/s)``, ``grad * reciprocal(x)``, the
labels-form fused kernel), at batch sizes 1, 7, 100 and 1000. Measured: 0 pattern differences and 0 explained
calls against both; half probabilities bit-identical to PyTorch's in 100% of entries (TensorFlow's: 94.8%
float16, 96.2% bfloat16). ``--strict`` makes an explained row a failure. ``--level scenarios`` runs the framework
scenarios of ``compare`` (``lr-2-torch``, ``lr-2-tensorflow``) in each framework's own SGD loop, fed our init and
batches: the first non-finite step must be ours. The training level runs against both (below, *Profiles*).

Exit status: 0 when everything agrees, 1 on any disagreement (a table row marked FAIL), 3 when PyTorch is
not installed, 4 when MNIST is not available for the training level (nothing, or only the losses, checked).
MNIST is read from the data directory (``$MNIST_SOFTMAX_DATA_DIR`` or the user cache), fetched from
``../shared/datasets/mnist`` when that is there. Measured on the shared 2-core machine under a load of ~9 (wall;
about 3x an idle machine's): loss level 27 s (torch) and 429 s (TensorFlow), scenarios 6 s, training level 305 s
(torch, 181 runs) and 127 s (TensorFlow, 44 runs); 894 s in all, 4.6 min of CPU.

**Loss level.** For float16, bfloat16, float32 and float64, one example at a time (n = 1) and in batches
of 100, the ``(loss, dL/dz)`` of :data:`mnist_cli.losses.LOSSES` is compared with PyTorch autograd through
the same graphs written with torch ops: ``mean(-sum(y_ * log(softmax(z))))``, the same with
``clamp(p, 1e-10, 1)``, and ``cross_entropy(z, y)``. Rows: random logits (N(0, 1) times 1, 10, 100, 1e3, 1e4,
rounded to the dtype) and hand-made extremes: gaps within 3% of each dtype's limits (underflow, underflow
with 9 ties, the gradient's 1/p overflow at n = 1 and n = 100, with 9 ties and one), with the target at
the low logit, at the max, tied, shifted by 100; logits of +-inf and NaN, all equal, near the largest
float, and a spread max - min beyond the float range.

*Pattern.* NaN / +inf / -inf / finite of every loss and gradient entry must be identical.

*Values.* Finite values must agree within a bound in units of ``eps`` (the dtype's machine epsilon, 2 ulp
at 1), derived from the error bounds of the operations on both sides, not fitted:

- probabilities, relative: ``B_p = 15`` in float32/float64: NumPy's SIMD exp is within 2.52 ulp (the
  maximum its source states, measured over all float32; 2.4 measured here), Sleef's within 1, a sum of 10
  positive terms within 9 half-ulps on each side, ``e / s`` (ours) and ``e * (1/s)`` (PyTorch) 1 half-ulp
  each; ``z - max`` is the same IEEE subtraction on both sides. In float16/bfloat16 ours rounds each op:
  ``z - max`` with an absolute error up to ``d = eps |z - max| / 2``, which exp turns into a factor
  ``e^d`` (not small in bfloat16, whose spacing at 65 is 0.5), then exp, the float32-accumulated sum and
  ``/`` half an eps each; PyTorch's CPU kernel computes the whole softmax in float32 and rounds once (half
  an eps; float32's own errors are ~1e-4 eps): ``B_p = (e^d - 1) / eps + 2.5 e^d``. Plus 2 smallest
  subnormals absolute, on each side, where a result is subnormal.
- losses, absolute: ``eps * (B_log[target] + 6 max(|L|, 1))``, where ``B_log = B_p`` in float32/float64
  and ``2.5 + |z - max| / 2`` in float16/bfloat16 (a shift error d moves ``log p`` by d exactly); the 6
  is for log (NumPy's float32 SIMD log within 3.83 ulp by its source, Sleef's within 1) and the last
  roundings (the row sum of one non-zero term is exact); plus ``2 * subnormal / p[target]`` where p is
  subnormal. A batch mean adds ``(n - 1) eps |L|`` (a sum of n positive terms on each side) in
  float32/float64 and ``eps |L|`` in float16/bfloat16 (both sides sum in float32 and round once), plus
  ``(n - 1) eps |L| / 2`` for fused, where PyTorch's ``nll_loss`` sums the losses in the dtype.
- gradients, absolute in units of ``eps * max(|g|, 1/n)``: 23 in float32/float64, 11 in float16/bfloat16.
  1/n is the gradient's scale: ``dL/dz = (-1/n) (p - onehot)`` up to rounding; the relative error of a
  p enters multiplied by that p (``p_t * (g_t - sum) = 1/n (1 - p_t)`` whatever p_t's error: ``g_t * p_t``
  cancels it), so the gap term of low precision is at most ``max_x x e^-x / 2 < 0.2``.

*Where exact agreement is impossible.* The forward softmax cannot be bit-identical: the exps differ in
the last ulp (NumPy's vs Sleef's), the sums run in another order, PyTorch multiplies by ``1/s``, and in
float16/bfloat16 PyTorch rounds once where ours rounds each op. Near a threshold a probability can then be
0 on one side and the smallest subnormal on the other, or ``(1/n) / p`` overflow on one side only. Such a
row is *explained* only if our backward half (``losses.naive_from_probs`` / ``clipped_from_probs``),
replayed on PyTorch's own probabilities, reproduces PyTorch's pattern exactly and its values within the
bound: the disagreement then lies in the forward rounding alone, and the probabilities themselves are
checked (within their bound) in the forward table. The script lists every explained row. The fused loss
has no such escape: any disagreement fails.

**Training level.** 144 runs of :func:`mnist_cli.engine.train`, 300 steps of 100 examples on MNIST: lr
0.5 and 5 x input scale 1 and 255 x {float16, bfloat16} x {pure; mixed with ``--loss-scale dynamic``} plus
float16 mixed without scaling and float32 pure x seed 0 (init zeros) and seed 1 (init N(0, 0.01^2)) x the
naive, fused and clipped losses. Each is run again by :class:`TorchSGD`, written as a PyTorch user writes it
and importing nothing from mnist_cli: ``nn.Linear``'s layout, ``F.linear``, the loss graph in torch ops
(``-(y_ * log(softmax(z))).sum(1).mean()``, with ``clamp(p, 1e-10, 1)``, ``F.cross_entropy``), autograd,
``torch.optim.SGD``; for mixed precision ``torch.autocast("cpu", dtype)`` around the product and
``torch.amp.GradScaler("cpu")`` (it works on the CPU in torch 2.13: ``unscale_``, ``step``, ``update``).
CPU autocast (measured) runs ``linear`` in the low dtype and ``cross_entropy``/``nll_loss`` in float32, but
not ``softmax``, ``log`` or ``exp``, which follow their input's dtype: the torch loop casts the logits to
float32 itself (``z.float()``), which is autocast's float32 policy on CUDA and what mnist_cli.engine.half emulates.
Both sides get the identical init (``Model.init`` from ``rngs(seed)``) and batches (``batch_order``); the
trainer's own digests of what it consumed and of its init must match.

*Events, exactly.* Per cell: the steps with a NaN loss, an inf loss, a non-finite gradient (any entry of
dL/dW or dL/db, after unscaling), the first of them, the skipped steps and the first, the final loss scale
and whether the final parameters are finite must be identical (ours from the NaN report, which must also
match our per-step records). One disagreement can be *explained*: when the trajectories split before the
event does (the parameters first differ at an earlier step) and a teacher-forced replay -- every torch step
started from our parameters before it -- gives our events at every step: the step is the same, only the
state it started from differed. (PyTorch's float16 ``nll_loss`` sums a batch in float16 and can overflow to
inf where the mean fits; such a step counts as a finite-loss step, said in a note. Not seen in the grid.)

*Step 1, within a bound.* From the identical init and batch, the parameters after step 1 must have the
same NaN/inf pattern and ``||P1 torch - P1 ours|| <= 8 eps ||P1 ours - P0||`` (eps of the dtype; of the
product dtype in mixed precision): the two sides round at most a few times per quantity and differently,
measured at most 3.5 eps (float32; 1.5 in float16/bfloat16 pure, 0 in mixed, where step 1 is
bit-identical); a wrong learning rate, scale, loss or mean would give ~1/eps times more.

*Accuracy, of the stable cells.* Test accuracy (argmax of ``Model.logits`` in the run's compute form against torch's
own ``F.linear`` under the same autocast) is compared where nothing non-finite happened on either side and
``lr * s^2 <= 0.5``, the tutorial's step: correct counts out of 10000 identical, else explained when within
the cell's limit (below). With a 10x step (lr 5) or raw pixels (s = 255, 65025x) the last iterate
oscillates -- its accuracy moves by 200-1700 examples from one step to the next, against ~60 at the
tutorial's step -- or, for clipped, freezes behind the clip floor (the gradient switches off where
``p < 1e-10``, so a last-bit difference in one probability decides which examples keep learning): their
accuracies are printed, not compared.

*Where exact agreement is impossible.* Bit-identical trajectories need every rounding to agree, and three
do not: (1) every matrix product sums its float32 terms in another order (NumPy's OpenBLAS sgemm against
MKL/oneDNN), so about 1 in 1000 rounded half-precision logits or gradient entries lands on the other side
of a rounding boundary (float32: the last bit); (2) the softmax: NumPy's exp against Sleef's, another
summation order, ``e / s`` against ``e * (1/s)``; (3) in pure float16/bfloat16 PyTorch's CPU softmax and
log_softmax compute in float32 and round once, where mnist_cli.losses rounds every op (``z - max``, exp,
the sum, the division): the largest difference, the loss level's "forward rounding". So pure-precision and
float32 trajectories split at step 1, mixed ones after 1-80 steps, and SGD carries the difference forward.
The accuracy limit of a stable cell is measured, not fitted: the most test predictions on which two runs
of the *same* side differ when nothing changes but the order of the examples within each batch (each
side's run and 4 within-batch reorderings of it, all pairs): the order in which the float32 sums of the
gradient add up, the smallest change there is, already moves that many predictions in that cell, so two
implementations that round differently cannot be held to fewer. Measured: 12-13 of the 32 stable cells
differ, by 1-4 of 10000 examples, within limits of 1-12 (with OpenBLAS's Haswell, SkylakeX and Sandybridge
kernels); float32 and most mixed ones agree exactly.

*Profiles (issue 19).* After the 144 cells above (ours in the numpy profile), the cells of
:data:`PROFILE_MODES`, ours computing as the reference's profile (``--framework``, ``--mixed-policy``): against
PyTorch, ``torch.autocast("cpu")`` around the product *and the loss* (``autocast-cpu``: ``cross_entropy`` promoted
to float32, ``softmax``/``log`` left in the half dtype, so a naive float16 run's first scaled step is skipped:
2**16 is inf in float16), fixed loss scales 1024 and 2**20 (GradScaler set back with ``update(new_scale)``), batch
sizes 32 and 500 (120 steps, one epoch); against TensorFlow (:class:`KerasSGD`: eager ``GradientTape``, oneDNN off,
its default flush-to-zero), float32 at lr 0.5, 2 and 5 x input scale 1 and 255, pure float16 (float16 variables,
``assign_sub(lr * g)``: the product rounded, then the update, the profile's ``Rules.update``), Keras's ``mixed_float16`` with
the real ``LossScaleOptimizer`` (2**15) and without, batch sizes 32 and 500. Measured (this machine, torch 2.13.0,
tensorflow-cpu 2.21.0, keras 3.15.1): every profile cell's events identical or teacher-forced-explained, 0 FAIL;
the float16 Dense's two roundings (product, then bias) are the profile's ``Rules.linear`` (without it 1 of 22
Keras cells told another NaN story, from our own parameters).

*Loss scaling.* PyTorch back-propagates the scaled loss, so the naive loss's ``log`` backward divides
``scale / n`` (not ``1/n``) by ``p``, which overflows float32 once ``p < scale / (n * 3.4e38)``: from a gap of
about 80-82 at scale 2^16 and n = 100 (9 ties or one at the max). mnist_cli's losses take the scale where
autograd's backward takes it (``grad_scale``, :class:`mnist_cli.losses.Loss`), so both sides skip the same
steps there; the loss-level tables check the ``grad_scale`` path against torch.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnist_cli.losses import LOSSES, clipped_from_probs, gradient_overflow_limit, naive_from_probs, softmax, underflow_limit
from mnist_cli.rounding import DTYPES, finfo
from mnist_cli.settings import HALF_NAMES as LOW_PRECISION

EXIT_DISAGREE, EXIT_NO_TORCH = 1, 3
K = 10  # classes
BATCH = 100
LOSS_NAMES = ("naive", "clipped", "fused")
REPLAY = {"naive": naive_from_probs, "clipped": clipped_from_probs}  # our backward half, given probabilities
FINITE, NAN, POS_INF, NEG_INF = 0, 1, 2, 3
KIND_NAMES = {FINITE: "finite", NAN: "NaN", POS_INF: "+inf", NEG_INF: "-inf"}



def _row(k: int, fill: float, at: dict) -> np.ndarray:
    """A row of ``k`` logits, all ``fill`` but the entries ``at`` gives."""
    row = np.full(k, fill)
    for j, v in at.items():
        row[j] = v
    return row

def kinds(a: np.ndarray) -> np.ndarray:
    """Elementwise NaN / +inf / -inf / finite codes of a float64 array."""
    return np.where(np.isnan(a), NAN, np.where(a == np.inf, POS_INF, np.where(a == -np.inf, NEG_INF, FINITE)))


# --- the rows ------------------------------------------------------------------------------------------


def random_rows(rng: np.random.Generator) -> list[tuple[np.ndarray, int, str]]:
    """N(0, 1) logits times 1 ... 1e4, random labels."""
    out = []
    for scale in (1.0, 10.0, 100.0, 1e3, 1e4):
        z = rng.standard_normal((200, K)) * scale  # (200, K)
        out += [(z[i], int(rng.integers(K)), f"random x{scale:g}") for i in range(len(z))]
    return out


def extreme_rows(dtype) -> list[tuple[np.ndarray, int, str]]:
    """Gaps around the dtype's limits in five layouts, and the special values."""
    big = float(finfo(dtype).max)
    u = underflow_limit(dtype)
    limits = {
        "underflow": u, "underflow - log 9": u - math.log(9),
        "1/p overflow n=1 ties 9": gradient_overflow_limit(dtype, 1, 9),
        "1/p overflow n=1 ties 1": gradient_overflow_limit(dtype, 1, 1),
        "1/p overflow n=100 ties 9": gradient_overflow_limit(dtype, BATCH, 9),
        "1/p overflow n=100 ties 1": gradient_overflow_limit(dtype, BATCH, 1),
    }
    out = []
    for what, lim in limits.items():
        step = float(np.spacing(np.asarray(lim).astype(dtype)))  # the dtype's spacing at the limit
        for r, ulps in [(r, 0) for r in (-0.03, -0.01, -0.003, -0.001, 0.01, 0.03)] + [(0, u) for u in range(-4, 5)]:
            g = lim * (1 + r) + ulps * step
            t = len(out) % K
            m, j = (t + 1) % K, (t + 2) % K  # another class at the max, another at the min
            what_r = f"{what} {r:+.3f}" if r else f"{what} {ulps:+d} spacing"
            row = _row(K, 0.0, {t: -g})
            out.append((row, t, f"{what_r}: target low, 9 ties at max"))
            row = _row(K, -g / 2, {m: 0.0, t: -g})
            out.append((row, t, f"{what_r}: target low, one max"))
            row = _row(K, 0.0, {j: -g})
            out.append((row, t, f"{what_r}: target at max (9 ties), one low"))
            row = _row(K, -g, {t: 0.0})
            out.append((row, t, f"{what_r}: target the only max, all low"))
            row = _row(K, 100.0, {t: 100.0 - g})
            out.append((row, t, f"{what_r}: target low, 9 ties at 100"))
    special = [
        ({}, 0, "all zero (10 ties)"), ({"all": 0.5 * big}, 3, "all equal at max/2"),
        ({0: 1.0, 1: 1.0}, 0, "two-way tie at the max, target in it"),
        ({0: 1.0, 1: 1.0}, 5, "two-way tie at the max, target below"),
        ({0: np.inf}, 0, "+inf at the target"), ({0: np.inf}, 1, "+inf elsewhere"),
        ({0: -np.inf}, 0, "-inf at the target"), ({0: -np.inf}, 1, "-inf elsewhere"),
        ({0: np.inf, 1: np.inf}, 0, "two +inf"), ({0: np.inf, 1: -np.inf}, 1, "+inf and -inf"),
        ({0: np.nan}, 0, "NaN at the target"), ({0: np.nan}, 1, "NaN elsewhere"),
        ({0: 0.9 * big, 1: -0.9 * big}, 1, "spread beyond range, target at min"),
        ({0: 0.9 * big, 1: -0.9 * big}, 0, "spread beyond range, target at max"),
        ({0: big, 1: -big}, 2, "+-largest float, target between"),
        ({0: big}, 0, "largest float at the target"), ({0: big}, 1, "largest float elsewhere"),
        ({0: float(finfo(dtype).smallest_subnormal)}, 1, "a subnormal logit"),
    ]
    for spec, t, what in special:
        row = np.full(K, spec.pop("all", 0.0))
        for idx, v in spec.items():
            row[idx] = v
        out.append((row, t, what))
    return out


# --- PyTorch, written independently -------------------------------------------------------------------


@dataclass
class Torch:
    """PyTorch autograd through the three graphs (nothing from mnist_cli)."""

    torch: object

    def tensor(self, a: np.ndarray):
        t = self.torch
        if a.dtype == DTYPES["bfloat16"]:  # torch.from_numpy does not know ml_dtypes: go through the bits
            return t.from_numpy(a.view(np.int16).copy()).view(t.bfloat16)
        return t.from_numpy(a.copy())

    def array(self, x, dtype) -> np.ndarray:
        x = x.detach()
        if dtype == DTYPES["bfloat16"]:
            return x.view(self.torch.int16).numpy().view(dtype)
        return x.numpy()

    def loss(self, name: str, z, y):
        t, F = self.torch, self.torch.nn.functional
        if name == "fused":
            return F.cross_entropy(z, y)
        p = t.softmax(z, dim=1)
        y_ = F.one_hot(y, z.shape[1]).to(z.dtype)
        if name == "clipped":
            p = t.clamp(p, 1e-10, 1.0)
        return t.mean(-t.sum(y_ * t.log(p), dim=1))

    def fused_rows(self, z: np.ndarray, y: np.ndarray):
        """PyTorch's per-example fused losses (float64 array) and its batch sum (float)."""
        F = self.torch.nn.functional
        zt, yt = self.tensor(z), self.torch.from_numpy(y.astype(np.int64))
        rows = self.array(F.cross_entropy(zt, yt, reduction="none"), z.dtype).astype(np.float64)
        return rows, float(F.cross_entropy(zt, yt, reduction="sum").item())

    name = "PyTorch"
    profile = "torch"

    @property
    def version(self) -> str:
        return f"PyTorch {self.torch.__version__} autograd, CPU {self.torch.backends.cpu.get_cpu_capability()}"

    def softmax(self, z: np.ndarray) -> np.ndarray:
        return self.array(self.torch.softmax(self.tensor(z), dim=1), z.dtype)

    def run(self, name: str, z: np.ndarray, y: np.ndarray):
        """``(loss, dL/dz as float64, softmax(z) in the dtype)``."""
        zt = self.tensor(z).requires_grad_()
        yt = self.torch.from_numpy(y.astype(np.int64))
        loss = self.loss(name, zt, yt)
        loss.backward()
        with self.torch.no_grad():
            p = self.array(self.torch.softmax(zt, dim=1), z.dtype)
        return float(loss.item()), self.array(zt.grad, z.dtype).astype(np.float64), p


@dataclass
class TensorFlow:
    """TensorFlow eager autograd (``GradientTape``) through the three graphs as the tutorial writes them
    (nothing from mnist_cli): ``reduce_mean(-reduce_sum(y_ * log(softmax(z)), 1))``, the same with
    ``clip_by_value(p, 1e-10, 1)``, and ``reduce_mean(softmax_cross_entropy_with_logits(y_, z))``. Imported
    with ``TF_ENABLE_ONEDNN_OPTS=0`` (the tensorflow profile's setting; oneDNN's float32 softmax breaks at 86.64
    where Eigen's breaks at 87.33)."""

    tf: object
    name = "TensorFlow"
    profile = "tensorflow"

    @property
    def version(self) -> str:
        return f"TensorFlow {self.tf.__version__} eager GradientTape, oneDNN off"

    def tensor(self, a: np.ndarray):
        return self.tf.constant(a)  # ml_dtypes' bfloat16 is TF's own

    def softmax(self, z: np.ndarray) -> np.ndarray:
        return self.tf.nn.softmax(self.tensor(z)).numpy()

    def loss(self, name: str, z, y_):
        tf = self.tf
        if name == "fused":
            return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=y_, logits=z))
        p = tf.nn.softmax(z)
        if name == "clipped":
            p = tf.clip_by_value(p, 1e-10, 1.0)
        return tf.reduce_mean(-tf.reduce_sum(y_ * tf.math.log(p), axis=1))

    def fused_rows(self, z: np.ndarray, y: np.ndarray):
        tf = self.tf
        y_ = tf.one_hot(y, z.shape[1], dtype=z.dtype)
        rows = tf.nn.softmax_cross_entropy_with_logits(labels=y_, logits=self.tensor(z)).numpy().astype(np.float64)
        return rows, float(tf.reduce_sum(tf.nn.softmax_cross_entropy_with_logits(labels=y_, logits=self.tensor(z))))

    def run(self, name: str, z: np.ndarray, y: np.ndarray):
        """``(loss, dL/dz as float64, softmax(z) in the dtype)``."""
        tf = self.tf
        zt = self.tensor(z)
        y_ = tf.one_hot(y, z.shape[1], dtype=zt.dtype)
        with tf.GradientTape() as tape:
            tape.watch(zt)
            loss = self.loss(name, zt, y_)
        grad = tape.gradient(loss, zt)
        return float(loss), grad.numpy().astype(np.float64), tf.nn.softmax(zt).numpy()


def load_framework(name: str):
    """The reference framework ``name`` (``torch`` or ``tensorflow``), or None when it is not installed."""
    try:
        if name == "torch":
            import torch

            torch.set_num_threads(1)
            return Torch(torch)
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        return TensorFlow(tf)
    except ImportError:
        return None


# --- bounds (see the module docstring) ------------------------------------------------------------------


def p_bound(dtype, shift: np.ndarray) -> np.ndarray:
    """Relative bound on a probability, in eps, given ``|z - max|`` (float64)."""
    if dtype.name in LOW_PRECISION:  # exp turns a shift error d = eps |shift| / 2 into a factor e^d
        eps = float(finfo(dtype).eps)
        d = np.nan_to_num(shift, nan=0.0, posinf=0.0) * eps / 2
        with np.errstate(over="ignore"):
            return np.expm1(d) / eps + 2.5 * np.exp(d)
    return np.full_like(shift, 15.0)


def log_p_bound(dtype, shift: np.ndarray) -> np.ndarray:
    """Absolute bound on ``log p`` (the loss of a row), in eps: a shift error d moves log p by d itself."""
    base = np.full_like(shift, 2.5 if dtype.name in LOW_PRECISION else 15.0)
    return base + (np.nan_to_num(shift, nan=0.0, posinf=0.0) / 2 if dtype.name in LOW_PRECISION else 0.0)


def grad_units(dtype) -> float:
    return 11.0 if dtype.name in LOW_PRECISION else 23.0


@dataclass
class Cell:
    """One table row: a dtype, a loss, a batch size."""

    items: int = 0
    kinds_differ: int = 0  # elements whose pattern differs from PyTorch's
    explained: int = 0  # ... of which the replay on PyTorch's p reproduces PyTorch's (forward rounding)
    over: int = 0  # finite elements beyond the bound
    over_explained: int = 0
    worst: float = 0.0  # largest |ours - torch| / bound over finite elements of agreeing calls
    failures: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def compare(dtype, name: str, ours, ref, z: np.ndarray, y: np.ndarray, p_ref: np.ndarray):
    """``(pattern differs (elements), over bound (elements), worst ratio)`` of ours vs ref for one call."""
    eps, sub = float(finfo(dtype).eps), float(finfo(dtype).smallest_subnormal)
    n = z.shape[0]
    rows = np.arange(n)
    z64 = z.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        shift = np.max(z64, axis=1, keepdims=True) - z64  # (n, K)
    (lo, go), (lr, gr) = ours, ref
    p_t = p_ref.astype(np.float64)[rows, y]  # (n,)
    if name == "clipped":
        p_t = np.maximum(p_t, float(dtype.type(1e-10)))
    bp_t = log_p_bound(dtype, shift[rows, y])  # (n,)
    with np.errstate(divide="ignore", invalid="ignore"):
        sub_term = 0.0 if name == "fused" else np.nan_to_num(2 * sub / p_t, nan=np.inf)
        row_bound = eps * bp_t + sub_term  # (n,) the p part of a row's loss error
    # a batch mean: (n - 1) half-ulps per side for a sum in the dtype; one rounding per side in float16/
    # bfloat16, where both sum in float32, except PyTorch's nll_loss (fused), which sums in the dtype
    if dtype.name not in LOW_PRECISION:
        mean_units = (n - 1) + 6
    else:
        mean_units = 1 + 6 + ((n - 1) / 2 if name == "fused" else 0)
    loss_bound = float(np.mean(row_bound)) + eps * mean_units * max(abs(lr), 1.0) if math.isfinite(lr) else 0.0
    g_bound = eps * grad_units(dtype) * np.maximum(np.abs(gr), 1.0 / n) + 4 * sub  # (n, K)
    a, b = np.array([lo] + list(go.ravel())), np.array([lr] + list(gr.ravel()))  # (1 + n K,) loss, gradient
    ko, kr = kinds(a), kinds(b)
    differ = int(np.count_nonzero(ko != kr))
    both = (ko == FINITE) & (kr == FINITE)
    bound = np.array([loss_bound] + list(g_bound.ravel()))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ratio = np.where(both, np.abs(a - b) / bound, 0.0)
    return differ, int(np.count_nonzero(ratio > 1)), float(np.max(ratio))


def check_losses(tch: Torch, dtype, rows, n: int, cells: dict, rng) -> None:
    """Fill ``cells[(dtype, loss, n)]`` for every loss, the rows cut into calls of ``n``."""
    z_all = np.array([r[0] for r in rows])
    with np.errstate(over="ignore"):
        z_all = z_all.astype(dtype)  # (R, K): beyond the range rounds to +-inf, as intended
    y_all = np.array([r[1] for r in rows])
    tags = [r[2] for r in rows]
    order = np.arange(len(rows)) if n == 1 else rng.permutation(len(rows))  # batches mix the cases
    for name in LOSS_NAMES:
        cell = cells.setdefault((dtype.name, name, n), Cell())
        for start in range(0, len(rows), n):
            idx = order[start : start + n]
            z, y = z_all[idx], y_all[idx]
            ours = LOSSES[name](z, y, framework=tch.profile)
            lt, gt, pt = tch.run(name, z, y)
            differ, over, worst = compare(dtype, name, ours, (lt, gt), z, y, pt)
            cell.items += 1 + z.size
            if not differ and not over:
                cell.worst = max(cell.worst, worst)
                continue
            replay_ok, why = False, ""
            if name in REPLAY:  # our backward half on PyTorch's probabilities
                with np.errstate(all="ignore"):
                    replay = REPLAY[name](pt, y, framework=tch.profile)
                r_differ, r_over, r_worst = compare(dtype, name, replay, (lt, gt), z, y, pt)
                replay_ok, why = not r_differ and not r_over, "forward rounding"
            elif math.isinf(lt) and not math.isinf(ours[0]):  # fused: did PyTorch's own batch sum overflow?
                rows_t, sum_t = tch.fused_rows(z, y)
                mean_rows = float(np.mean(rows_t))  # PyTorch's per-example losses, averaged in float64
                r_differ, r_over, r_worst = compare(dtype, name, (mean_rows, gt), ours, z, y, pt)
                replay_ok = math.isinf(sum_t) and np.isfinite(rows_t).all() and not r_differ and not r_over
                why = (f"{tch.name}'s fused loss sums the {z.shape[0]} losses in {dtype.name}: the sum overflowed "
                       f"({sum_t}), the mean of its own per-example losses is {mean_rows:.6g}")
            what = describe(z, y, idx, tags, ours, (lt, gt), pt, tch.profile) + (f" [{why}]" if replay_ok and why else "")
            if replay_ok:
                cell.kinds_differ += differ
                cell.explained += differ
                cell.over += over
                cell.over_explained += over
                cell.worst = max(cell.worst, r_worst)
                cell.notes.append(what)
            else:
                cell.kinds_differ += differ
                cell.over += over
                cell.failures.append(what)


def describe(z, y, idx, tags, ours, ref, pt, tch_profile=None) -> str:
    """Which rows of a call differ, in a line."""
    (lo, go), (lr, gr) = ours, ref
    bad = np.flatnonzero((kinds(go) != kinds(gr)).any(axis=1))
    if bad.size == 0:  # only the loss differs
        return f"batch of {z.shape[0]} rows (e.g. '{tags[idx[0]]}'): loss ours {lo:.6g} torch {lr:.6g}; gradients agree"
    i = int(bad[0])
    t = int(y[i])
    p_ours = softmax(z[i : i + 1], tch_profile)[0]
    return (f"row '{tags[idx[i]]}' (n={z.shape[0]}, target {t}): loss ours {lo:.6g} torch {lr:.6g}; "
            f"p[target] ours {float(p_ours[t]):.4g} torch {float(pt[i, t]):.4g}; grad row ours "
            f"{KIND_NAMES[int(kinds(go[i]).max())]} torch {KIND_NAMES[int(kinds(gr[i]).max())]}"
            + (f" (+{bad.size - 1} more rows)" if bad.size > 1 else ""))


def check_forward(tch: Torch, dtype, rows) -> dict:
    """softmax(z) entry by entry: pattern identical, values within ``B_p`` (plus 2 subnormals)."""
    z = np.array([r[0] for r in rows])
    with np.errstate(over="ignore"):
        z = z.astype(dtype)
    ours = softmax(z, tch.profile).astype(np.float64)
    ref = tch.softmax(z).astype(np.float64)
    z64 = z.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        shift = np.max(z64, axis=1, keepdims=True) - z64
    eps, sub = float(finfo(dtype).eps), float(finfo(dtype).smallest_subnormal)
    with np.errstate(invalid="ignore"):  # inf * 0 where a far-off p is 0 on the reference side
        bound = np.nan_to_num(eps * p_bound(dtype, shift) * np.abs(ref), nan=0.0) + 2 * sub
    both = (kinds(ours) == FINITE) & (kinds(ref) == FINITE)
    with np.errstate(invalid="ignore"):
        ratio = np.where(both, np.abs(ours - ref) / bound, 0.0)
    return {
        "rows": len(rows), "entries": z.size, "kinds_differ": int(np.count_nonzero(kinds(ours) != kinds(ref))),
        "bits_equal": float(np.mean((ours == ref) | (np.isnan(ours) & np.isnan(ref)))),
        "zero_differs": int(np.count_nonzero(both & ((ours == 0) != (ref == 0)))),
        "worst": float(np.max(ratio)), "over": int(np.count_nonzero(ratio > 1)),
    }


# --- training level ------------------------------------------------------------------------------------

TRAIN_STEPS = 300  # within the first epoch (600 batches): the reordered siblings need every index once
TRAIN_LRS = (0.5, 5.0)
TRAIN_SCALES = (1.0, 255.0)
TRAIN_SEEDS = ((0, "zeros"), (1, "normal"))  # (seed, init): the tutorial's zeros, and a seeded N(0, 0.01^2)
#: (dtype, precision, loss scale): pure half, mixed with GradScaler, mixed without scaling, float32
TRAIN_MODES = (("float16", "pure", "none"), ("float16", "mixed", "dynamic"), ("float16", "mixed", "none"),
               ("bfloat16", "pure", "none"), ("bfloat16", "mixed", "dynamic"), ("float32", "pure", "none"))
TRAIN_LOSSES = ("naive", "fused", "clipped")
#: Step 1 starts from the identical init on the identical batch: the updates must agree within this many
#: eps of the dtype (the product dtype in mixed precision), ||P1_torch - P1_ours|| <= U eps ||P1_ours - P0||.
STEP1_UNITS = 8.0
SIBLINGS = 4  # within-batch reorderings per side that measure a stable cell's sensitivity to summation order
#: A cell's accuracy is compared when nothing non-finite happened and its effective step lr * s^2 is the
#: tutorial's or smaller: with 10x (lr 5) or 65025x (raw pixels) the last iterate oscillates or freezes.
STABLE_STEP = 0.5
EXIT_NO_DATA = 4
ABBREV = {"float16": "f16", "bfloat16": "bf16", "float32": "f32", "dynamic": "dyn", "1048576": "2^20"}
FW_ABBREV = {"torch": "pt", "tensorflow": "tf"}
POLICY_ABBREV = {"autocast-cpu": "ac-cpu", "autocast-cuda": "ac-cuda", "mixed_float16": "keras"}
_ALL = ("naive", "fused", "clipped")
#: The profile cells (issue 19): (profile, dtype, precision, loss scale, mixed policy, lrs, input scales, batch
#: sizes, losses). Ours computes as the profile; the reference is PyTorch's loop, or TensorFlow's for tensorflow.
PROFILE_MODES = (
    ("torch", "float16", "mixed", "dynamic", "autocast-cpu", (0.5, 5.0), (1.0, 255.0), (100,), _ALL),
    ("torch", "float16", "mixed", "none", "autocast-cpu", (0.5,), (1.0, 255.0), (100,), _ALL),
    ("torch", "bfloat16", "mixed", "dynamic", "autocast-cpu", (0.5,), (1.0,), (100,), _ALL),
    ("torch", "float16", "mixed", "1024", "autocast-cuda", (0.5,), (1.0, 255.0), (100,), ("naive", "fused")),
    ("torch", "float16", "mixed", "1048576", "autocast-cuda", (0.5,), (1.0, 255.0), (100,), ("naive", "fused")),
    ("torch", "float32", "pure", "none", "", (0.5,), (1.0,), (32, 500), ("naive", "fused")),
    ("torch", "float16", "mixed", "dynamic", "autocast-cuda", (0.5,), (1.0,), (32, 500), ("naive", "fused")),
    ("tensorflow", "float32", "pure", "none", "", (0.5, 2.0, 5.0), (1.0, 255.0), (100,), _ALL),
    ("tensorflow", "float32", "pure", "none", "", (0.5,), (1.0,), (32, 500), ("naive", "fused")),
    ("tensorflow", "float16", "pure", "none", "", (0.5, 5.0), (1.0, 255.0), (100,), _ALL),
    ("tensorflow", "float16", "mixed", "dynamic", "mixed_float16", (0.5, 5.0), (1.0, 255.0), (100,), _ALL),
    ("tensorflow", "float16", "mixed", "none", "mixed_float16", (0.5,), (1.0, 255.0), (100,), _ALL),
    ("tensorflow", "float16", "mixed", "dynamic", "mixed_float16", (0.5,), (1.0,), (32, 500), ("naive", "fused")),
)
EVENT_KEYS = ("nan_loss", "inf_loss", "nonfinite_grad", "first_nonfinite", "skipped", "first_skipped",
              "loss_scale", "params_finite")


@dataclass(frozen=True)
class TrainCell:
    """One run of the grid."""

    dtype: str
    precision: str
    loss_scale: str
    loss: str
    lr: float
    input_scale: float
    seed: int
    init: str
    framework: str = "numpy"  # the profile ours computes as; the reference loop: torch's, or TF's for tensorflow
    policy: str = ""  # the mixed policy ("": the profile's default)
    batch: int = BATCH
    steps: int = TRAIN_STEPS

    def config(self):
        from mnist_cli.settings import TrainConfig

        return TrainConfig(loss=self.loss, lr=self.lr, steps=self.steps, init=self.init, dtype=self.dtype,
                           precision=self.precision, loss_scale=self.loss_scale, input_scale=self.input_scale,
                           seed=self.seed, framework=self.framework, mixed_policy=self.policy,
                           batch_size=self.batch)

    @property
    def reference(self) -> str:
        """The framework whose independent loop this cell is checked against."""
        return "tensorflow" if self.framework == "tensorflow" else "torch"

    @property
    def cpu_autocast(self) -> bool:
        return self.mixed and self.policy == "autocast-cpu"

    @property
    def mixed(self) -> bool:
        return self.precision == "mixed"

    @property
    def label(self) -> str:
        mode = f"{ABBREV[self.dtype]} {self.precision}" + (f" {ABBREV.get(self.loss_scale, self.loss_scale)}"
                                                           if self.mixed else "")
        extra = (f" {FW_ABBREV[self.framework]}" if self.framework != "numpy" else "") + (
            f" {POLICY_ABBREV.get(self.policy, self.policy)}" if self.policy else "") + (
            f" B{self.batch}" if self.batch != BATCH else "")
        return f"{mode:15} {self.loss:7} lr {self.lr:<3g} s {self.input_scale:<3g} seed {self.seed}{extra}"

    @property
    def eps(self) -> float:
        return float(finfo(self.dtype).eps)

    @property
    def effective_step(self) -> float:
        return self.lr * self.input_scale**2


def train_grid(frameworks=("torch", "tensorflow")) -> list[TrainCell]:
    """The 144 cells of the PyTorch grid (ours in the numpy profile), then the issue-19 cells: ours computing as
    the reference's profile, against PyTorch (CPU autocast, fixed loss scales, batch sizes 32 and 500) and
    TensorFlow (float32 under FTZ, pure float16, Keras's mixed_float16 with and without LossScaleOptimizer,
    batches 32, 500)."""
    cells = [TrainCell(d, p, ls, loss, lr, s, seed, init) for d, p, ls in TRAIN_MODES for lr in TRAIN_LRS
             for s in TRAIN_SCALES for seed, init in TRAIN_SEEDS for loss in TRAIN_LOSSES] if "torch" in frameworks else []
    for fw, d, p, ls, policy, lrs, scales, batches, losses in PROFILE_MODES:
        if (fw if fw == "tensorflow" else "torch") in frameworks:
            cells += [TrainCell(d, p, ls, loss, lr, s, 0, "zeros", fw, policy, B, _steps(B))
                      for lr in lrs for s in scales for B in batches for loss in losses]
    return cells


def _steps(batch: int) -> int:
    """Steps within the first epoch (the reordered siblings need every index once): 300, or an epoch of 500s."""
    return min(TRAIN_STEPS, 60000 // batch)


@dataclass
class Run:
    """One side's run of a cell: per-step events, the compared figures, the final parameters."""

    events: list  # per step: (nan loss, inf loss, non-finite gradient, skipped)
    loss_scale: float | None
    W: np.ndarray  # (784, 10) float32
    b: np.ndarray  # (10,) float32
    P1: np.ndarray  # (7850,) float32, the parameters after step 1
    pred: np.ndarray | None = None  # (10000,) test predictions (argmax of the logits), when W, b are finite
    correct: int | None = None  # of the 10000 test examples
    nll_overflow: list = field(default_factory=list)  # torch: steps whose float16 nll_loss sum overflowed
    report: dict | None = None  # ours: the figures as mnist_cli.engine.NanReport gives them

    def figures(self) -> dict:
        """The compared figures: our NanReport's, torch's counted from its steps."""
        return self.report if self.report is not None else self.counted()

    def counted(self) -> dict:
        """The figures counted from the per-step events."""
        ev = np.array(self.events, dtype=bool).reshape(-1, 4)
        bad = np.flatnonzero(ev[:, :3].any(axis=1))
        skip = np.flatnonzero(ev[:, 3])
        return {"nan_loss": int(ev[:, 0].sum()), "inf_loss": int(ev[:, 1].sum()), "nonfinite_grad": int(ev[:, 2].sum()),
                "first_nonfinite": int(bad[0]) + 1 if bad.size else None, "skipped": int(ev[:, 3].sum()),
                "first_skipped": int(skip[0]) + 1 if skip.size else None, "loss_scale": self.loss_scale,
                "params_finite": bool(np.isfinite(self.W).all() and np.isfinite(self.b).all())}

    def predicted(self, pred: np.ndarray, labels: np.ndarray) -> None:
        self.pred, self.correct = pred, int(np.count_nonzero(pred == labels))


class TorchSGD:
    """The cell's training as a PyTorch user writes it (nothing from mnist_cli): ``nn.Linear``'s layout
    (weight (10, 784)), ``F.linear``, the loss graph in torch ops, ``torch.optim.SGD``, for mixed precision
    ``torch.autocast("cpu")`` around the product and ``torch.amp.GradScaler("cpu")`` for ``dynamic``.

    CPU autocast (torch 2.13, measured) runs ``linear`` in the low dtype and ``cross_entropy``/``nll_loss``
    in float32, but leaves ``softmax``, ``log`` and ``exp`` in the dtype of their input: the naive and
    clipped graphs therefore cast the logits with ``z.float()`` themselves, as CUDA autocast would.
    """

    def __init__(self, torch, cell: TrainCell, W0: np.ndarray, b0: np.ndarray, images, labels):
        self.t, self.cell = torch, cell
        self.F = torch.nn.functional
        self.dt = getattr(torch, cell.dtype)
        self.images, self.labels = images, labels  # torch tensors: uint8 (n, 784), int64 (n,)
        self.W = torch.nn.Parameter(self._tensor(W0.T))  # (10, 784)
        self.b = torch.nn.Parameter(self._tensor(b0))
        self.opt = torch.optim.SGD([self.W, self.b], lr=cell.lr)
        self.updates = 0
        self.opt.register_step_post_hook(lambda *_: setattr(self, "updates", self.updates + 1))
        self.fixed = None if cell.loss_scale in ("none", "dynamic") else float(cell.loss_scale)
        if self.fixed is not None:  # a fixed scale: GradScaler set back to it after every update (update(new_scale))
            self.scaler = torch.amp.GradScaler("cpu", init_scale=self.fixed, growth_interval=2**30)
        else:
            self.scaler = torch.amp.GradScaler("cpu") if cell.loss_scale == "dynamic" else None

    def _tensor(self, a: np.ndarray):
        t = self.t
        if a.dtype == DTYPES["bfloat16"]:
            return t.from_numpy(np.ascontiguousarray(a).view(np.int16).copy()).view(t.bfloat16)
        return t.from_numpy(np.ascontiguousarray(a).copy())

    def load(self, W: np.ndarray, b: np.ndarray) -> None:
        """Set the parameters (float32 arrays holding values of the parameter dtype)."""
        with self.t.no_grad():
            self.W.copy_(self.t.from_numpy(np.ascontiguousarray(W.T)))
            self.b.copy_(self.t.from_numpy(b.copy()))

    def params(self) -> tuple[np.ndarray, np.ndarray]:
        return self.W.detach().float().numpy().T.copy(), self.b.detach().float().numpy().copy()

    def _inputs(self, pixels):
        x = pixels.float() * (self.cell.input_scale / 255)
        return x if self.cell.mixed else x.to(self.dt)

    def _loss(self, z, y):
        t, F = self.t, self.F
        if self.cell.mixed and not self.cell.cpu_autocast:
            z = z.float()  # CPU autocast keeps softmax/log in the low dtype: CUDA autocast's float32 loss by hand
        if self.cell.loss == "fused":
            return F.cross_entropy(z, y)
        p = t.softmax(z, dim=1)
        if self.cell.loss == "clipped":
            p = t.clamp(p, 1e-10, 1.0)
        return -(F.one_hot(y, 10).to(z.dtype) * t.log(p)).sum(1).mean()

    def step(self, idx: np.ndarray) -> tuple[tuple, bool]:
        """One SGD step on the examples ``idx``: ``((nan loss, inf loss, non-finite grad, skipped), nll overflow)``."""
        t = self.t
        it = t.from_numpy(idx)
        x, y = self._inputs(self.images[it]), self.labels[it]
        self.opt.zero_grad(set_to_none=True)
        with t.autocast("cpu", dtype=self.dt, enabled=self.cell.mixed):
            z = self.F.linear(x, self.W, self.b)
            if self.cell.cpu_autocast:  # the loss under CPU autocast too: cross_entropy promoted, softmax/log not
                loss = self._loss(z, y)
        if not self.cell.cpu_autocast:
            loss = self._loss(z, y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)  # the gradients below are unscaled, as the NaN report's
        else:
            loss.backward()
        value = loss.item()
        grad_ok = bool(t.isfinite(self.W.grad).all() and t.isfinite(self.b.grad).all())
        overflow = False
        if math.isinf(value) and self.cell.loss == "fused" and not self.cell.mixed:  # nll_loss's sum in the dtype?
            with t.no_grad():
                rows = self.F.cross_entropy(z.detach(), y, reduction="none").double()
            overflow = bool(t.isfinite(rows).all()) and math.isfinite(float(rows.mean()))
        before = self.updates
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update(self.fixed)  # None: the dynamic rules
        else:
            self.opt.step()
        skipped = self.updates == before
        return (value != value, math.isinf(value) and not overflow, not grad_ok, skipped), overflow

    def scale(self) -> float | None:
        return self.scaler.get_scale() if self.scaler is not None else None

    def predict(self, test_images) -> np.ndarray:
        with self.t.no_grad(), self.t.autocast("cpu", dtype=self.dt, enabled=self.cell.mixed):
            z = self.F.linear(self._inputs(test_images), self.W, self.b)
        return z.float().argmax(1).numpy()


class KerasSGD:
    """The cell's training as a TensorFlow user writes it (nothing from mnist_cli), eager ``GradientTape``: a
    ``Dense``-layout kernel (784, 10) and bias as ``tf.Variable``, ``tf.matmul(x, W) + b``, the tutorial's loss
    graph in tf ops (:class:`TensorFlow`), ``W.assign_sub(lr * g)``. Mixed precision as Keras's ``mixed_float16``
    policy computes a Dense layer and the tutorial's loss: float32 variables and inputs cast to float16, every
    op in float16; ``dynamic`` is the real ``keras.mixed_precision.LossScaleOptimizer`` around
    ``keras.optimizers.SGD`` (``scale_loss``, ``apply``: it unscales, skips a non-finite step and halves).
    TensorFlow's own settings: subnormals flushed as its CPU kernels do by default, oneDNN off
    (``TF_ENABLE_ONEDNN_OPTS=0``, the profile's measurement), one intra-op thread."""

    def __init__(self, tf, cell: TrainCell, W0: np.ndarray, b0: np.ndarray, images, labels):
        self.tf, self.cell, self.images, self.labels = tf, cell, images, labels  # numpy uint8 (n, 784), (n,)
        self.ref = TensorFlow(tf)
        self.dt = getattr(tf, cell.dtype)
        var_dtype = tf.float32 if cell.mixed else self.dt
        self.W = tf.Variable(tf.cast(tf.constant(W0.astype(np.float32)), var_dtype))  # (784, 10), exact
        self.b = tf.Variable(tf.cast(tf.constant(b0.astype(np.float32)), var_dtype))
        self.lr = tf.constant(cell.lr, var_dtype)
        self.opt = None
        if cell.loss_scale == "dynamic":
            import keras

            self.opt = keras.mixed_precision.LossScaleOptimizer(keras.optimizers.SGD(cell.lr))
            self.opt.build([self.W, self.b])  # its dynamic_scale (initial_scale, 2**15) exists from here on
        elif cell.loss_scale != "none":
            raise ValueError("Keras 3's LossScaleOptimizer is dynamic only")

    def load(self, W: np.ndarray, b: np.ndarray) -> None:
        self.W.assign(tf_cast(self.tf, W, self.W.dtype))
        self.b.assign(tf_cast(self.tf, b, self.b.dtype))

    def params(self) -> tuple[np.ndarray, np.ndarray]:
        tf = self.tf
        return tf.cast(self.W, tf.float32).numpy().copy(), tf.cast(self.b, tf.float32).numpy().copy()

    def _logits(self, pixels):
        tf = self.tf
        x = tf.cast(tf.constant(pixels), tf.float32) * np.float32(self.cell.input_scale / 255)
        return tf.matmul(tf.cast(x, self.dt), tf.cast(self.W, self.dt)) + tf.cast(self.b, self.dt)  # Dense

    def step(self, idx: np.ndarray) -> tuple[tuple, bool]:
        tf = self.tf
        y_ = tf.one_hot(self.labels[idx].astype(np.int64), 10, dtype=self.dt)
        with tf.GradientTape() as tape:
            loss = self.ref.loss(self.cell.loss, self._logits(self.images[idx]), y_)
            scaled = self.opt.scale_loss(loss) if self.opt is not None else loss
        grads = tape.gradient(scaled, [self.W, self.b])
        value = float(loss)
        scale = float(self.opt.dynamic_scale) if self.opt is not None else 1.0
        unscaled = [g / scale for g in grads] if self.opt is not None else grads  # what the update applies
        grad_ok = all(bool(tf.reduce_all(tf.math.is_finite(g))) for g in unscaled)
        skipped = False
        if self.opt is not None:
            before = int(self.opt.inner_optimizer.iterations)
            self.opt.apply(grads, [self.W, self.b])
            skipped = int(self.opt.inner_optimizer.iterations) == before  # the inner SGD did not step
        else:
            self.W.assign_sub(self.lr * grads[0])
            self.b.assign_sub(self.lr * grads[1])
        return (value != value, math.isinf(value), not grad_ok, skipped), False

    def scale(self) -> float | None:
        return float(self.opt.dynamic_scale) if self.opt is not None else None

    def predict(self, test_images) -> np.ndarray:
        return self.tf.cast(self._logits(test_images), self.tf.float32).numpy().argmax(1)


def tf_cast(tf, a: np.ndarray, dtype):
    return tf.cast(tf.constant(np.asarray(a, np.float32)), dtype)


def trainer(mods: dict, cell: TrainCell, W0: np.ndarray, b0: np.ndarray, data):
    """The independent loop of ``cell``'s reference framework (``mods``: name -> the imported module)."""
    if cell.reference == "tensorflow":
        return KerasSGD(mods["tensorflow"], cell, W0, b0, data.train_images.reshape(len(data.train_labels), -1),
                        data.train_labels)
    return TorchSGD(mods["torch"], cell, W0, b0, *data.torch_train)


@dataclass
class Data:
    """MNIST as both sides read it."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    torch_train: tuple  # (uint8 (n, 784), int64 (n,)) tensors
    torch_test: object  # uint8 (10000, 784) tensor


def load_data(torch) -> Data | None:
    """MNIST from the data directory, fetched from ``../shared/datasets/mnist`` when it is there; None if absent."""
    from mnist_cli.data import load_mnist
    from mnist_cli.errors import MnistError

    shared = Path(__file__).resolve().parents[2] / "shared/datasets/mnist"
    try:
        d = load_mnist(mirrors=[str(shared)] if shared.is_dir() else [])
    except MnistError as exc:
        print(f"training level: MNIST is not available ({exc}); nothing was checked. "
              "Run `mnist-softmax download` (or `make demo`) first.")
        return None
    return data_of(torch, d)


def data_of(torch, d) -> Data:
    """``Data`` of a :class:`mnist_cli.data.MNIST`."""
    tt = (torch.from_numpy(d.train_images.copy()), torch.from_numpy(d.train_labels.astype(np.int64)))
    return Data(d.train_images, d.train_labels, d.test_images, d.test_labels, tt, torch.from_numpy(d.test_images.copy()))


def init_and_batches(cell: TrainCell, n: int):
    """The init and the index batches the trainer draws for ``cell`` (mnist_cli.engine.rngs/batch_order)."""
    from mnist_cli.engine import batch_order, rngs
    from mnist_cli.model import Model

    init_rng, order_rng = rngs(cell.seed)
    param_dtype = "float32" if cell.mixed else cell.dtype  # mixed: float32 master weights
    m0 = Model.init(784, 10, cell.init, DTYPES[param_dtype], init_rng, 0.01)
    return m0, list(batch_order(n, cell.batch, cell.steps, order_rng))


def ours_predict(cell: TrainCell, W: np.ndarray, b: np.ndarray, images: np.ndarray) -> np.ndarray:
    from mnist_cli.model import Model

    form = {"compute_dtype": cell.dtype, "precision": "mixed" if cell.mixed else "pure"}
    z = Model(W, b, **form).logits(images, cell.input_scale)  # as the trained model computes
    return np.argmax(z.astype(np.float32), axis=1)


def run_ours(cell: TrainCell, data: Data, order: np.ndarray | None = None, keep: bool = False):
    """``mnist_cli.engine.train`` on ``cell``: (Run, per-step parameters if ``keep``, the TrainResult).
    ``order`` permutes the training set (a within-batch reordering, for the siblings)."""
    from mnist_cli.engine import train

    images, labels = data.train_images, data.train_labels
    if order is not None:
        images, labels = images[order], labels[order]
    records, params = [], []

    def monitor(step, W, b):
        if keep or step == 1:
            params.append(np.concatenate([W.ravel(), b]).astype(np.float32))
        return {}

    r = train(images, labels, cell.config(), on_log=lambda step, rec: records.append(rec), log_every=1,
              monitor=monitor)
    events = [(rec["nan_loss"], rec["inf_loss"], rec["nonfinite_grad"], rec.get("skipped", False)) for rec in records]
    W, b = r.model.W.astype(np.float32), r.model.b.astype(np.float32)
    nan = r.nan
    report = {"nan_loss": nan.steps_nan_loss, "inf_loss": nan.steps_inf_loss, "nonfinite_grad": nan.steps_nonfinite_grad,
              "first_nonfinite": nan.first_nonfinite_step, "skipped": nan.steps_skipped,
              "first_skipped": nan.first_skipped_step, "loss_scale": nan.loss_scale,
              "params_finite": not nan.params_nonfinite}
    run = Run(events, r.nan.loss_scale, W, b, params[0], report=report)
    if run.figures()["params_finite"]:
        run.predicted(ours_predict(cell, r.model.W, r.model.b, data.test_images), data.test_labels)
    return run, params, r


def run_torch(mods, cell: TrainCell, data: Data, m0, batches, ours_params=None, reorder=None):
    """The reference loop (torch's, or TF's: :func:`trainer`) on the same init and batches: (Run, first step whose
    parameters differ from ``ours_params``'s, or None). ``reorder`` shuffles each batch (a sibling)."""
    tr = trainer(mods, cell, m0.W, m0.b, data)
    events, overflow, P1, first_diff = [], [], None, None
    for step, idx in enumerate(batches, 1):
        ev, ov = tr.step(reorder(idx) if reorder else idx)
        events.append(ev)
        if ov:
            overflow.append(step)
        if step == 1 or (ours_params is not None and first_diff is None):
            W, b = tr.params()
            flat = np.concatenate([W.ravel(), b])
            P1 = flat if step == 1 else P1
            if ours_params is not None and first_diff is None and not same_values(flat, ours_params[step - 1]):
                first_diff = step
    W, b = tr.params()
    run = Run(events, tr.scale(), W, b, P1, nll_overflow=overflow)
    if run.figures()["params_finite"]:
        test = data.torch_test if isinstance(tr, TorchSGD) else data.test_images.reshape(len(data.test_labels), -1)
        run.predicted(tr.predict(test), data.test_labels)
    return run, first_diff


def fed_as_trained(r, m0, batches, labels) -> bool:
    """Whether the trainer's run ``r`` consumed exactly ``batches`` (its order digest) from the init ``m0``."""
    from mnist_cli.engine import consumed_digest

    digest = hashlib.sha256()
    idx = np.stack(batches)  # (steps, B)
    consumed_digest(digest, idx, labels[idx].astype(np.intp))
    init_digest = hashlib.sha256(m0.W.tobytes() + m0.b.tobytes()).hexdigest()
    return digest.hexdigest() == r.order_digest and init_digest == r.init_digest


def same_values(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal entry by entry (NaN equal to NaN, -0 to +0)."""
    return bool(np.array_equal(a, b, equal_nan=True))


def teacher_forced(mods, cell: TrainCell, data: Data, m0, batches, ours: Run, ours_params: list):
    """Each reference step started from *our* parameters before it: the first step whose events differ
    from ours (None: all agree), after ``len(batches)`` steps."""
    tr = trainer(mods, cell, m0.W, m0.b, data)
    prev = np.concatenate([m0.W.ravel(), m0.b]).astype(np.float32)
    for step, idx in enumerate(batches, 1):
        tr.load(prev[:-10].reshape(784, 10), prev[-10:])
        ev, _ = tr.step(idx)
        if ev != tuple(ours.events[step - 1]):
            return step, ev
        prev = ours_params[step - 1]
    return None, None


def step1_units(cell: TrainCell, m0, ours: Run, ref: Run) -> tuple[float, str]:
    """``||P1_torch - P1_ours|| / (eps ||P1_ours - P0||)`` (NaN patterns must match): (units, problem or '')."""
    P0 = np.concatenate([m0.W.ravel(), m0.b]).astype(np.float64)
    a, b = ours.P1.astype(np.float64), ref.P1.astype(np.float64)
    if not np.array_equal(kinds(a), kinds(b)):
        return math.inf, "NaN/inf pattern of the parameters after step 1 differs"
    fin = np.isfinite(a)
    num, den = np.linalg.norm((a - b)[fin]), np.linalg.norm((a - P0)[fin])
    if den == 0:
        return (0.0, "") if num == 0 else (math.inf, "torch moved the parameters where ours did not")
    return float(num / den / cell.eps), ""


def within_batch_order(batches, rng, n: int) -> tuple[np.ndarray, callable]:
    """A reordering of the examples inside each batch (no index in two batches): (a permutation of the ``n``
    training examples with which the trainer draws each batch's examples in a shuffled order, the same shuffle
    of a torch batch's indices)."""
    order = np.arange(n)
    shuffled = {}
    for idx in batches:
        new = rng.permutation(idx)
        order[idx] = new
        shuffled[idx.tobytes()] = new
    return order, lambda idx: shuffled[idx.tobytes()]


@dataclass
class TrainRow:
    cell: TrainCell
    ours: dict
    ref: dict
    events_verdict: str = "OK"
    identical_through: int = TRAIN_STEPS  # the last step after which both parameter sets were bit-identical
    step1: float = 0.0
    step1_verdict: str = "OK"
    correct: tuple = (None, None)
    limit: int | None = None
    acc_verdict: str = "-"
    stable: bool = False
    notes: list = field(default_factory=list)


def check_cell(mods, cell: TrainCell, data: Data) -> TrainRow:
    """One cell's row; ``mods``: the imported reference modules by name (``{"torch": torch, "tensorflow": tf}``)."""
    m0, batches = init_and_batches(cell, data.train_images.shape[0])
    ours, params, r = run_ours(cell, data, keep=True)
    ref, first_diff = run_torch(mods, cell, data, m0, batches, ours_params=params)
    row = TrainRow(cell, ours.figures(), ref.figures())
    row.identical_through = (first_diff - 1) if first_diff else cell.steps
    if not fed_as_trained(r, m0, batches, data.train_labels):
        row.events_verdict = "FAIL"
        row.notes.append("the trainer did not consume the batch order or init fed to torch (digests differ)")
    counted = ours.counted()
    if counted != row.ours:
        row.events_verdict = "FAIL"
        row.notes.append(f"our per-step records ({counted}) disagree with our NanReport ({row.ours})")
    # events: identical, or explained
    if row.ours != row.ref:
        differs = [k for k in EVENT_KEYS if row.ours[k] != row.ref[k]]
        first_event = next((i + 1 for i, (a, b) in enumerate(zip(ours.events, ref.events)) if tuple(a) != tuple(b)),
                           None)
        tf_step, tf_ev = teacher_forced(mods, cell, data, m0, batches, ours, params)
        if tf_step is None and first_event is not None and first_diff is not None and first_diff < first_event:
            row.events_verdict = "EXPLAINED"
            row.notes.append(
                f"{', '.join(differs)} differ: the trajectories first differ in the parameters after step {first_diff} "
                f"(rounding, see above), the events from step {first_event}; started from our parameters before each "
                f"step, the reference's events agree with ours at all {cell.steps} steps (teacher-forced)")
        else:
            row.events_verdict = "FAIL"
            row.notes.append(
                f"{', '.join(differs)} differ (first differing event at step {first_event}, parameters first differ "
                f"after step {first_diff}); teacher-forced: "
                + ("all steps agree" if tf_step is None else f"step {tf_step} differs, ours "
                   f"{tuple(ours.events[tf_step - 1])} reference {tf_ev} (nan loss, inf loss, bad grad, skipped)"))
    if ref.nll_overflow:
        row.notes.append(f"torch's fused loss was inf at {len(ref.nll_overflow)} steps (first {ref.nll_overflow[0]}) "
                         "because nll_loss sums the batch in float16; its per-example losses are finite, so those "
                         "steps count as finite-loss steps (the loss level's explained case)")
        row.events_verdict = "EXPLAINED" if row.events_verdict == "OK" else row.events_verdict
    # step 1 from the identical init and batch
    row.step1, why = step1_units(cell, m0, ours, ref)
    if why or row.step1 > STEP1_UNITS:
        row.step1_verdict = "FAIL"
        row.notes.append(why or f"the step-1 updates differ by {row.step1:.2f} eps, more than {STEP1_UNITS:g}")
    # accuracy, of stable cells
    row.correct = (ours.correct, ref.correct)
    quiet = not any(row.ours[k] or row.ref[k] for k in ("nan_loss", "inf_loss", "nonfinite_grad", "skipped"))
    row.stable = quiet and cell.effective_step <= STABLE_STEP
    if not row.stable:
        row.acc_verdict = "-"
    elif row.correct[0] == row.correct[1]:
        row.acc_verdict = "OK"
    elif same_values(ours.W, ref.W) and same_values(ours.b, ref.b):
        row.acc_verdict = "FAIL"
        row.notes.append("the accuracies differ although the final parameters are equal: the evaluations differ")
    else:
        row.limit = sensitivity(mods, cell, data, m0, batches, ours, ref)
        gap = abs(row.correct[0] - row.correct[1])
        row.acc_verdict = "EXPLAINED" if gap <= row.limit else "FAIL"
        if row.acc_verdict == "FAIL":
            row.notes.append(f"the accuracies differ by {gap} examples, more than the {row.limit} predictions on "
                             "which two runs of one side differ after a within-batch reordering")
    return row


def sensitivity(mods, cell: TrainCell, data: Data, m0, batches, ours: Run, ref: Run) -> int:
    """The most test predictions that a within-batch reordering (a change of summation order, nothing else)
    moves in this cell: over each side's run and :data:`SIBLINGS` reorderings of it, the most predictions
    on which two runs of the same side differ (a run whose parameters are not finite differs on all)."""
    families = ([ours.pred], [ref.pred])
    for k in range(SIBLINGS):
        order, reorder = within_batch_order(batches, np.random.default_rng([cell.seed, k, 12]), len(data.train_labels))
        families[0].append(run_ours(cell, data, order=order)[0].pred)
        families[1].append(run_torch(mods, cell, data, m0, batches, reorder=reorder)[0].pred)
    n = len(data.test_labels)
    return max(n if a is None or b is None else int(np.count_nonzero(a != b))
               for family in families for i, a in enumerate(family) for b in family[i + 1:])


def _pair(a, b, width: int) -> str:
    fmt = lambda v: "-" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))
    return f"{fmt(a) + '/' + fmt(b):>{width}}"


def training_level(mods: dict) -> int | None:
    """The training-level cross-check (see the module docstring) against each framework of ``mods`` (name -> the
    imported module): the number of disagreeing table rows, or None when MNIST is not available."""
    data = load_data(mods["torch"])
    if data is None:
        return None
    fails = 0
    for name in ("torch", "tensorflow"):
        if name in mods:
            fails += _training_table(mods, name, data)
    return fails


def _training_table(mods: dict, name: str, data: Data) -> int:
    """The training-level tables of one reference framework."""
    t0 = time.perf_counter()
    cells = [c for c in train_grid(tuple(mods)) if c.reference == name]
    rows = [check_cell(mods, cell, data) for cell in cells]
    seconds = time.perf_counter() - t0
    W = 60  # the setting column
    if name == "torch":
        t = mods["torch"]
        print(f"training level: mnist_cli.engine.train vs a PyTorch {t.__version__} loop (F.linear, autograd, "
              f"optim.SGD, autocast, GradScaler), {len(rows)} runs on MNIST (300 steps; 120 of 500), the same init "
              "and batches; ours/torch in every column; 'pt' = ours as the torch profile, ac-cpu/ac-cuda = "
              "torch.autocast's CPU/CUDA policy")
    else:
        tf = mods["tensorflow"]
        print(f"training level: mnist_cli.engine.train --framework tensorflow vs a TensorFlow {tf.__version__} eager "
              f"loop (GradientTape, tf.matmul + b, assign_sub; keras {_keras_version()} mixed_float16 and "
              "LossScaleOptimizer), settings: TF_ENABLE_ONEDNN_OPTS="
              f"{os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'default')} (oneDNN off), flush-to-zero as TF's CPU "
              f"kernels do by default (not changed), 1 intra-op thread; {len(rows)} runs; ours/TF in every column")
    print("\nnon-finite events (counts of steps; first = first step; scale = final loss scale)")
    print(f"{'setting':{W}} {'NaN loss':>9} {'inf loss':>9} {'bad grad':>9} {'first':>9} {'skipped':>9} "
          f"{'1st skip':>9} {'scale':>15} {'finite W':>11}  verdict")
    for row in rows:
        o, t = row.ours, row.ref
        print(f"{row.cell.label:{W}} " + " ".join(_pair(o[k], t[k], 9) for k in EVENT_KEYS[:6])
              + f" {_pair(o['loss_scale'], t['loss_scale'], 15)} {_pair(o['params_finite'], t['params_finite'], 11)}"
              + f"  {row.events_verdict}")
    print(f"\ntrajectory and test accuracy: identical = the parameters were equal through that step; step 1 = "
          f"||P1 ref - P1 ours|| / ||P1 ours - P0|| in eps of the dtype (bound {STEP1_UNITS:g}); correct of 10000 "
          f"test examples, compared in stable cells (nothing non-finite, lr * s^2 <= {STABLE_STEP:g}), within the "
          f"limit: the most test predictions on which two runs of one side differ when only the order of the "
          f"examples within each batch changes ({SIBLINGS} reorderings of each side); unstable = accuracy printed, "
          f"not compared")
    print(f"{'setting':{W}} {'identical':>9} {'step 1':>7}  {'correct':>11} {'diff':>5} {'limit':>9}  verdict")
    fails = 0
    for row in rows:
        o, t = row.correct
        verdicts = (row.events_verdict, row.step1_verdict, row.acc_verdict)
        verdict = "FAIL" if "FAIL" in verdicts else ("EXPLAINED" if "EXPLAINED" in verdicts else "OK")
        fails += verdict == "FAIL"
        diff = "-" if o is None or t is None else str(abs(o - t))
        limit = ("-" if row.limit is None else str(row.limit)) if row.stable else "unstable"
        print(f"{row.cell.label:{W}} {row.identical_through:9d} {row.step1:7.2f}  {_pair(o, t, 11)} {diff:>5} "
              f"{limit:>9}  {verdict}")
    explain_training(rows, name)
    notes = [(row, n) for row in rows for n in row.notes]
    if notes:
        print("\nnotes (EXPLAINED and FAIL rows):")
        for row, n in notes:
            print(f"  {row.cell.label.strip()}: {n}")
    stable = [r for r in rows if r.stable]
    print(f"\ntraining level vs {name}: {len(rows)} runs ({len(stable)} stable, accuracy compared), {seconds:.1f} s, "
          + ("all agree" if not fails else f"{fails} rows disagree") + "\n")
    return fails


def _keras_version() -> str:
    import keras

    return keras.__version__


def explain_training(rows: list[TrainRow], name: str = "torch") -> None:
    """Why exact agreement is impossible, with this run's figures (printed when a row is not bit-identical)."""
    split = [r for r in rows if r.identical_through < r.cell.steps]
    if not split:
        return
    step1 = {}
    for r in rows:
        key = f"{r.cell.dtype} {r.cell.precision}"
        step1[key] = max(step1.get(key, 0.0), r.step1)
    mixed = [r.identical_through for r in split if r.cell.mixed]
    differ = [r for r in rows if r.acc_verdict == "EXPLAINED"]
    print(f"\nwhy exact agreement is impossible ({len(split)} of {len(rows)} {name} runs split from ours):")
    inside = {"torch": ("MKL/oneDNN", "Sleef's", "(3) in the cells where ours computes as the numpy profile, pure "
                        "float16/bfloat16 PyTorch computes softmax and log_softmax in float32 and rounds once where "
                        "mnist_cli.losses rounds every op (the torch profile's cells round once, as PyTorch does). "),
              "tensorflow": ("Eigen", "Eigen's", "")}[name]  # the profile follows TF's other roundings
    print("  Bit-identical trajectories need every rounding to agree. From the identical init and batch, step 1 "
          "agrees within " + ", ".join(f"{v:.2f} eps ({k})" for k, v in step1.items()) + f" (bound {STEP1_UNITS:g}); "
          f"the roundings that differ: (1) every matrix product sums its float32 terms in another order (OpenBLAS "
          f"sgemm vs {inside[0]}), so about 1 in 1000 rounded half-precision logits or gradient entries lands on the "
          f"other side of a rounding boundary; (2) the softmax's exp (NumPy's vs {inside[1]}) and its sum's order. "
          + inside[2] + "Pure and float32 runs split at step 1"
          + (f", mixed ones after {min(mixed)}-{max(mixed)} steps" if mixed else "") + "; SGD carries it forward.")
    if differ:
        gaps = [abs(r.correct[0] - r.correct[1]) for r in differ]
        print(f"  Accuracy: {len(differ)} stable cells differ by {min(gaps)}-{max(gaps)} of 10000 test examples, each "
              "within its limit: the most test predictions on which two runs of one side differ when nothing changes "
              "but the order of the examples within each batch, i.e. the order in which the float32 gradient sums "
              f"add up (limits {min(r.limit for r in differ)}-{max(r.limit for r in differ)}). The unstable cells "
              f"(lr * s^2 > {STABLE_STEP:g}) oscillate or freeze behind the clip floor: their accuracies are printed, "
              "not compared.")


def framework_loop(ref, W0, b0, images, labels, batches, lr: float, scale: float) -> int | None:
    """The tutorial's float32 naive SGD written in ``ref``'s own ops (TensorFlow eager ``GradientTape`` or PyTorch
    autograd; nothing from mnist_cli but the init and batch order fed in): the first step whose loss or gradient is
    non-finite, None if none."""
    s = np.float32(scale / 255.0)
    W, b = W0.astype(np.float32), b0.astype(np.float32)
    for step, idx in enumerate(batches, start=1):
        x = images[idx].astype(np.float32) * s
        y = labels[idx].astype(np.int64)
        if isinstance(ref, TensorFlow):
            tf = ref.tf
            Wt, bt = tf.constant(W), tf.constant(b)
            with tf.GradientTape() as tape:
                tape.watch([Wt, bt])
                loss = ref.loss("naive", tf.matmul(tf.constant(x), Wt) + bt, tf.one_hot(y, 10, dtype=tf.float32))
            gW, gb = (g.numpy() for g in tape.gradient(loss, [Wt, bt]))
            value = float(loss)
        else:
            t = ref.torch
            Wt, bt = t.from_numpy(W.copy()).requires_grad_(), t.from_numpy(b.copy()).requires_grad_()
            loss = ref.loss("naive", t.from_numpy(x) @ Wt + bt, t.from_numpy(y))
            loss.backward()
            gW, gb, value = Wt.grad.numpy(), bt.grad.numpy(), loss.item()
        if not (math.isfinite(value) and np.isfinite(gW).all() and np.isfinite(gb).all()):
            return step
        W, b = W - np.float32(lr) * gW, b - np.float32(lr) * gb
    return None


def scenario_level(refs: dict) -> int:
    """The named compare scenarios of a framework profile (``lr-2-torch``, ``lr-2-tensorflow``): the first non-finite
    step of the naive loss in mnist_cli (computing as the profile) and in the real framework's own loop, fed the
    same init and batches: identical, and the scenario's expectation holds in the real framework."""
    from mnist_cli.data import load_mnist
    from mnist_cli.engine import batch_order, rngs, train
    from mnist_cli.model import Model
    from mnist_cli.scenarios import SCENARIOS
    from mnist_cli.settings import TUTORIAL, TrainConfig

    shared = Path(__file__).resolve().parents[2] / "shared/datasets/mnist"
    d = load_mnist(mirrors=[str(shared)] if shared.is_dir() else [])
    fails = 0
    print("named scenarios of the framework profiles: naive's first non-finite step, ours vs the framework's loop")
    for sc in (s for s in SCENARIOS if s.framework in refs):
        t0 = time.perf_counter()
        cfg = TrainConfig(loss="naive", lr=sc.lr, input_scale=sc.input_scale, dtype=sc.dtype, framework=sc.framework)
        ours = train(d.train_images, d.train_labels, cfg).nan.first_nonfinite_step
        init_rng, order_rng = rngs(cfg.seed)
        m0 = Model.init(784, 10, TUTORIAL.init, DTYPES["float32"], init_rng, 0.01)
        batches = list(batch_order(len(d.train_labels), cfg.batch_size, cfg.steps, order_rng))
        real = framework_loop(refs[sc.framework], m0.W, m0.b, d.train_images.reshape(len(d.train_labels), -1),
                              d.train_labels, batches, sc.lr, sc.input_scale)
        holds = sc.naive is None or ((real is not None) == (sc.naive == "fails")
                                     and (sc.by_step is None or real is None or real <= sc.by_step))
        ok = ours == real and holds
        fails += not ok
        print(f"  {sc.name:16} ours {ours!s:>5}  {refs[sc.framework].name} {real!s:>5}  expectation "
              f"{'holds' if holds else 'FAILS'} in {refs[sc.framework].name}  {time.perf_counter() - t0:.1f} s  "
              f"{'ok' if ok else 'FAIL'}")
    return fails


BATCHES = (1, 7, BATCH, 1000)  # the loss level's call sizes


def loss_level(ref, strict: bool = False) -> int:
    """The loss-level cross-check against ``ref`` (:class:`Torch` or :class:`TensorFlow`), ours computing as its
    profile (:mod:`mnist_cli.frameworks`) does: the number of disagreeing table rows. ``strict``: an explained
    row counts as a disagreement."""
    rng = np.random.default_rng(12)
    random = random_rows(rng)
    t0 = time.perf_counter()
    print(f"loss level: mnist_cli.losses (NumPy {np.__version__}, --framework {ref.profile}) vs {ref.version}, "
          "1 thread")
    print("\nforward softmax(z), entry by entry (bound B_p, see the docstring)")
    print(f"{'dtype':9} {'rows':>5} {'entries':>8} {'pattern':>9} {'p=0 on one side':>16} {'bit-identical':>14} "
          f"{'worst/bound':>12}  verdict")
    fails = 0
    cells: dict = {}
    for dname, dtype in DTYPES.items():
        rows = random + extreme_rows(dtype)
        f = check_forward(ref, dtype, rows)
        ok = f["kinds_differ"] == 0 and f["over"] == 0
        fails += not ok
        print(f"{dname:9} {f['rows']:5d} {f['entries']:8d} {'same' if not f['kinds_differ'] else f['kinds_differ']:>9} "
              f"{f['zero_differs']:16d} {f['bits_equal']:14.4%} {f['worst']:12.3f}  {'ok' if ok else 'FAIL'}")
        for n in BATCHES:
            check_losses(ref, dtype, rows, n, cells, rng)
    print("\nloss and dL/dz, every loss value and gradient entry (items); pattern = NaN/+inf/-inf/finite")
    print(f"{'dtype':9} {'loss':8} {'n':>4} {'items':>7} {'pattern differs':>16} {'explained':>10} "
          f"{'over bound':>11} {'explained':>10} {'worst/bound':>12}  verdict")
    explained = 0
    for (dname, name, n), c in cells.items():
        bad = not c.ok or (strict and bool(c.notes))
        fails += bad
        explained += len(c.notes)
        print(f"{dname:9} {name:8} {n:4d} {c.items:7d} {c.kinds_differ:16d} {c.explained:10d} {c.over:11d} "
              f"{c.over_explained:10d} {c.worst:12.3f}  {'FAIL' if bad else 'ok'}")
    notes = [(k, w) for k, c in cells.items() for w in c.notes]
    if notes:
        print(f"\nexplained ({len(notes)} calls; the bracket says why). [forward rounding]: our backward "
              f"replayed on {ref.name}'s p gives {ref.name}'s pattern and values, the probabilities differ in the "
              "last bits.")
        for (dname, name, n), w in notes:
            print(f"  {dname} {name} n={n}: {w}")
    failures = [(k, w) for k, c in cells.items() for w in c.failures]
    for (dname, name, n), w in failures:
        print(f"FAIL {dname} {name} n={n}: {w}")
    print(f"\nloss level vs {ref.name}: " + ("all agree" if not fails else f"{fails} table rows disagree")
          + f"; {explained} explained calls; {time.perf_counter() - t0:.1f} s")
    return fails


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--level", choices=("all", "loss", "scenarios", "training"), default="all",
                    help="what to check (default: all)")
    ap.add_argument("--framework", choices=("all", "torch", "tensorflow"), default="all",
                    help="the loss level's reference frameworks (default: both; the training level is PyTorch's)")
    ap.add_argument("--strict", action="store_true", help="an explained loss-level row is a disagreement")
    args = ap.parse_args(argv)
    names = ("torch", "tensorflow") if args.framework == "all" else (args.framework,)
    refs = {name: load_framework(name) for name in names}
    missing = [name for name, r in refs.items() if r is None]
    if missing:
        print(f"crosscheck: {' and '.join(missing)} not installed; nothing was checked. Run `make crosscheck` "
              "(installs torch==2.13.0 and tensorflow-cpu==2.21.0).")
        return EXIT_NO_TORCH
    t0 = time.perf_counter()
    fails = 0
    if args.level in ("all", "loss"):
        for ref in refs.values():
            fails += loss_level(ref, args.strict)
            print()
    if args.level in ("all", "scenarios"):
        fails += scenario_level(refs)
        print()
    if args.level in ("all", "training") and "torch" in refs:
        mods = {"torch": refs["torch"].torch, **({"tensorflow": refs["tensorflow"].tf} if "tensorflow" in refs else {})}
        trained = training_level(mods)
        if trained is None:
            print(f"\n{time.perf_counter() - t0:.1f} s; the training level was not checked")
            return EXIT_NO_DATA
        fails += trained
    print(f"\n{time.perf_counter() - t0:.1f} s in all; "
          + ("everything agrees" if not fails else f"{fails} table rows disagree"))
    return EXIT_DISAGREE if fails else 0


if __name__ == "__main__":
    sys.exit(main())
