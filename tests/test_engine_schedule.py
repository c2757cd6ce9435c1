"""Training on the real MNIST: tutorial accuracy, the NaN story, reproducibility, identical batches."""

import hashlib
import math

import numpy as np
import pytest

from mnist_cli.engine import batch_order, rngs, train
from mnist_cli.losses import healthy_gap, softmax, underflow_limit
from mnist_cli.rounding import DTYPES
from mnist_cli.scoring import score
from mnist_cli.settings import MAX_STEPS, TrainConfig


def run(mnist, **kw):
    result = train(mnist.train_images, mnist.train_labels, TrainConfig(**kw))
    return result, score(result.model, mnist.test_images, mnist.test_labels, result.config.input_scale).accuracy


@pytest.mark.parametrize("loss", ["fused", "naive"])
def test_tutorial_defaults_reach_tutorial_accuracy(mnist, loss):
    result, acc = run(mnist, loss=loss)
    assert acc >= 0.917
    assert not result.nan.any_nonfinite
    assert result.steps == 1000 and len(result.losses) == 1000
    assert result.losses[0] == pytest.approx(math.log(10), rel=1e-6)  # zeros init: uniform softmax
    assert result.losses[-50:].mean() < result.losses[0] / 4  # it learned


def test_raw_pixels_break_naive_but_not_fused(mnist):
    naive, naive_acc = run(mnist, loss="naive", input_scale=255)
    fused, fused_acc = run(mnist, loss="fused", input_scale=255)
    assert naive.nan.first_nan_loss_step is not None and naive.nan.first_nan_loss_step <= 3
    assert naive.nan.first_nonfinite_grad_step <= 3
    assert naive.nan.params_nonfinite and not naive.model.finite
    assert np.isnan(naive.losses[naive.nan.first_nan_loss_step - 1 :]).all()  # NaN stays
    assert naive.nan.max_logit_gap > 103  # the float32 limit of exp
    assert naive_acc < 0.2  # NaN weights: argmax of NaN rows is class 0
    assert not fused.nan.any_nonfinite and fused.model.finite
    assert fused.nan.underflow_probs > 0  # fused saw underflow too, harmlessly
    assert fused_acc > 0.8
    snap = naive.snapshot
    assert snap.step == naive.nan.first_nonfinite_step
    assert snap.logits.shape == (100, 10) and (snap.labels == mnist.train_labels[snap.indices]).all()


def test_large_learning_rate_breaks_naive_float32_but_not_float64(mnist):
    r32, _ = run(mnist, loss="naive", lr=5.0, steps=50)
    r64, _ = run(mnist, loss="naive", lr=5.0, steps=50, dtype="float64")
    assert r32.nan.first_nan_loss_step is not None and r32.nan.first_nan_loss_step <= 10
    assert r64.nan.first_nan_loss_step is None or r64.nan.first_nan_loss_step > r32.nan.first_nan_loss_step
    assert r64.model.W.dtype == np.float64 and r32.model.W.dtype == np.float32


def test_same_seed_same_numbers_and_loss_independent_order(mnist):
    a, acc_a = run(mnist, loss="fused", steps=200, init="normal", seed=7)
    b, acc_b = run(mnist, loss="fused", steps=200, init="normal", seed=7)
    c, _ = run(mnist, loss="naive", steps=200, init="normal", seed=7)
    d, _ = run(mnist, loss="fused", steps=200, init="normal", seed=8)
    np.testing.assert_array_equal(a.model.W, b.model.W)
    np.testing.assert_array_equal(a.losses, b.losses)
    assert acc_a == acc_b and a.nan.to_dict() == b.nan.to_dict()
    assert a.order_digest == c.order_digest and a.init_digest == c.init_digest  # loss alone differs
    assert a.order_digest != d.order_digest and a.init_digest != d.init_digest


