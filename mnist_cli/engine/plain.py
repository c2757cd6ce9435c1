"""The plain SGD loop: one NumPy call per formula, the reference the other engines are tested against."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mnist_cli.engine.base import BatchesTaken


class PlainSGD(BatchesTaken):
    """The loop as the tutorial writes it, one NumPy call per formula: the reference for ``FastSGD``.

    ``x = scale_pixels(batch)``, ``z = x @ W + b``, ``loss, dz = loss_fn(z, y)``,
    ``W -= lr * (x.T @ dz + weight_decay * W)``, ``b -= lr * sum(dz)``; every step accounted.
    """

    def __init__(self, images, labels, model, config, loss_fn: Callable, acct):
        self.images, self.labels, self.loss_fn, self.acct = images, labels, loss_fn, acct
        self.params = np.concatenate([model.W, model.b[None, :]])  # (d + 1, k) [W; b], averaged as one
        self.W, self.b = self.params[:-1], self.params[-1]  # views: the updates below change params
        self.B = config.batch_size
        self.dtype = model.W.dtype.type
        self.scale = self.dtype(config.input_scale / 255.0)
        self.wd = self.dtype(config.weight_decay)
        self.x = np.empty((self.B, images.shape[1]), dtype=self.dtype)  # (B, 784) reused

    def step(self, step: int, j: int, lr) -> tuple[float, bool]:
        W, b = self.W, self.b
        idx, y = self.take(j)
        np.multiply(self.images[idx], self.scale, out=self.x, dtype=self.dtype)  # (B, 784) gather + scale
        z = self.x @ W  # (B, k)
        z += b
        loss, dz = self.loss_fn(z, y)
        gb = dz.sum(axis=0)  # (k,) dL/db
        bad = self.acct.record(step, loss, z, gb, idx, y)
        if self.acct.halts(bad):
            return loss, bad
        gW = self.x.T @ dz  # (784, k)
        if self.wd:
            gW += self.wd * W
        W -= lr * gW
        b -= lr * gb
        return loss, bad

    def finite(self) -> bool:
        return bool(np.isfinite(self.W).all() and np.isfinite(self.b).all())

    def export(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return params[:-1], params[-1]

    def close(self) -> None:
        pass


