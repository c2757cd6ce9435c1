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


def _engine(dtype: str, lr: float, W: np.ndarray, b: np.ndarray):
    """A pure half-precision engine holding ``W`` (784, 10) and ``b`` (10,)."""
    from mnist_cli.losses import LOSSES
    from mnist_cli.lowp import LowPrecisionSGD
    from mnist_cli.model import Model
    from mnist_cli.precision import DTYPES
    from mnist_cli.train import Accounting

    images, labels = _data()
    config = TrainConfig(dtype=dtype, lr=lr)
    model = Model(W.astype(DTYPES[dtype]), b.astype(DTYPES[dtype]))
    return LowPrecisionSGD(images, labels.astype(np.intp), model, config, LOSSES["fused"], Accounting(dtype, 10))


def test_pure_update_rounds_the_learning_rate_and_the_bias_product():
    """torch's ``add_(g, alpha=-lr)`` on bfloat16 tensors takes ``alpha`` in bfloat16 (0.1 -> 0.10009765625);
    the bias (10 entries, the scalar loop) rounds ``lr * g`` too. Values found by search, one case each."""
    W, b = np.full((784, 10), 0.75, np.float32), np.ones(10, np.float32)
    e = _engine("bfloat16", 0.1, W, b)
    e._update(np.full((784, 10), 0.56640625, np.float32), np.zeros(10, np.float32), np.float32(0.1))
    assert float(e.W[0, 0]) == 0.69140625  # rnd(0.75 - rnd(0.1) * g); 0.1 itself would give 0.6953125
    e = _engine("bfloat16", 5.0, W, b)
    e._update(np.zeros((784, 10), np.float32), np.full(10, 0.008972168, np.float32), np.float32(5.0))
    assert float(e.b[0]) == 0.953125  # rnd(1 - rnd(5 g)); rnd(1 - 5 g) would be 0.95703125


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("lr", [0.1, 0.3, 5.0])
def test_pure_update_is_torch_sgd(dtype, lr):
    """The pure update, bit for bit, against ``torch.optim.SGD`` on parameters of the model's shapes."""
    torch = pytest.importorskip("torch")
    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        pytest.skip("without SIMD torch rounds W's product too (see mnist_cli.lowp)")
    from mnist_cli.lowp import round_to

    rng = np.random.default_rng(3)
    W, b = round_to(rng.normal(0, 0.05, (784, 10)).astype(np.float32), dtype), round_to(rng.normal(0, 0.1, 10), dtype)
    gW = round_to(rng.normal(0, 0.01, (784, 10)).astype(np.float32), dtype)
    gb = round_to(rng.normal(0, 0.01, 10).astype(np.float32), dtype)
    e = _engine(dtype, lr, W, b)
    e._update(gW.copy(), gb.copy(), np.float32(lr))
    tdt = getattr(torch, dtype)
    Wt = torch.nn.Parameter(torch.from_numpy(W.T.copy()).to(tdt))  # nn.Linear's layout
    bt = torch.nn.Parameter(torch.from_numpy(b.copy()).to(tdt))
    Wt.grad, bt.grad = torch.from_numpy(gW.T.copy()).to(tdt), torch.from_numpy(gb.copy()).to(tdt)
    torch.optim.SGD([Wt, bt], lr=lr).step()
    np.testing.assert_array_equal(e.W, Wt.detach().float().numpy().T)
    np.testing.assert_array_equal(e.b, bt.detach().float().numpy())
