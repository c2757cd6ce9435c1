"""mnist_cli.lowp: the loss scaler decides as torch.amp.GradScaler does, on the scaled gradients."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_cli.train import TrainConfig, train


def _data(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 784), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_unscaling_overflow_is_applied_not_skipped(dtype):
    """At a loss scale below 2**-128 the float32 reciprocal 1/scale is inf: the scaled gradients are finite
    (tiny or 0), the unscaled ones inf or NaN. GradScaler takes found_inf on the scaled gradients, so it
    skips nothing and applies them; the emulation must too (it used to skip every step). From step 2 the
    loss is NaN, the scaled gradients too, and those steps are skipped."""
    images, labels = _data()
    r = train(images, labels, TrainConfig(dtype=dtype, precision="mixed", loss_scale="1e-40", steps=3))
    assert r.nan.steps_nonfinite_grad == 3  # the unscaled gradients, as the report counts them
    assert r.nan.params_nonfinite and r.nan.first_nonfinite_params_step == 1  # step 1 was applied
    assert r.nan.first_skipped_step == 2 and r.nan.steps_skipped == 2
    assert r.nan.first_nan_loss_step == 2
    assert r.nan.loss_scale == pytest.approx(float(np.float32(1e-40)))


def test_scaled_overflow_is_still_skipped():
    """A scaled gradient that overflows (raw pixels, scale 2**16, float16) is skipped and halves the scale."""
    images, labels = _data()
    r = train(images, labels, TrainConfig(dtype="float16", precision="mixed", loss_scale="dynamic",
                                          input_scale=255.0, lr=0.5, steps=1))
    assert r.nan.steps_skipped == 1 and r.nan.steps_nonfinite_grad == 1
    assert r.nan.loss_scale == 2.0**15 and not r.nan.params_nonfinite


def test_gradscaler_checks_the_scaled_gradients():
    """The behaviour emulated above, in PyTorch itself (skipped without torch)."""
    torch = pytest.importorskip("torch")
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = torch.optim.SGD([w], lr=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=1e-40)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = (w * torch.tensor([1e-3, 0.0])).sum()
    scaler.scale(loss).backward()
    assert torch.isfinite(w.grad).all()  # scaled: tiny and 0
    scaler.step(opt)  # unscales by 1/scale = inf: inf and NaN, not found
    scaler.update()
    assert not torch.isfinite(w).any()
    assert scaler.get_scale() == pytest.approx(float(np.float32(1e-40)))  # no backoff: nothing was found
