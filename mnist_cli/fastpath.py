"""The fast SGD step: the same arithmetic as the plain loop in :mod:`mnist_cli.train`, in fewer NumPy calls.

    >>> r = train(images, labels, TrainConfig(loss="fused"))                       # doctest: +SKIP
    >>> r = train(images, labels, TrainConfig(loss="fused", fast=False))           # the plain loop

At batch 100 a step's arithmetic is tiny (two 100x784x10 products) and the ~20 small NumPy calls
around it cost as much as the products, so the fast step removes calls:

- **Transposed logits** ``zt`` (k, B): reductions over the 10 classes run down axis 0 of a
  C-ordered array, which NumPy does ~5x faster than ``axis=1`` of a (B, 10) array.
- **Pixel units, bias folded in**: the batch is converted from uint8 but never scaled. The
  parameters are kept as ``Va = [s * W.T | b / kappa]`` (k, d + 1) with ``s = input_scale / 255`` and
  ``kappa = 1 / s``, and each batch row is ``[pixels | kappa]``, so that ``zt = Va @ xa.T`` is
  ``x @ W + b`` (transposed) in one product, and ``Va -= (lr * s**2) * dz.T @ xa`` is both SGD
  updates (``W -= lr * x.T @ dz``, ``b -= lr * sum(dz)``) in one product.
- **A fused kernel** (:class:`FusedKernel`, picked from :data:`FAST_KERNELS` by the same name as in
  :data:`mnist_cli.losses.LOSSES`) computes ``lr * s**2 * (softmax(z) - onehot(y)) / B`` directly.
  It handles a step only when it has *proved* the step healthy: every logit finite and every
  example's gap ``max(z) - min(z)`` below the underflow limit, where no probability can be 0 and the
  loss and gradient are finite. Any other step, and every step of a loss without a kernel, runs the
  reference loss from ``LOSSES`` and the trainer's exact NaN accounting, as the plain loop does.
- **Row blocks** for large batches (``full_batch``): each block of rows is converted once into a
  buffer that stays in cache and serves both the forward and the backward product, so the uint8
  images are read from memory once per step instead of a float copy twice.

Results equal the plain loop's to rounding (the sums run in another order); NaN counts and first
steps are the same. ``tests/test_fastpath.py`` checks both on the stress scenarios.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from mnist_cli.losses import fused

#: Rows per block for large batches: a float32 block of 512 x 785 (1.6 MB) stays in a 2 MB L2 cache.
BLOCK_ROWS = 512


class FusedKernel:
    """``fused`` on transposed logits, scaled for the SGD update; only for steps it proves healthy."""

    reference = fused  # the loss this kernel computes, from LOSSES

    def __init__(self, k: int, dtype, gap_limit: float):
        self.k, self.dtype, self.gap_limit = k, dtype, gap_limit
        self._buffers: dict[int, tuple] = {}  # width -> (shifted (k, w), row max (w,), row sum (w,), flat view)

    def _for_width(self, w: int) -> tuple:
        if w not in self._buffers:
            sh = np.empty((self.k, w), self.dtype)
            self._buffers[w] = (sh, np.empty(w, self.dtype), np.empty(w, self.dtype), sh.reshape(-1))
        return self._buffers[w]

    def __call__(self, zt: np.ndarray, t: np.ndarray, coef) -> tuple[float, float | None, np.ndarray]:
        """From logits ``zt`` (k, w) and the flat positions ``t = y * w + arange(w)`` of the targets,
        return ``(gap, loss_sum, G)``: the largest logit gap of an example, ``sum_i(logsumexp(z_i) -
        z_i[y_i])`` and ``G = coef * (softmax(z) - onehot(y))`` (k, w). ``loss_sum`` is None (and G
        unset) when the step is not proved healthy; the caller then runs the reference loss."""
        sh, z_max, s, flat = self._for_width(zt.shape[1])
        np.maximum.reduce(zt, axis=0, out=z_max)  # (w,) the max shift
        np.subtract(zt, z_max, out=sh)  # (k, w), <= 0
        gap = -float(np.minimum.reduce(sh, axis=None))  # max over examples of max(z) - min(z); nan if z is
        if not gap <= self.gap_limit:  # nan, inf, or a probability may underflow: not proved healthy
            return gap, None, sh
        z_y = flat[t]  # (w,) shifted target logits
        np.exp(sh, out=sh)  # (k, w) in (0, 1]
        np.add.reduce(sh, axis=0, out=s)  # (w,) in [1, k]
        loss_sum = float(np.add.reduce(np.log(s) - z_y))  # sum_i logsumexp(z_i) - z_i[y_i]; the max cancels
        np.divide(coef, s, out=s)  # (w,) coef / sum(exp)
        sh *= s  # (k, w) coef * softmax(z)
        flat[t] -= coef  # coef * (softmax(z) - onehot(y))
        return gap, loss_sum, sh


#: loss name (a key of LOSSES) -> fast kernel; a loss without one runs its reference every step.
FAST_KERNELS: dict[str, type] = {"fused": FusedKernel}


def _aligned_rows(n: int, width: int, dtype, align: int = 64) -> np.ndarray:
    """An (n, width) array whose rows start on ``align``-byte boundaries: converting into rows that
    straddle cache lines (a 785-float row is 3140 bytes) costs up to twice as long."""
    itemsize = np.dtype(dtype).itemsize
    stride = -(-width * itemsize // align) * align // itemsize  # row length rounded up to the alignment
    raw = np.empty(n * stride + align // itemsize, dtype)
    start = (-raw.ctypes.data % align) // itemsize
    return raw[start : start + n * stride].reshape(n, stride)[:, :width]


class FastSGD:
    """SGD steps in the fast layout (see the module docstring); same interface as ``train.PlainSGD``.

    ``step(step, j, lr)`` runs batch ``j`` of the epoch given to ``begin_epoch`` and returns
    ``(loss, bad)``; ``params`` is every parameter in one array (for averaging) and ``export`` turns
    such an array into ``(W, b)``.
    """

    def __init__(self, images, labels, model, config, loss_fn: Callable, kernel_cls, acct, block_rows: int | None = None):
        self.images, self.labels, self.loss_fn, self.acct = images, labels, loss_fn, acct
        n, d = images.shape
        k = model.b.shape[0]
        dtype = model.W.dtype.type
        B = config.batch_size
        self.n, self.d, self.k, self.B, self.dtype = n, d, k, B, dtype
        s = config.input_scale / 255.0
        self.kappa = dtype(1.0 / s)  # the constant last column of every batch row
        self.s2 = s * s  # lr * s**2 turns a gradient in W-units into a step in pixel units
        self.Va = np.empty((k, d + 1), dtype)  # (k, d + 1) [s * W.T | b / kappa]
        self.Va[:, :d] = model.W.T * dtype(s)
        self.Va[:, d] = model.b / self.kappa
        self.V = self.Va[:, :d]  # (k, d) view: the weights in pixel units
        self.params = self.Va
        self.wd = config.weight_decay
        self.full = B == n  # full batch: rows in storage order (a sum does not depend on order)
        self.rows = min(B, block_rows or BLOCK_ROWS)  # rows per block
        self.xa = _aligned_rows(self.rows, d + 1, dtype)  # (rows, d + 1) [pixels | kappa], reused
        self.xa[:, d] = self.kappa
        self.zt = np.empty((k, B), dtype)  # (k, B) the step's logits, transposed
        self.gW = np.empty((k, d + 1), dtype)  # (k, d + 1) the step's update
        self.gW_block = np.empty((k, d + 1), dtype) if B > self.rows else None
        self.kernel = kernel_cls(k, dtype, acct.gap_limit) if kernel_cls is not None else None
        self.perm = self.t = None

    def begin_epoch(self, perm: np.ndarray, count: int) -> None:
        """Take the epoch's permutation; precompute each batch's flat target positions (k, B) layout."""
        B, rows = self.B, self.rows
        self.perm = perm
        if self.kernel is None:
            return
        if self.full:
            y = self.labels  # storage order
        else:
            y = self.labels[perm[: count * B]].reshape(count, B)  # (count, B)
        w = np.minimum(rows, B - np.arange(0, B, rows))  # width of each block
        # flat position of example i's target in its block's (k, w) array: y_i * w + (i - block start)
        offs = np.arange(B) - np.repeat(np.arange(0, B, rows), w)
        self.t = y * np.repeat(w, w) + offs  # (count, B) or (B,)

    def _block_rows(self, j: int, start: int, stop: int):
        """The training-set rows of block [start, stop) of batch j: a slice (full batch) or indices."""
        if self.full:
            return slice(start, stop)
        return self.perm[j * self.B + start : j * self.B + stop]

    def _load(self, rows, w: int) -> np.ndarray:
        xa = self.xa[:w] if w != self.rows else self.xa
        np.copyto(xa[:, : self.d], self.images[rows], casting="unsafe")  # uint8 -> float, unscaled
        return xa

    def step(self, step: int, j: int, lr) -> tuple[float, bool]:
        coef = self.dtype(lr * self.s2)  # d(pixel-unit params) = coef * dL/dz.T @ xa
        if self.B == self.rows:  # one block: the common mini-batch case, kept free of extra calls
            xa = self._load(self.perm[j * self.B : (j + 1) * self.B], self.B)
            np.matmul(self.Va, xa.T, out=self.zt)  # (k, B) logits x @ W + b, transposed
            if self.kernel is not None:
                gap, loss_sum, G = self.kernel(self.zt, self.t[j], self.dtype(coef / self.B))
                if loss_sum is not None:
                    if gap > self.acct.nan.max_logit_gap:
                        self.acct.nan.max_logit_gap = gap
                    np.matmul(G, xa, out=self.gW)  # (k, d + 1)
                    self._update(self.gW, lr)
                    return loss_sum / self.B, False
            loss, bad, G = self._reference(step, j, coef)
            np.matmul(G, xa, out=self.gW)
            self._update(self.gW, lr)
            return loss, bad
        return self._blocked_step(step, j, lr, coef)

    def _blocked_step(self, step: int, j: int, lr, coef) -> tuple[float, bool]:
        """A large batch in row blocks: each block is converted once and serves both products."""
        B, rows, gW = self.B, self.rows, self.gW
        healthy = self.kernel is not None
        loss_sum, gap_max = 0.0, 0.0
        gW.fill(0)
        for start in range(0, B, rows):
            stop = min(start + rows, B)
            xa = self._load(self._block_rows(j, start, stop), stop - start)
            zt = np.matmul(self.Va, xa.T)  # (k, w); matmul into a strided view would skip BLAS
            self.zt[:, start:stop] = zt  # kept whole for the reference, if a block turns out unhealthy
            if healthy:
                t = self.t[start:stop] if self.full else self.t[j, start:stop]
                gap, part, G = self.kernel(zt, t, self.dtype(coef / B))
                if part is None:
                    healthy = False  # finish the forward pass; the reference takes the step
                    continue
                gap_max = max(gap_max, gap)
                loss_sum += part
                np.matmul(G, xa, out=self.gW_block)
                gW += self.gW_block
        if healthy:
            if gap_max > self.acct.nan.max_logit_gap:
                self.acct.nan.max_logit_gap = gap_max
            self._update(gW, lr)
            return loss_sum / B, False
        loss, bad, G = self._reference(step, j, coef)
        gW.fill(0)
        for start in range(0, B, rows):  # a second pass over the rows for the reference gradient
            stop = min(start + rows, B)
            xa = self._load(self._block_rows(j, start, stop), stop - start)
            np.matmul(G[:, start:stop], xa, out=self.gW_block)
            gW += self.gW_block
        self._update(gW, lr)
        return loss, bad

    def _reference(self, step: int, j: int, coef) -> tuple[float, bool, np.ndarray]:
        """The step by the reference loss and exact accounting; returns (loss, bad, coef * dL/dz.T)."""
        B = self.B
        if self.full:  # logits in storage order; the reference sees the batch in its drawn order
            idx = self.perm
            z = self.zt.T[idx]  # (B, k)
        else:
            idx = self.perm[j * B : (j + 1) * B]
            z = self.zt.T  # (B, k) view
        y = self.labels[idx]
        loss, dz = self.loss_fn(z, y)
        bad = self.acct.record(step, loss, z, dz.sum(axis=0), idx, y)
        if self.full:
            unperm = np.empty_like(dz)
            unperm[idx] = dz
            dz = unperm
        return loss, bad, np.multiply(dz.T, coef)  # (k, B)

    def _update(self, gW: np.ndarray, lr) -> None:
        if self.wd:
            self.V -= self.dtype(lr * self.wd) * self.V  # W -= lr * wd * W, in pixel units
        self.Va -= gW

    def finite(self) -> bool:
        return bool(np.isfinite(self.Va).all())

    def export(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(W, b)`` (d, k) and (k,) from parameters in this layout."""
        W = np.ascontiguousarray((params[:, : self.d] * self.kappa).T)
        return W, params[:, self.d] * self.kappa
