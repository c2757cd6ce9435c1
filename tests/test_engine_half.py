"""Half precision (mnist_cli.engine.half): exact rounding, GradScaler's rules, pure and mixed training, models on disk."""

import json

import numpy as np
import pytest

from mnist_cli.engine import batch_order, rngs, train
from mnist_cli.engine.half import GROWTH_INTERVAL, INIT_SCALE, LossScaler
from mnist_cli.errors import ModelFileError, SettingsError
from mnist_cli.losses import LOSSES
from mnist_cli.model import Model
from mnist_cli.rounding import DTYPES, Inputs, pixel_table, round_to
from mnist_cli.settings import LossScale, TrainConfig

F16, BF16 = DTYPES["float16"], DTYPES["bfloat16"]


def _cast(a, dtype):
    with np.errstate(over="ignore", invalid="ignore"):
        return a.astype(dtype).astype(np.float32)


@pytest.mark.parametrize("dtype", [F16, BF16], ids=["float16", "bfloat16"])
def test_round_to_is_the_cast_bit_for_bit(dtype):
    """Every float32 bit pattern class: random bits, the half format's own values, its midpoints (ties) and
    their neighbours, subnormals, overflow, +-0 and +-inf, NaN: the same bits as NumPy's/ml_dtypes' cast."""
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, size=1_000_000, dtype=np.uint64).astype(np.uint32)
    v = bits.view(np.float32)
    own = np.arange(2**16, dtype=np.uint16).view(dtype).astype(np.float32)
    own = own[np.isfinite(own)]
    mids = ((own[:-1].astype(np.float64) + own[1:]) / 2).astype(np.float32)
    scaled = (rng.standard_normal(200_000) * np.exp(rng.uniform(-30, 14, 200_000))).astype(np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, 65504, 65519.99, 65520, -65520, 2.0**-24, 2.0**-25, -(2.0**-25),
                        3 * 2.0**-26, 1e-45], np.float32)
    for a in (v, own, mids, np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(-np.inf)), scaled,
              special):
        want = _cast(a, dtype)
        with np.errstate(over="ignore", invalid="ignore"):  # as the trainer runs it
            got = round_to(a, dtype)
        same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
        assert same.all(), a[~same][:5]
        inplace = a.copy()
        with np.errstate(over="ignore", invalid="ignore"):
            round_to(inplace, dtype, out=inplace)
        np.testing.assert_array_equal(inplace.view(np.uint32)[~np.isnan(want)], want.view(np.uint32)[~np.isnan(want)])


