"""The fast SGD step: the same arithmetic as the plain loop in :mod:`mnist_cli.engine`, in fewer NumPy calls.

    >>> from mnist_cli.engine.fast import row_groups
    >>> row_groups(100)                      # a mini-batch: one product
    [(0, 1, 100)]
    >>> row_groups(2000)[:2]                 # a large batch: groups of 9 products of 100 rows
    [(0, 9, 100), (900, 9, 100)]

At batch 100 a step's arithmetic is tiny (two 100x784x10 products) and the ~20 small NumPy calls
around it cost as much as the products, so the fast step removes calls:

- **Transposed logits** ``zt`` (k, B): reductions over the 10 classes run down axis 0 of a
  C-ordered array, which NumPy does ~5x faster than ``axis=1`` of a (B, 10) array.
- **Pixel units, bias folded in**: the batch is converted from uint8 but never scaled. The
  parameters are kept as ``Va = [s * W.T | b / kappa]`` (k, d + 1) with ``s = input_scale / 255`` and
  ``kappa = 1 / s``, and each batch row is ``[pixels | kappa]``, so that ``zt = Va @ xa.T`` is
  ``x @ W + b`` (transposed) in one product, and ``Va -= (lr * s**2) * dz.T @ xa`` is both SGD
  updates (``W -= lr * x.T @ dz``, ``b -= lr * sum(dz)``) in one product.
- **Class rows padded for the BLAS kernel** (:data:`PADDED_CLASSES`): OpenBLAS's Haswell kernel (AVX2,
  also chosen on AMD Zen) multiplies float32 matrices of 12 rows ~20% faster than of 10; ``Va`` then
  carries two rows of zeros, which stay zero (their gradient rows are zero) and are never read as
  classes. Other kernels (SkylakeX, Sandybridge, ...) and float64 are measured faster unpadded.
- **A fused kernel** (:class:`mnist_cli.losses.FusedKernel`, the ``fast`` facet of the loss's record in
  :data:`mnist_cli.losses.LOSSES`) computes ``lr * s**2 * (softmax(z) - onehot(y)) / B`` directly.
  It handles a step only when it has *proved* the step healthy: every logit finite and every
  example's gap ``max(z) - min(z)`` below the underflow limit, where no probability can be 0 and the
  loss and gradient are finite. Any other step, and every step of a loss without a kernel, runs the
  reference loss from ``LOSSES`` and the trainer's exact NaN accounting, as the plain loop does.
- **Row groups** for large batches (``full_batch``): each group of rows is converted once into a
  buffer that stays in cache and serves both the forward and the backward product, so the uint8
  images are read from memory once per step instead of a float copy twice. Products are cut to at
  most 120 rows, where OpenBLAS's small-matrix path skips packing (:data:`MAX_SUB_ROWS`). With
  ``threads > 1`` the groups are shared out over that many threads (:class:`_Lane`); each group's
  partial sum is kept apart and they are added in group order, so the result is bit-identical for
  any number of threads.

Results equal the plain loop's to rounding (the sums run in another order); NaN counts and first
steps are the same. ``tests/test_engine_fast.py`` checks both on the stress scenarios. BLAS runs on one
thread throughout (:func:`mnist_cli.threads.blas_pinned`, entered by the trainer).
"""

from __future__ import annotations

import numpy as np

from mnist_cli.losses import Loss

#: Rows per product. OpenBLAS (0.3.31, SkylakeX) multiplies small matrices without packing them: for
#: 10 classes and 785 columns the forward product ``Va @ x.T`` takes that path up to 120 rows and the
#: backward one up to 127; at 122 rows the forward pass over 60000 rows goes from 11 ms to 35 ms.
MAX_SUB_ROWS = 120
#: Rows converted at once for large batches (8 products of 120 rows, 3 MB of float32): large enough
#: that the ~12 small calls per group cost little, small enough to stay in cache between the forward
#: and the backward product. Measured on a full batch with two lanes: 480 rows 35 ms, 960 30 ms,
#: 1440 31 ms, 3000 38 ms.
GROUP_ROWS = 960

#: Mini-batch steps convert their rows this many at a time (4 batches of 100): one gather of several
#: batches keeps more cache misses in flight than one per batch, and the converted rows (1.2 MB of
#: float32) still fit in the caches until their step. Measured on the tutorial run: 3% faster.
CHUNK_ROWS = 400

