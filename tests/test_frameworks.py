"""The framework profiles (mnist_cli.frameworks) hold what the probes measured in the real frameworks."""

import json
import math
from pathlib import Path

import pytest

from mnist_cli.errors import ConfigError
from mnist_cli.frameworks import DEFAULT_FRAMEWORK, PROFILES, Rules, check_probes, profile
from mnist_cli.losses import underflow_limit

PROBES = Path(__file__).resolve().parents[1] / "scripts" / "probes.json"


@pytest.fixture(scope="module")
def probes():
    return json.loads(PROBES.read_text())


def test_every_profile_agrees_with_the_recorded_probes(probes):
    assert check_probes(probes) == []


def test_a_profile_that_disagrees_with_a_probe_is_caught(probes):
    """The check can fail: flip a measured fact and it is named."""
    probes["tensorflow"]["settings"]["onednn=0,eager"]["dtypes"]["float32"]["ftz"] = False
    probes["torch"]["log_backward"]["order"] = "grad * reciprocal(x)"
    found = check_probes(probes)
    assert any("tensorflow onednn=0,eager float32: ftz/daz" in p for p in found)
    assert any("torch default: log backward reciprocal" in p for p in found)


def test_the_probes_name_the_versions_the_profiles_record(probes):
    assert probes["torch"]["version"] in PROFILES["torch"].measured_with
    assert probes["tensorflow"]["version"] in PROFILES["tensorflow"].measured_with
    assert probes["tensorflow"]["keras_version"] in PROFILES["tensorflow"].measured_with


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_the_numpy_profile_is_the_labs_pure_ieee_arithmetic(dtype):
    """The default profile computes what the lab computed before profiles: same limits, nothing emulated."""
    numpy = PROFILES["numpy"]
    assert DEFAULT_FRAMEWORK == "numpy" and profile(None) is numpy
    assert numpy.rules(dtype).plain
    assert numpy.underflow_limit(dtype) == underflow_limit(dtype)


def test_tensorflow_flushes_subnormals_so_its_float32_gap_is_87_not_104():
    tf, torch = PROFILES["tensorflow"], PROFILES["torch"]
    assert tf.underflow_limit("float32") == pytest.approx(-math.log(2.0**-126))  # 87.34
    assert torch.underflow_limit("float32") == pytest.approx(103.97, abs=0.01)
    assert tf.underflow_limit("float64") == pytest.approx(708.40, abs=0.01)
    assert tf.underflow_limit("float16") == torch.underflow_limit("float16")  # float16 is not flushed in TF


def test_an_unknown_framework_is_a_typed_error_naming_the_choices():
    with pytest.raises(ConfigError, match="numpy, torch, tensorflow"):
        profile("jax")


def test_rules_default_to_the_plain_arithmetic():
    assert Rules().plain and not Rules(ftz=True).plain and not Rules(softmax="float32_once").plain


def test_a_profile_whose_float32_rules_are_plain_trains_as_numpy_does_and_shares_its_stack(mnist):
    """PyTorch's float32/float64 arithmetic is the plain one (its measured rules), so a ``--framework torch`` run takes
    the fast engine and the numpy runs' stack: its numbers are those of the numpy profile, its record names torch.
    TensorFlow's float32 flushes subnormals: its own engine and stack."""
    import numpy as np

    from mnist_cli.engine import TrainConfig, train
    from mnist_cli.engine.base import emulated_framework
    from mnist_cli.engine.stacked import stack_key, stackable, train_stack

    assert PROFILES["torch"].rules("float32").plain and PROFILES["torch"].rules("float64").plain
    base = dict(steps=30, lr=2.0, loss="naive")
    numpy_run, torch_run = (TrainConfig(framework=f, **base) for f in ("numpy", "torch"))
    tf_run = TrainConfig(framework="tensorflow", **base)
    assert emulated_framework(torch_run) is None and emulated_framework(tf_run) == "tensorflow"
    assert emulated_framework(TrainConfig(framework="torch", dtype="float16")) == "torch"  # half: emulated
    assert stackable(torch_run) and not stackable(tf_run) and stack_key(torch_run) == stack_key(numpy_run)
    alone = [train(mnist.train_images, mnist.train_labels, c) for c in (numpy_run, torch_run)]
    stacked = train_stack(mnist.train_images, mnist.train_labels, [numpy_run, torch_run])
    one = train_stack(mnist.train_images, mnist.train_labels, [numpy_run])[0]  # the stack's own rounding
    for runs, ref in ((alone, alone[0]), (stacked, one)):
        for r in runs:
            np.testing.assert_array_equal(r.losses, ref.losses)
            np.testing.assert_array_equal(r.model.W, ref.model.W)
            assert r.nan.to_dict() == ref.nan.to_dict()
    assert stacked[1].extras["stack"] == 2
    assert alone[1].model.meta["config"]["framework"] == "torch" == stacked[1].config.framework


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_pure_half_update_rounds_as_each_framework_does(mnist, dtype):
    """torch's ``add_`` rounds ``W - lr g`` once (computed in float32); a TF user's ``assign_sub(lr * g)`` rounds
    ``lr g`` first (``Rules.update``, scripts/probes.json). Both round ``b``'s product. The two differ on some entries."""
    import numpy as np

    from mnist_cli.engine import TrainConfig
    from mnist_cli.engine.base import initial_model, run_accounting
    from mnist_cli.engine.half import LowPrecisionSGD
    from mnist_cli.rounding import round_to

    rng = np.random.default_rng(3)
    rnd = lambda a: round_to(np.asarray(a, np.float32), dtype)
    W0, gW, b0, gb = (rnd(rng.normal(0, s, shape)) for s, shape in ((0.05, (784, 10)), (0.01, (784, 10)),
                                                                   (0.05, 10), (0.01, 10)))
    lr = rnd(np.float32(0.37))
    got = {}
    for fw in ("torch", "tensorflow"):
        c = TrainConfig(dtype=dtype, framework=fw, lr=0.37, steps=1)
        model = initial_model(c, 784, 10)[0]
        e = LowPrecisionSGD(mnist.train_images, mnist.train_labels, model, [c], [run_accounting(c, 1, 10)])
        e.W[0], e.b[0] = W0, b0
        e._update(gW[None].copy(), gb[None].copy(), np.array([0.37], np.float32)[:, None, None])
        got[fw] = e.W[0].copy(), e.b[0].copy()
    np.testing.assert_array_equal(got["torch"][0], rnd(W0 - lr * gW))
    np.testing.assert_array_equal(got["tensorflow"][0], rnd(W0 - rnd(lr * gW)))
    assert np.count_nonzero(got["torch"][0] != got["tensorflow"][0]) > 0
    for fw in got:
        np.testing.assert_array_equal(got[fw][1], rnd(b0 - rnd(lr * gb)))