@pytest.mark.parametrize("dtype", [F16, BF16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("scale", [1.0, 16.0, 255.0, 1e-3, 300.0])
def test_inputs_equal_rounding_each_pixel_times_the_scale(dtype, scale):
    pixels = np.random.default_rng(1).integers(0, 256, (50, 784), dtype=np.uint8)
    inputs = Inputs(scale, dtype, 50, 784)
    want = _cast(pixels.astype(np.float32) * np.float32(scale / 255.0), dtype)
    np.testing.assert_array_equal(inputs(pixels), want)
    np.testing.assert_array_equal(pixel_table(scale, dtype)[pixels], want)
    if dtype == F16 and scale == 1e-3:
        assert inputs.how == "table"  # float16 subnormals among the inputs: only the table is exact
    if scale == 255.0:
        assert inputs.how == "exact"  # raw pixels are integers, which both half formats hold to 256


def test_dynamic_loss_scale_follows_grad_scaler():
    s = LossScaler(LossScale.parse("dynamic"))
    assert s.active and s.scale == INIT_SCALE == 2.0**16
    assert s.update(False) and s.scale == 2.0**15  # a non-finite gradient: skip, halve
    for _ in range(GROWTH_INTERVAL - 1):
        assert not s.update(True)
    assert s.scale == 2.0**15
    assert not s.update(True) and s.scale == 2.0**16  # the 2000th finite step in a row doubles it
    s.update(True)
    assert s.update(False) and s.scale == 2.0**15 and s.good_steps == 0  # the streak restarts
    for _ in range(200):
        s.update(False)
    assert s.scale == 0.0  # a float32 scale, halved past its smallest subnormal
    fixed = LossScaler(LossScale.parse("1024"))
    assert fixed.update(False) and fixed.scale == 1024 and not fixed.update(True) and fixed.scale == 1024
    none = LossScaler(LossScale.parse("none"))
    assert not none.active and none.scale == 1 and not none.update(False)


def _reference_pure(images, labels, config, steps):
    """The pure half-precision loop written with NumPy's own casts (no bit tricks, no reused buffers)."""
    dtype = DTYPES[config.dtype]
    init_rng, order_rng = rngs(config.seed)
    model = Model.init(784, 10, config.init, dtype, init_rng, config.init_std)
    W, b = model.W.astype(np.float32), model.b.astype(np.float32)
    losses = []
    np_err = np.seterr(all="ignore")
    for idx in batch_order(len(images), config.batch_size, steps, order_rng):
        x = _cast(images[idx].astype(np.float32) * np.float32(config.input_scale / 255.0), dtype)
        z = _cast(x @ W + b, dtype).astype(dtype)
        loss, dz = LOSSES[config.loss](z, labels[idx].astype(np.intp))
        gW = _cast(x.T @ dz.astype(np.float32), dtype)
        gb = _cast(np.sum(dz.astype(np.float32), axis=0), dtype)
        with np.errstate(all="ignore"):
            lr = np.float32(dtype.type(config.lr))  # torch's add_: alpha in the tensor's dtype
            W, b = _cast(W - lr * gW, dtype), _cast(b - _cast(lr * gb, dtype), dtype)  # b: the product rounded too
        losses.append(loss)
    np.seterr(**np_err)
    return np.array(losses), W, b


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("loss", ["fused", "naive"])
def test_pure_half_training_equals_the_plain_cast_loop(mnist, dtype, loss):
    """The engine's bit arithmetic and reused buffers change no bit: losses and weights of 60 steps equal the
    loop written with casts, and the weights are the dtype's values."""
    images, labels = mnist.train_images[:3000], mnist.train_labels[:3000]
    config = TrainConfig(dtype=dtype, loss=loss, steps=60, init="normal", lr=0.3)
    r = train(images, labels, config)
    want_losses, W, b = _reference_pure(images, labels, config, 60)
    np.testing.assert_array_equal(r.losses, want_losses)
    assert r.model.W.dtype == DTYPES[dtype]
    np.testing.assert_array_equal(r.model.W.astype(np.float32), W)
    np.testing.assert_array_equal(r.model.b.astype(np.float32), b)


def test_float16_breaks_naive_where_mixed_precision_does_not(mnist):
    """float16's exp underflows past a gap of 17.3, so naive breaks at the tutorial's settings; under mixed
    precision the softmax runs in float32 and it does not; fused survives both."""
    images, labels = mnist.train_images[:5000], mnist.train_labels[:5000]
    runs = {(loss, precision): train(images, labels, TrainConfig(loss=loss, dtype="float16", precision=precision,
                                                                 steps=300))
            for loss in ("naive", "fused") for precision in ("pure", "mixed")}
    assert runs["naive", "pure"].nan.first_nan_loss_step is not None
    assert runs["fused", "pure"].nan.first_nonfinite_step is None
    assert runs["naive", "mixed"].nan.first_nonfinite_step is None
    assert runs["fused", "mixed"].nan.first_nonfinite_step is None
    assert runs["naive", "mixed"].model.W.dtype == np.float32  # float32 master weights
    assert runs["naive", "pure"].nan.loss_scale is None


def test_dynamic_scaling_skips_overflowing_steps_and_raw_pixels_overflow_the_product(mnist):
    images, labels = mnist.train_images[:3000], mnist.train_labels[:3000]
    raw = train(images, labels, TrainConfig(dtype="float16", precision="mixed", loss_scale="dynamic",
                                            input_scale=255, steps=50))
    nan = raw.nan
    assert nan.first_skipped_step == 1 and nan.steps_skipped >= 1  # x.T @ (2^16 dL/dz) passes 65504 at once
    assert nan.steps_nonfinite_grad >= nan.steps_skipped and nan.loss_scale < INIT_SCALE
    assert nan.overflow_logits > 0 and nan.first_nan_loss_step is not None  # then the float16 logits overflow
    assert raw.snapshot.loss_scale == INIT_SCALE
    healthy = train(images, labels, TrainConfig(dtype="float16", precision="mixed", loss_scale="dynamic", steps=50))
    assert healthy.nan.steps_skipped == 0 and healthy.nan.loss_scale == INIT_SCALE


@pytest.mark.parametrize("bad, needle", [
    (dict(precision="mixed"), "precision"),
    (dict(precision="mixed", dtype="float64"), "precision"),
    (dict(dtype="float16", loss_scale="dynamic"), "loss_scale"),
    (dict(dtype="float16", precision="mixed", loss_scale="0"), "loss_scale"),
    (dict(dtype="float16", precision="mixed", loss_scale="lots"), "loss_scale"),
    (dict(dtype="float16", input_scale=70000), "input_scale"),
])
def test_half_settings_that_cannot_work_are_refused(bad, needle):
    with pytest.raises(SettingsError, match=needle):
        TrainConfig(**bad).validate()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_models_save_and_load_bit_for_bit(mnist, tmp_path, dtype):
    r = train(mnist.train_images[:1000], mnist.train_labels[:1000], TrainConfig(dtype=dtype, steps=20))
    path = r.model.save(tmp_path / "m.npz")
    m = Model.load(path)
    assert m.W.dtype == DTYPES[dtype] and m.compute_dtype == dtype and "weights_dtype" not in m.meta
    np.testing.assert_array_equal(m.W.view(np.uint16), r.model.W.view(np.uint16))
    np.testing.assert_array_equal(m.logits(mnist.test_images[:500], 1.0).view(np.uint16),
                                  r.model.logits(mnist.test_images[:500], 1.0).view(np.uint16))


def test_bits_without_their_dtype_are_refused(tmp_path):
    path = tmp_path / "bits.npz"
    np.savez(path, W=np.zeros((784, 10), np.uint16), b=np.zeros(10, np.uint16), meta=np.array('{"config": {}}'))
    with pytest.raises(ModelFileError, match="weights_dtype"):
        Model.load(path)


def test_evaluate_counts_what_rounding_changed(mnist):
    from mnist_cli.scoring import evaluate_model

    r = train(mnist.train_images[:5000], mnist.train_labels[:5000], TrainConfig(steps=200))
    bf = r.model.as_dtype("bfloat16")  # the weights rounded to bfloat16
    report = evaluate_model(bf, mnist.test_images, mnist.test_labels, 1.0)
    z32 = Model(bf.W.astype(np.float32), bf.b.astype(np.float32)).logits(mnist.test_images, 1.0)  # the same, float32
    zbf = bf.logits(mnist.test_images, 1.0)
    changed = int(np.count_nonzero(np.argmax(z32, 1) != np.argmax(zbf, 1)))
    assert report["rounding"] == {"dtype": "bfloat16", "precision": "pure", "predictions_changed": changed,
                                  "accuracy_float32": pytest.approx(float(np.mean(np.argmax(z32, 1) == mnist.test_labels)))}
    assert changed > 0  # bfloat16's 8 bits move some predictions
    assert "rounding" not in evaluate_model(r.model, mnist.test_images, mnist.test_labels, 1.0)


def test_inputs_of_a_large_batch_are_rounded_slice_by_slice_alike(mnist):
    pixels = mnist.train_images[:5000]
    inputs = Inputs(1.0, F16, 5000, 784)
    assert inputs.how == "veltkamp" and inputs.c.shape[0] < 5000  # the scratch is a slice, not the batch
    np.testing.assert_array_equal(inputs(pixels), pixel_table(1.0, F16)[pixels])


# --- GradScaler's decision and torch.optim.SGD's half update, as PyTorch computes them ----------------


def _random_data(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 784), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_unscaling_overflow_is_applied_not_skipped(dtype):
    """At a loss scale below 2**-128 the float32 reciprocal 1/scale is inf: the scaled gradients are finite
    (tiny or 0), the unscaled ones inf or NaN. GradScaler takes found_inf on the scaled gradients, so it
    skips nothing and applies them; the emulation must too (it used to skip every step). From step 2 the
    loss is NaN, the scaled gradients too, and those steps are skipped."""
    images, labels = _random_data()
    r = train(images, labels, TrainConfig(dtype=dtype, precision="mixed", loss_scale="1e-40", steps=3))
    assert r.nan.steps_nonfinite_grad == 3  # the unscaled gradients, as the report counts them
    assert r.nan.params_nonfinite and r.nan.first_nonfinite_params_step == 1  # step 1 was applied
    assert r.nan.first_skipped_step == 2 and r.nan.steps_skipped == 2
    assert r.nan.first_nan_loss_step == 2
    assert r.nan.loss_scale == pytest.approx(float(np.float32(1e-40)))


def test_scaled_overflow_is_still_skipped():
    """A scaled gradient that overflows (raw pixels, scale 2**16, float16) is skipped and halves the scale."""
    images, labels = _random_data()
    r = train(images, labels, TrainConfig(dtype="float16", precision="mixed", loss_scale="dynamic",
                                          input_scale=255.0, lr=0.5, steps=1))
    assert r.nan.steps_skipped == 1 and r.nan.steps_nonfinite_grad == 1
    assert r.nan.loss_scale == 2.0**15 and not r.nan.params_nonfinite


@pytest.mark.torch
def test_gradscaler_checks_the_scaled_gradients():
    """The behaviour emulated above, in PyTorch itself (`make crosscheck` runs it, with torch installed)."""
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
    from mnist_cli.engine import Accounting
    from mnist_cli.engine.half import LowPrecisionSGD
    from mnist_cli.model import Model
    from mnist_cli.rounding import DTYPES

    images, labels = _random_data()
    config = TrainConfig(dtype=dtype, lr=lr)
    model = Model(W.astype(DTYPES[dtype]), b.astype(DTYPES[dtype]))
    acct = Accounting(dtype, 10, config.steps)
    return LowPrecisionSGD(images, labels.astype(np.intp), model, [config], [acct])


def test_pure_update_rounds_the_learning_rate_and_the_bias_product():
    """torch's ``add_(g, alpha=-lr)`` on bfloat16 tensors takes ``alpha`` in bfloat16 (0.1 -> 0.10009765625);
    the bias (10 entries, the scalar loop) rounds ``lr * g`` too. Values found by search, one case each."""
    W, b = np.full((784, 10), 0.75, np.float32), np.ones(10, np.float32)
    e = _engine("bfloat16", 0.1, W, b)
    e._update(np.full((784, 10), 0.56640625, np.float32), np.zeros(10, np.float32), np.float32(0.1))
    assert float(e.W[0, 0, 0]) == 0.69140625  # rnd(0.75 - rnd(0.1) * g); 0.1 itself would give 0.6953125
    e = _engine("bfloat16", 5.0, W, b)
    e._update(np.zeros((784, 10), np.float32), np.full(10, 0.008972168, np.float32), np.float32(5.0))
    assert float(e.b[0, 0]) == 0.953125  # rnd(1 - rnd(5 g)); rnd(1 - 5 g) would be 0.95703125


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("lr", [0.1, 0.3, 5.0])
def test_pure_update_is_torch_sgd(dtype, lr):
    """The pure update, bit for bit, against ``torch.optim.SGD`` on parameters of the model's shapes."""
    torch = pytest.importorskip("torch")
    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        pytest.skip("without SIMD torch rounds W's product too (see mnist_cli.engine.half)")
    from mnist_cli.rounding import round_to

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
    np.testing.assert_array_equal(e.W[0], Wt.detach().float().numpy().T)
    np.testing.assert_array_equal(e.b[0], bt.detach().float().numpy())


def test_the_loss_scale_enters_before_the_log_backward():
    """Autograd divides the *scaled* upstream gradient by p: (2^16 / n) / p overflows float32 at a gap where
    (1 / n) / p does not; scaling dL/dz afterwards would hide that (and GradScaler would not skip). clipped
    passes no gradient below its floor of 1e-10, so 2^16 / p stays finite there."""
    z = np.zeros((1, 10), np.float32)
    z[0, 3] = -85.0  # the target 85 below the others: p ~ 1.2e-38, 1/p ~ 8e37, 2^16/p ~ 5e42
    y = np.array([3])
    _, plain = LOSSES["naive"](z, y)
    _, scaled = LOSSES["naive"](z, y, 2.0**16)
    assert np.isfinite(plain).all() and not np.isfinite(scaled).all()
    assert np.isfinite(LOSSES["clipped"](z, y, 2.0**16)[1]).all()
    healthy = np.array([[2.0, -1.0, 0.5, 0.0, 1.0, -2.0, 0.3, 0.1, -0.5, 0.2]], np.float32)
    for name in LOSSES:  # where nothing overflows the scaled gradient is the gradient times the scale
        np.testing.assert_array_equal(LOSSES[name](healthy, y, 2.0**16)[1], LOSSES[name](healthy, y)[1] * 2**16)


@pytest.mark.torch
def test_scaled_naive_backward_overflows_where_torchs_does():
    """The same example through PyTorch: backward of 2^16 * naive loss, the pattern of dL/dz."""
    torch = pytest.importorskip("torch")
    z = np.zeros((100, 10), np.float32)
    z[:, 3] = np.linspace(-75, -95, 100)  # the target from 75 to 95 below the others, across the window
    y = np.full(100, 3)
    zt = torch.from_numpy(z.copy()).requires_grad_()
    loss = -(torch.nn.functional.one_hot(torch.from_numpy(y), 10) * torch.log(torch.softmax(zt, 1))).sum(1).mean()
    (loss * 2.0**16).backward()
    _, ours = LOSSES["naive"](z, y, 2.0**16)
    np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(zt.grad.numpy()))
    assert not np.isfinite(ours).all() and np.isfinite(ours).any()  # the window is inside the sweep


def test_cli_trains_saves_and_evaluates_in_half_precision(cli, tmp_path):
    model = tmp_path / "m.npz"
    r = cli("train", "--dtype", "bfloat16", "--precision", "mixed", "--loss-scale", "dynamic", "--steps", "40",
            "--train-limit", "2000", "--save", str(model), "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["changed"] == {"dtype": "bfloat16", "precision": "mixed", "loss_scale": "dynamic", "steps": 40,
                              "train_limit": 2000, "mixed_policy": "float32-softmax"}
    assert doc["nan"]["loss_scale"] == INIT_SCALE
    r = cli("evaluate", str(model), "--json")
    assert r.exit_code == 0, r.output
    ev = json.loads(r.output)
    assert ev["rounding"]["dtype"] == "bfloat16" and ev["rounding"]["precision"] == "mixed"
    r = cli("evaluate", str(model), "--dtype", "float16")  # the same weights computing in pure float16
    assert r.exit_code == 0 and "float16, pure precision" in r.output
    plain = tmp_path / "f32.npz"
    assert cli("train", "--steps", "5", "--train-limit", "500", "--save", str(plain)).exit_code == 0
    r = cli("evaluate", str(plain), "--precision", "mixed")  # mixed needs a half dtype: refused, one line
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "--dtype float16 or bfloat16" in r.output