#: (BLAS kernel, dtype) -> class rows to compute with (the k classes plus rows of zeros). Measured with
#: OpenBLAS 0.3.31, one thread, float32 products of 785 columns (microseconds for 100 rows, forward +
#: backward): Haswell 10 rows 61.7, 12 rows 50.4; SkylakeX 21.0 vs 21.5 (and 4x slower in row groups);
#: Sandybridge 64.3 vs 69.7; Prescott 116.1 vs 124.6; float64 slower padded on every kernel.
PADDED_CLASSES = {("Haswell", "float32"): 12, ("Zen", "float32"): 12}


def class_rows(k: int, dtype, kernel: str | None) -> int:
    """How many rows of class parameters the fast step computes with for ``k`` classes (see
    :data:`PADDED_CLASSES`); ``k`` itself unless the BLAS kernel is measured faster padded."""
    return max(k, PADDED_CLASSES.get((kernel, np.dtype(dtype).name), k)) if k == 10 else k


def row_groups(B: int, max_sub: int | None = None, group_rows: int | None = None) -> list[tuple[int, int, int]]:
    """Cut a batch of ``B`` rows into groups ``(start, m, w)`` of ``m`` products of ``w`` rows each.

    One group when ``B <= max_sub``; else ``w`` is the largest divisor of ``B`` in
    ``[max_sub * 3 // 4, max_sub]`` (or ``max_sub``, the rest in a last group of its own), and groups hold
    about ``group_rows`` rows. Depends on ``B`` alone (never on the number of threads).
    """
    max_sub, group_rows = max_sub or MAX_SUB_ROWS, group_rows or GROUP_ROWS
    if max_sub >= B:
        return [(0, 1, B)]
    w = next((c for c in range(max_sub, max_sub * 3 // 4 - 1, -1) if B % c == 0), max_sub)
    per_group = max(1, group_rows // w)
    groups, start, subs = [], 0, B // w
    while subs:
        m = min(per_group, subs)
        groups.append((start, m, w))
        start, subs = start + m * w, subs - m
    if start < B:
        groups.append((start, 1, B - start))
    return groups


def _aligned_rows(n: int, width: int, dtype, align: int = 64) -> np.ndarray:
    """An (n, width) array whose rows start on ``align``-byte boundaries: converting into rows that
    straddle cache lines (a 785-float row is 3140 bytes) costs up to twice as long."""
    itemsize = np.dtype(dtype).itemsize
    stride = -(-width * itemsize // align) * align // itemsize  # row length rounded up to the alignment
    raw = np.empty(n * stride + align // itemsize, dtype)
    start = (-raw.ctypes.data % align) // itemsize
    return raw[start : start + n * stride].reshape(n, stride)[:, :width]


#: A thread takes at least this many row groups: fewer would cost more in hand-offs than they save.
MIN_GROUPS_PER_LANE = 4


def fast_engine(images, labels, model, config, loss: Loss, acct, kernel_name=None):
    """The fast engine for ``config``, its mode chosen once: :class:`SingleProductSGD` when a batch is one
    product (``batch_size <= MAX_SUB_ROWS``), else :class:`GroupedSGD`."""
    single = row_groups(config.batch_size) == [(0, 1, config.batch_size)]
    cls = SingleProductSGD if single else GroupedSGD
    return cls(images, labels, model, config, loss, acct, kernel_name)


class FastSGD:
    """What both fast modes share: the layout ``Va = [s * W.T | b / kappa]`` (r, d + 1), the step
    factors, the reference step and the update. An engine of :class:`mnist_cli.engine.base.Engine`'s
    protocol; use :func:`fast_engine` to get the mode that fits the batch."""

    def __init__(self, images, labels, model, config, loss: Loss, acct, kernel_name=None):
        self.images, self.labels, self.loss_fn, self.acct = images, labels, loss, acct
        kernel_cls = loss.fast  # the loss's kernel for the steps it proves healthy (None: the reference)
        n, d = images.shape
        k = model.b.shape[0]
        dtype = model.W.dtype.type
        B = config.batch_size
        r = class_rows(k, dtype, kernel_name) if kernel_cls is not None else k  # rows of Va (k + padding)
        self.n, self.d, self.k, self.r, self.B, self.dtype = n, d, k, r, B, dtype
        s = config.input_scale / 255.0
        self.kappa = dtype(1.0 / s)  # the constant last column of every batch row
        self.s2 = s * s  # lr * s**2 turns a gradient in W-units into a step in pixel units
        self.Va = np.zeros((r, d + 1), dtype)  # (r, d + 1) [s * W.T | b / kappa], rows past k zero
        self.Va[:k, :d] = model.W.T * dtype(s)
        self.Va[:k, d] = model.b / self.kappa
        self.V = self.Va[:, :d]  # (r, d) view: the weights in pixel units
        self.params = self.Va
        self.wd = config.weight_decay
        self.kernel_cls = kernel_cls
        self.gW = np.empty((r, d + 1), dtype)  # (r, d + 1) the step's update
        self.G = np.zeros((r, B), dtype)  # the reference's coef * dL/dz.T, rows past k zero
        self.groups = row_groups(B)
        # the flat position of example p's target in its group's (m, r, w) logits: y_p * w + offset_p
        width, offset = np.empty(B, np.intp), np.empty(B, np.intp)
        for start, m, w in self.groups:
            p = np.arange(m * w)
            width[start : start + m * w] = w
            offset[start : start + m * w] = (p // w) * r * w + p % w
        self.width, self.offset = width, offset
        # rows as opaque d-byte items, when the layout allows: NumPy gathers those with one memcpy per
        # row, ~30% faster than rows of a 2-D array (9 against 12 us for 100 rows)
        row_item = np.dtype((np.void, d * images.dtype.itemsize))
        self.items = images.view(row_item).reshape(n) if images.flags.c_contiguous else None
        self._lr = self._coef = self._kcoef = None  # the step factors of the last learning rate
        self.perm = self.batches = self.t = self.y = None
        self.count = 0

    def begin_epoch(self, perm: np.ndarray, count: int) -> None:
        """Take the epoch's permutation: cut it into the batches the steps gather, and precompute
        each batch's labels and the target positions the fused kernel reads."""
        self.perm, self.count = perm, count
        self.batches = perm[: count * self.B].reshape(count, self.B)  # (count, B) rows to gather
        self.y = self.labels[self.batches]  # (count, B)
        if self.kernel_cls is not None:
            self.t = self.y * self.width + self.offset

    def consumed(self, done: int) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, labels)`` (done, B) of the first ``done`` steps of this epoch: the rows the steps
        gathered, and the labels their targets came from (decoded from the fused kernel's target
        positions where it has them, which is what it subtracts the one-hot at)."""
        labels = self.y if self.t is None else (self.t - self.offset) // self.width
        return self.batches[:done], labels[:done]

    def _factors(self, lr) -> None:
        """The step factors of learning rate ``lr`` (recomputed only when it changes)."""
        if lr != self._lr:
            self._lr = lr
            self._coef = self.dtype(lr * self.s2)  # d(pixel-unit params) = coef * dL/dz.T @ xa
            self._kcoef = self.dtype(self._coef / self.B)  # the fused kernel's factor: dL/dz has the 1/B

    def _gather(self, idx: np.ndarray) -> np.ndarray:
        """``images[idx]``: through the row-item view when there is one (a memcpy per row)."""
        if self.items is None:
            return self.images[idx]
        return self.items[idx].view(self.images.dtype).reshape(len(idx), self.d)

    def _storage_order(self) -> bool:
        """Whether the logits of a step are laid out in storage order (a full batch read row by row)
        rather than in the batch's drawn order."""
        return False

    def _reference(self, step: int, j: int, z: np.ndarray) -> tuple[float, bool, np.ndarray]:
        """The step by the reference loss on logits ``z`` (B, k) and the exact accounting; returns
        ``(loss, bad, coef * dL/dz.T)`` (r, B), zero in the padding rows. The loss sees the batch in its
        drawn order; logits laid out in storage order are reordered for it, and its gradient back."""
        idx = self.batches[j]
        stored = self._storage_order()
        if stored:  # row i of z is example i
            z = z[idx]  # (B, k)
        y = self.labels[idx]
        loss, dz = self.loss_fn(z, y)
        bad = self.acct.record(step, loss, z, dz.sum(axis=0), idx, y)
        if stored:
            laid = np.empty_like(dz)
            laid[idx] = dz
            dz = laid
        np.multiply(dz.T, self._coef, out=self.G[: self.k])
        return loss, bad, self.G

    def _decay(self, lr) -> None:
        self.V -= self.dtype(lr * self.wd) * self.V  # W -= lr * wd * W, in pixel units

    def _update(self, gW: np.ndarray, lr) -> None:
        if self.wd:
            self._decay(lr)
        self.Va -= gW

    def finite(self) -> bool:
        return bool(np.isfinite(self.Va).all())

    def export(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(W, b)`` (d, k) and (k,) from parameters in this layout."""
        W = np.ascontiguousarray((params[: self.k, : self.d] * self.kappa).T)
        return W, params[: self.k, self.d] * self.kappa

    def close(self) -> None:
        pass


class SingleProductSGD(FastSGD):
    """A batch of at most :data:`MAX_SUB_ROWS` rows: one forward and one backward product per step, the
    rows converted :data:`CHUNK_ROWS` at a time."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        B, d = self.B, self.d
        self.kernel = self.kernel_cls(self.k, self.dtype, self.acct.healthy_gap) if self.kernel_cls else None
        self.chunk = max(1, CHUNK_ROWS // B) if self.n != B else 1  # batches converted at once
        self.xc = _aligned_rows(self.chunk * B, d + 1, self.dtype)  # (chunk * B, d + 1) [pixels | kappa]
        self.xc[:, d] = self.kappa
        self.xcs = [self.xc[c * B : (c + 1) * B] for c in range(self.chunk)]  # each batch's rows in the chunk
        self.zt = np.empty((1, self.r, B), self.dtype)  # (1, r, B) the logits, transposed

    def step(self, step: int, j: int, lr) -> tuple[float, bool]:
        self._factors(lr)
        B, zt, gW = self.B, self.zt, self.gW
        c = j % self.chunk
        if c == 0:  # convert the rows of this batch and the next chunk - 1 (as many as the epoch has left)
            rows = self.batches[j : j + self.chunk].reshape(-1)
            np.copyto(self.xc[: len(rows), : self.d], self._gather(rows), casting="unsafe")  # uint8 -> float
        xa = self.xcs[c]  # (B, d + 1) [pixels | kappa]
        np.matmul(self.Va, xa.T, out=zt[0])  # (r, B) logits x @ W + b, transposed
        if self.kernel is not None:
            gap, loss_sum, G = self.kernel(zt, self.t[j], self._kcoef)
            if loss_sum is not None:
                self.acct.observe_gap(gap)
                np.matmul(G[0], xa, out=gW)  # (r, d + 1)
                self._update(gW, lr)
                return float(self.dtype(loss_sum) / self.dtype(B)), False  # in the dtype, as the reference
        loss, bad, G = self._reference(step, j, zt[0, : self.k].T)
        if not self.acct.halts(bad):
            np.matmul(G, xa, out=gW)
            self._update(gW, lr)
        return loss, bad


class _Lane:
    """One thread's share of a grouped step: its row groups (with their positions) and its own buffers."""

    def __init__(self, groups, d: int, r: int, k: int, dtype, kappa, kernel_cls, healthy_gap: float):
        self.groups = groups  # [(g, start, m, w)]: g is the group's position in the batch
        self.xa = _aligned_rows(max(m * w for _, _, m, w in groups), d + 1, dtype)  # (rows, d + 1) [pixels | kappa]
        self.xa[:, d] = kappa
        self.zt = {(m, w): np.empty((m, r, w), dtype) for _, _, m, w in groups}  # logits per group shape
        self.parts = {m: np.empty((m, r, d + 1), dtype) for _, _, m, _ in groups}  # one group's products
        self.kernel = kernel_cls(k, dtype, healthy_gap) if kernel_cls is not None else None

    def run(self, sgd: GroupedSGD, j: int, t: np.ndarray, kcoef) -> bool:
        """Forward, fused kernel and backward over this lane's groups; group ``g``'s gradient goes to
        ``sgd.partials[g]``, its loss sum and gap to ``sgd.group_loss[g]``, ``sgd.group_gap[g]``.
        False as soon as a group is not proved healthy."""
        with np.errstate(all="ignore"):  # error state is per thread
            for g, start, m, w in self.groups:
                rows = m * w
                x = sgd._load(j, start, rows, self.xa).reshape(m, w, -1)  # (m, w, d + 1)
                zt = self.zt[m, w]
                np.matmul(sgd.Va, x.transpose(0, 2, 1), out=zt)  # (m, r, w): one small product per w rows
                gap, part, G = self.kernel(zt, t[start : start + rows], kcoef)
                if part is None:
                    return False
                sgd.group_gap[g], sgd.group_loss[g] = gap, part
                np.add.reduce(np.matmul(G, x, out=self.parts[m]), axis=0, out=sgd.partials[g])  # (r, d + 1)
        return True


class GroupedSGD(FastSGD):
    """A large batch in row groups: each group is converted once and serves both products; with
    ``threads > 1`` the groups are shared out over lanes and their partial sums added in group order.

    A full batch (every example, B == n) reads its rows in storage order (a sum does not depend on
    the order): its loads, targets and logits all follow that order; the reference loss and the
    accounting still see the batch in its drawn order."""

    def __init__(self, images, labels, model, config, loss: Loss, acct, kernel_name=None):
        super().__init__(images, labels, model, config, loss, acct, kernel_name)
        kernel_cls = self.kernel_cls
        self.full = self.n == self.B
        n_lanes = max(1, min(config.threads, len(self.groups) // MIN_GROUPS_PER_LANE)) if kernel_cls else 1
        indexed = [(g, *grp) for g, grp in enumerate(self.groups)]
        cut = np.linspace(0, len(indexed), n_lanes + 1).astype(int)
        self.lanes = [_Lane(indexed[a:b], self.d, self.r, self.k, self.dtype, self.kappa, kernel_cls, acct.healthy_gap)
                      for a, b in zip(cut[:-1], cut[1:])]
        self.pool = None
        if len(self.lanes) > 1:
            from concurrent.futures import ThreadPoolExecutor  # only when there are lanes to share out

            self.pool = ThreadPoolExecutor(len(self.lanes) - 1, thread_name_prefix="mnist-softmax-lane")
        self.partials = np.empty((len(self.groups), self.r, self.d + 1), self.dtype)  # each group's gradient
        self.group_loss = np.empty(len(self.groups), self.dtype)  # each group's loss sum, in the dtype
        self.group_gap = np.empty(len(self.groups))
        self.xa = self.lanes[0].xa  # (rows, d + 1) [pixels | kappa], reused by the reference step
        self.z = np.empty((self.B, self.k), self.dtype)  # all logits, for the reference when a step needs it
        self.storage = np.arange(self.n)  # a full batch's rows, in the order it reads them

    def begin_epoch(self, perm: np.ndarray, count: int) -> None:
        super().begin_epoch(perm, count)
        if self.full:  # every step reads every row, in storage order, with its own label
            self.t = (self.labels * self.width + self.offset)[None] if self.kernel_cls is not None else None

    def consumed(self, done: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.full:
            return super().consumed(done)
        labels = self.labels if self.t is None else (self.t[0] - self.offset) // self.width
        return np.broadcast_to(self.storage, (done, self.n)), np.broadcast_to(labels, (done, self.n))

    def _storage_order(self) -> bool:
        return self.full

    def _load(self, j: int, start: int, rows: int, xa: np.ndarray | None = None) -> np.ndarray:
        """Convert rows [start, start + rows) of batch j (storage order for a full batch) into xa."""
        src = self.images[start : start + rows] if self.full else self._gather(self.batches[j, start : start + rows])
        xa = (self.xa if xa is None else xa)[:rows]
        np.copyto(xa[:, : self.d], src, casting="unsafe")  # uint8 -> float, unscaled
        return xa

    def step(self, step: int, j: int, lr) -> tuple[float, bool]:
        self._factors(lr)
        if self.kernel_cls is not None:
            done = self._grouped_pass(j, self.t[0] if self.full else self.t[j], self._kcoef)
            if done is not None:
                loss_sum, gap = done
                self.acct.observe_gap(gap)
                self._update(self.gW, lr)
                return float(self.dtype(loss_sum) / self.dtype(self.B)), False  # in the dtype, as the reference
        z = self.z  # the reference takes the step: every logit first, then the gradient
        Vk = self.Va[: self.k]
        for start, m, w in self.groups:
            rows = m * w
            z[start : start + rows] = self._load(j, start, rows) @ Vk.T  # (rows, k)
        loss, bad, G = self._reference(step, j, z)
        if not self.acct.halts(bad):
            self.gW.fill(0)
            for start, m, w in self.groups:  # a second pass over the rows
                rows = m * w
                self.gW += G[:, start : start + rows] @ self._load(j, start, rows)
            self._update(self.gW, lr)
        return loss, bad

    def _grouped_pass(self, j: int, t: np.ndarray, kcoef) -> tuple[float, float] | None:
        """Every lane's share of the groups (lane 0 here, the others in the pool); the groups' partial
        sums are then added in group order, whatever the lanes: ``(loss_sum, gap)`` with the gradient
        in ``gW``, or None if a group is unhealthy."""
        others = [self.pool.submit(lane.run, self, j, t, kcoef) for lane in self.lanes[1:]]
        healthy = [self.lanes[0].run(self, j, t, kcoef)] + [f.result() for f in others]
        if not all(healthy):
            return None
        np.add.reduce(self.partials, axis=0, out=self.gW)  # (r, d + 1), group 0 first
        return np.add.reduce(self.group_loss), float(np.max(self.group_gap))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