def test_naive_and_fused_train_identically_when_healthy(mnist):
    a, _ = run(mnist, loss="fused", steps=100)
    b, _ = run(mnist, loss="naive", steps=100)
    np.testing.assert_allclose(a.losses, b.losses, rtol=1e-4)
    np.testing.assert_allclose(a.model.W, b.model.W, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
@pytest.mark.parametrize("kw", [dict(), dict(full_batch=True, train_limit=3000, steps=5)], ids=["batch 100", "full batch"])
def test_stop_on_nan_keeps_the_last_healthy_parameters(mnist, fast, kw):
    """The non-finite step is counted but its update is not applied: the model is the one of the step before."""
    r, _ = run(mnist, loss="naive", input_scale=255, stop_on_nan=True, fast=fast, **kw)
    assert r.stopped_early and r.steps == r.nan.first_nonfinite_step == 2
    assert r.nan.steps_nan_loss == 1 and r.nan.steps_nonfinite_grad == 1 and math.isnan(r.losses[-1])
    assert not r.nan.params_nonfinite and r.nan.first_nonfinite_params_step is None and r.model.finite
    healthy, _ = run(mnist, loss="naive", input_scale=255, fast=fast, **{**kw, "steps": r.steps - 1})
    np.testing.assert_array_equal(r.model.W, healthy.model.W)
    np.testing.assert_array_equal(r.model.b, healthy.model.b)
    np.testing.assert_array_equal(r.losses[:-1], healthy.losses)


ORDERS = {
    "n 10, batch 3, remainder skipped": dict(train_limit=10, batch_size=3, steps=7),
    "epochs": dict(train_limit=250, batch_size=100, epochs=3),
    "batch == n, one product": dict(train_limit=100, batch_size=100, steps=3),
    "full batch in row groups": dict(train_limit=1300, full_batch=True, steps=2),
    "batch 130 in two groups": dict(train_limit=400, batch_size=130, steps=7),
    "stop on nan": dict(loss="naive", input_scale=255, stop_on_nan=True, seed=3),
}


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
@pytest.mark.parametrize("kw", ORDERS.values(), ids=ORDERS.keys())
def test_the_trainer_sees_the_batches_batch_order_yields(mnist, fast, kw):
    """batch_order() is the documented order: each run's order digest is the sha256 of the examples its
    engine consumed, step by step: the (index, label) pairs of each batch in index order, as int64
    ``index * 256 + label``. The batches are a fresh permutation per epoch with the remainder skipped."""
    r = train(mnist.train_images, mnist.train_labels, TrainConfig(fast=fast, **kw))
    n, B = kw.get("train_limit", len(mnist.train_labels)), r.config.batch_size
    batches = list(batch_order(n, B, r.steps, rngs(r.config.seed)[1]))
    assert len(batches) == r.steps and all(len(b) == B for b in batches)
    digest = hashlib.sha256()
    for batch in batches:
        pairs = sorted((int(i), int(mnist.train_labels[i])) for i in batch)
        digest.update(np.array([i * 256 + y for i, y in pairs], dtype=np.int64).tobytes())
    assert r.order_digest == digest.hexdigest()
    per_epoch = n // B
    for e in range(0, len(batches), per_epoch):
        epoch = np.concatenate(batches[e : e + per_epoch])
        assert len(set(epoch.tolist())) == len(epoch) and epoch.min() >= 0 and epoch.max() < n
    if kw.get("stop_on_nan"):
        assert r.stopped_early and 1 < r.steps < 1000
        np.testing.assert_array_equal(r.snapshot.indices, batches[-1])  # the batch it stopped on


@pytest.mark.parametrize("name", DTYPES)
def test_underflow_gap_and_the_healthy_bound(name):
    """The report's limit is where exp() reaches 0; at gaps within the healthy bound no probability is 0."""
    dtype = DTYPES[name].type
    limit, v = underflow_limit(dtype), dtype(underflow_limit(dtype))  # the gaps the dtype holds either side of it
    above = v if v > limit else np.nextafter(v, dtype(np.inf))
    below = v if v < limit else np.nextafter(v, dtype(0))
    assert np.exp(-above) == 0 < np.exp(-below)
    k = 10
    bound = healthy_gap(name, k)
    assert bound == pytest.approx(underflow_limit(dtype) - math.log(2 * k), abs=1e-9)  # p = e / s, s <= k
    g = dtype(bound)
    g = np.nextafter(g, dtype(0)) if g > bound else g  # the largest gap in the dtype within the bound
    worst = np.zeros((1, k), dtype)  # k - 1 logits at the max (the largest sum), one the whole gap below
    worst[0, 0] = -g
    assert (softmax(worst) > 0).all()
    rng = np.random.default_rng(0)  # and rows of gaps just within the bound, the rest anywhere between
    z = rng.uniform(-1, 0, (2000, k)) * rng.uniform(g - 1, g, (2000, 1))
    z[:, 0], z[:, 1] = 0, -g
    z = z.astype(dtype)
    assert (np.max(z, axis=1) - np.min(z, axis=1) <= bound).all() and (softmax(z) > 0).all()


def test_epochs_and_train_limit(mnist):
    r, acc = run(mnist, train_limit=1000, epochs=2, batch_size=100)
    assert r.steps == 20
    assert acc > 0.5


@pytest.mark.parametrize("bad", [dict(lr=0), dict(lr=-1), dict(lr=math.inf), dict(batch_size=0),
                                 dict(loss="nope"), dict(dtype="float8"), dict(steps=0), dict(input_scale=0),
                                 dict(weight_decay=math.nan), dict(weight_decay=math.inf), dict(weight_decay=-1e-3),
                                 dict(lr_decay=math.nan), dict(lr_decay=math.inf), dict(lr_decay=0),
                                 dict(steps=MAX_STEPS + 1)])
def test_bad_configs_are_refused(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad).validate()


def test_too_many_steps_from_epochs_are_refused_before_allocating():
    """Epochs become steps only in train(): the cap is checked there too, before any step array."""
    images, labels = np.zeros((1000, 784), np.uint8), np.zeros(1000, np.uint8)
    config = TrainConfig(epochs=10**9)  # 10 batches an epoch: 1e10 steps
    config.validate()
    with pytest.raises(ValueError, match="lower steps or epochs"):
        train(images, labels, config)
    train(images, labels, TrainConfig(epochs=1, steps=None))  # 10 steps: fine

