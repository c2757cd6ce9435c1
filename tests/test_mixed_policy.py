"""Mixed-precision policies (issue 19): which ops a profile's policy computes in float32, where the loss then
computes, the profile's loss scaler, and the refusals of a policy that is not the profile's."""

import json

import numpy as np
import pytest

from mnist_cli.engine import train
from mnist_cli.engine.base import loss_dtype, with_policy
from mnist_cli.errors import SettingsError
from mnist_cli.frameworks import PROFILES
from mnist_cli.losses import LOSSES
from mnist_cli.settings import LOSS_NAMES, MIXED_POLICY_NAMES, TrainConfig


def _data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 784), dtype=np.uint8), rng.integers(0, 10, n)


def _cfg(**kw):
    base = dict(dtype="float16", precision="mixed", steps=1, lr=0.5, loss="naive")
    return TrainConfig(**{**base, **kw})


def test_every_declared_policy_is_computable_for_every_loss():
    """Each policy's float32 list either holds a loss's first op (then all of it is float32) or none of its ops."""
    names = []
    for prof in PROFILES.values():
        assert prof.mixed in prof.mixed_policies
        for name, ops in prof.mixed_policies.items():
            names.append(name)
            for loss in LOSS_NAMES:
                assert LOSSES[loss].mixed_dtype(ops, "float16") in ("float32", "float16")
    assert tuple(names) == MIXED_POLICY_NAMES


def test_where_each_policy_computes_each_loss():
    """CUDA autocast (and the numpy profile's): every loss in float32; CPU autocast: only cross_entropy; Keras:
    none (measured: scripts/probes.json, the torch autocast cpu table, checked by check_probes)."""
    def where(fw, policy, loss, dtype="float16"):
        return loss_dtype(with_policy(_cfg(framework=fw, mixed_policy=policy, loss=loss, dtype=dtype)))

    for loss in LOSS_NAMES:
        assert where("numpy", "", loss) == where("torch", "autocast-cuda", loss) == "float32"
        assert where("tensorflow", "", loss) == "float16"
        assert where("tensorflow", "", loss, "bfloat16") == "bfloat16"
    assert where("torch", "autocast-cpu", "fused") == "float32"
    assert where("torch", "autocast-cpu", "naive") == where("torch", "autocast-cpu", "clipped") == "float16"
    with pytest.raises(ValueError, match="not cross_entropy"):
        LOSSES["fused"].mixed_dtype(("nll_loss",), "float16")


def test_the_default_policy_is_the_profiles_and_follows_the_dtype():
    assert with_policy(_cfg(framework="torch")).mixed_policy == PROFILES["torch"].mixed == "autocast-cuda"
    assert with_policy(_cfg(framework="tensorflow")).mixed_policy == "mixed_float16"
    assert with_policy(_cfg(framework="tensorflow", dtype="bfloat16")).mixed_policy == "mixed_bfloat16"
    assert with_policy(_cfg(precision="pure")).mixed_policy == ""  # a pure run follows no policy


@pytest.mark.parametrize("kw, names", [
    (dict(framework="torch", mixed_policy="mixed_float16"), ("mixed_policy", "framework")),
    (dict(framework="numpy", mixed_policy="autocast-cpu"), ("mixed_policy", "framework")),
    (dict(framework="tensorflow", mixed_policy="mixed_float16", dtype="bfloat16"), ("mixed_policy", "dtype")),
])
def test_a_policy_of_another_profile_or_dtype_is_refused(kw, names):
    with pytest.raises(SettingsError) as exc:
        train(*_data(), _cfg(**kw))
    assert exc.value.settings == names and "\n" not in str(exc.value)


def test_a_policy_without_mixed_precision_is_refused():
    with pytest.raises(SettingsError) as exc:
        _cfg(precision="pure", mixed_policy="autocast-cpu").validate()
    assert exc.value.settings == ("mixed_policy", "precision")
    with pytest.raises(SettingsError):
        _cfg(mixed_policy="autocast-mps").validate()


