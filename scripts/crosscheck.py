"""Cross-check the losses against an independent PyTorch implementation (issue 12, section 4).

    make crosscheck                         # installs torch==2.13.0 (CPU, from local disk), then runs this
    .venv/bin/python scripts/crosscheck.py

Exit status: 0 when everything agrees, 1 on any disagreement (a table row marked FAIL), 3 when PyTorch is
not installed (nothing was checked).

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

**Training level**: :func:`training_level` is the hook; it reports "not yet" until the trainer has
``--dtype float16/bfloat16``. It never counts as a pass.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnist_cli.losses import LOSSES, clipped_from_probs, gradient_overflow_limit, naive_from_probs, softmax, underflow_limit
from mnist_cli.precision import DTYPES, LOW_PRECISION, finfo

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

    def run(self, name: str, z: np.ndarray, y: np.ndarray):
        """``(loss, dL/dz as float64, softmax(z) in the dtype)``."""
        zt = self.tensor(z).requires_grad_()
        yt = self.torch.from_numpy(y.astype(np.int64))
        loss = self.loss(name, zt, yt)
        loss.backward()
        with self.torch.no_grad():
            p = self.array(self.torch.softmax(zt, dim=1), z.dtype)
        return float(loss.item()), self.array(zt.grad, z.dtype).astype(np.float64), p


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
            ours = LOSSES[name](z, y)
            lt, gt, pt = tch.run(name, z, y)
            differ, over, worst = compare(dtype, name, ours, (lt, gt), z, y, pt)
            cell.items += 1 + z.size
            if not differ and not over:
                cell.worst = max(cell.worst, worst)
                continue
            replay_ok, why = False, ""
            if name in REPLAY:  # our backward half on PyTorch's probabilities
                with np.errstate(all="ignore"):
                    replay = REPLAY[name](pt, y)
                r_differ, r_over, r_worst = compare(dtype, name, replay, (lt, gt), z, y, pt)
                replay_ok, why = not r_differ and not r_over, "forward rounding"
            elif math.isinf(lt) and not math.isinf(ours[0]):  # fused: did PyTorch's own batch sum overflow?
                rows_t, sum_t = tch.fused_rows(z, y)
                mean_rows = float(np.mean(rows_t))  # PyTorch's per-example losses, averaged in float64
                r_differ, r_over, r_worst = compare(dtype, name, (mean_rows, gt), ours, z, y, pt)
                replay_ok = math.isinf(sum_t) and np.isfinite(rows_t).all() and not r_differ and not r_over
                why = (f"PyTorch's nll_loss sums the {z.shape[0]} losses in {dtype.name}: the sum overflowed "
                       f"({sum_t}), the mean of its own per-example losses is {mean_rows:.6g}")
            what = describe(z, y, idx, tags, ours, (lt, gt), pt) + (f" [{why}]" if replay_ok and why else "")
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


def describe(z, y, idx, tags, ours, ref, pt) -> str:
    """Which rows of a call differ, in a line."""
    (lo, go), (lr, gr) = ours, ref
    bad = np.flatnonzero((kinds(go) != kinds(gr)).any(axis=1))
    if bad.size == 0:  # only the loss differs
        return f"batch of {z.shape[0]} rows (e.g. '{tags[idx[0]]}'): loss ours {lo:.6g} torch {lr:.6g}; gradients agree"
    i = int(bad[0])
    t = int(y[i])
    p_ours = softmax(z[i : i + 1])[0]
    return (f"row '{tags[idx[i]]}' (n={z.shape[0]}, target {t}): loss ours {lo:.6g} torch {lr:.6g}; "
            f"p[target] ours {float(p_ours[t]):.4g} torch {float(pt[i, t]):.4g}; grad row ours "
            f"{KIND_NAMES[int(kinds(go[i]).max())]} torch {KIND_NAMES[int(kinds(gr[i]).max())]}"
            + (f" (+{bad.size - 1} more rows)" if bad.size > 1 else ""))


def check_forward(tch: Torch, dtype, rows) -> dict:
    """softmax(z) entry by entry: pattern identical, values within ``B_p`` (plus 2 subnormals)."""
    z = np.array([r[0] for r in rows])
    with np.errstate(over="ignore"):
        z = z.astype(dtype)
    ours = softmax(z).astype(np.float64)
    ref = tch.array(tch.torch.softmax(tch.tensor(z), dim=1), dtype).astype(np.float64)
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
        "zero_differs": int(np.count_nonzero(both & ((ours == 0) != (ref == 0)))),
        "worst": float(np.max(ratio)), "over": int(np.count_nonzero(ratio > 1)),
    }


def training_level() -> None:
    """The training-level cross-check of issue 12, section 4: a torch loop fed the identical batches and init."""
    print("training-level cross-check: not yet (needs --dtype float16/bfloat16 in the trainer)")


def main() -> int:
    try:
        import torch
    except ImportError:
        print("crosscheck: PyTorch is not installed; nothing was checked. "
              "Run `make crosscheck` (installs torch==2.13.0) or `.venv/bin/pip install torch==2.13.0`.")
        return EXIT_NO_TORCH
    torch.set_num_threads(1)
    tch = Torch(torch)
    t0 = time.perf_counter()
    rng = np.random.default_rng(12)
    random = random_rows(rng)
    print(f"loss level: mnist_cli.losses (NumPy {np.__version__}) vs PyTorch {torch.__version__} autograd, "
          f"CPU {torch.backends.cpu.get_cpu_capability()}, 1 thread")
    print("\nforward softmax(z), entry by entry (bound B_p, see the docstring)")
    print(f"{'dtype':9} {'rows':>5} {'entries':>8} {'pattern':>9} {'p=0 on one side':>16} {'worst/bound':>12}  verdict")
    fails = 0
    cells: dict = {}
    for dname, dtype in DTYPES.items():
        rows = random + extreme_rows(dtype)
        f = check_forward(tch, dtype, rows)
        ok = f["kinds_differ"] == 0 and f["over"] == 0
        fails += not ok
        print(f"{dname:9} {f['rows']:5d} {f['entries']:8d} {'same' if not f['kinds_differ'] else f['kinds_differ']:>9} "
              f"{f['zero_differs']:16d} {f['worst']:12.3f}  {'ok' if ok else 'FAIL'}")
        for n in (1, BATCH):
            check_losses(tch, dtype, rows, n, cells, rng)
    print("\nloss and dL/dz, every loss value and gradient entry (items); pattern = NaN/+inf/-inf/finite")
    print(f"{'dtype':9} {'loss':8} {'n':>4} {'items':>7} {'pattern differs':>16} {'explained':>10} "
          f"{'over bound':>11} {'explained':>10} {'worst/bound':>12}  verdict")
    for (dname, name, n), c in cells.items():
        fails += not c.ok
        print(f"{dname:9} {name:8} {n:4d} {c.items:7d} {c.kinds_differ:16d} {c.explained:10d} {c.over:11d} "
              f"{c.over_explained:10d} {c.worst:12.3f}  {'ok' if c.ok else 'FAIL'}")
    notes = [(k, w) for k, c in cells.items() for w in c.notes]
    if notes:
        print(f"\nexplained ({len(notes)} calls; the bracket says why). [forward rounding]: our backward "
              "replayed on PyTorch's p gives PyTorch's pattern and values, the probabilities differ in the "
              "last bits (PyTorch's softmax sums in another order and multiplies by 1/s; in float16/bfloat16 "
              "it computes in float32 and rounds once, ours rounds every op).")
        for (dname, name, n), w in notes:
            print(f"  {dname} {name} n={n}: {w}")
    failures = [(k, w) for k, c in cells.items() for w in c.failures]
    for (dname, name, n), w in failures:
        print(f"FAIL {dname} {name} n={n}: {w}")
    print()
    training_level()
    print(f"\n{time.perf_counter() - t0:.1f} s; loss level: "
          + ("all agree" if not fails else f"{fails} table rows disagree"))
    return EXIT_DISAGREE if fails else 0


if __name__ == "__main__":
    sys.exit(main())