@pytest.mark.parametrize("loss", ["naive", "clipped"])
def test_cpu_autocast_computes_naive_as_pure_half_and_cuda_autocast_as_float32(loss):
    """From the zeros init, step 1's logits are the same in pure and mixed precision (b = 0, W = 0): CPU
    autocast's loss is the pure float16 run's bit for bit, CUDA autocast's the float32 loss of those logits."""
    X, y = _data()
    first = {}
    for name, kw in {"pure": dict(precision="pure"), "cpu": dict(mixed_policy="autocast-cpu"),
                     "cuda": dict(mixed_policy="autocast-cuda")}.items():
        r = train(X, y, _cfg(framework="torch", loss=loss, steps=1, **kw))
        first[name] = r.losses[0]
    assert first["cpu"] == first["pure"]
    z = np.zeros((100, 10), np.float32)  # every row's p uniform: the loss does not depend on the labels
    assert first["cuda"] == np.float32(LOSSES[loss](z, y[:100], framework="torch")[0])
    assert first["cpu"] == np.float32(LOSSES[loss](z.astype(np.float16), y[:100], framework="torch")[0])
    assert first["cpu"] != first["cuda"]  # log(0.1) rounded to float16, or not


def test_the_half_policy_counts_zero_probabilities_at_the_half_limits():
    """A run whose loss computes in float16 (CPU autocast's naive) reports float16's underflow limit, 17.3;
    CUDA autocast's the float32 one."""
    from mnist_cli.frameworks import profile

    cpu = with_policy(_cfg(framework="torch", mixed_policy="autocast-cpu"))
    cuda = with_policy(_cfg(framework="torch", mixed_policy="autocast-cuda"))
    assert round(profile("torch").underflow_limit(loss_dtype(cpu)), 1) == 17.3
    assert round(profile("torch").underflow_limit(loss_dtype(cuda)), 1) == 104.0
    X, y = _data(2000)
    r = train(X, y, TrainConfig(**{**cpu.__dict__, "steps": 30, "lr": 2.0}))
    assert r.nan.underflow_probs > 0 and r.nan.max_logit_gap > 17.3


@pytest.mark.parametrize("fw", ["torch", "tensorflow", "numpy"])
def test_the_dynamic_scaler_starts_at_the_profiles_scale(fw):
    """GradScaler's 2**16, Keras LossScaleOptimizer's 2**15: a healthy run ends at the profile's initial scale
    (growth only after growth_interval = 2000 finite steps)."""
    X, y = _data()
    r = train(X, y, _cfg(framework=fw, loss="fused", loss_scale="dynamic", steps=5, lr=0.1))
    assert r.nan.steps_skipped == 0
    assert r.nan.loss_scale == PROFILES[fw].scaler.init_scale
    assert PROFILES["tensorflow"].scaler.init_scale == 2.0**15 and PROFILES["torch"].scaler.init_scale == 2.0**16


def test_cli_names_the_policy_and_refuses_a_foreign_one_before_reading_data(cli, tmp_path):
    r = cli("train", "--dtype", "float16", "--precision", "mixed", "--mixed-policy", "mixed_float16",
            "--framework", "torch", "--steps", "2", data_dir=tmp_path)
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert "--mixed-policy" in r.output and "autocast-cuda or autocast-cpu" in r.output
    assert not any(tmp_path.iterdir())  # refused before any data was read or written
    r = cli("train", "--dtype", "float16", "--precision", "mixed", "--framework", "torch", "--mixed-policy",
            "autocast-cpu", "--loss", "naive", "--steps", "3", "--train-limit", "500", "--json",
            "--save", tmp_path / "m.npz")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["config"]["mixed_policy"] == doc["changed"]["mixed_policy"] == "autocast-cpu"
    assert doc["loss_dtype"] == "float16" and round(doc["underflow_limit"], 1) == 17.3
    from mnist_cli.model import Model

    assert Model.load(tmp_path / "m.npz").meta["config"]["mixed_policy"] == "autocast-cpu"
