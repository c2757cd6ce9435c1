"""Framework profiles: what PyTorch and TensorFlow do to the lab's arithmetic, as data (issue 19). One place.

    >>> from mnist_cli.frameworks import PROFILES
    >>> PROFILES["tensorflow"].rules("float32").ftz, PROFILES["torch"].rules("float32").ftz
    (True, False)
    >>> round(PROFILES["tensorflow"].underflow_limit("float32"), 1), round(PROFILES["torch"].underflow_limit("float32"), 1)
    (87.3, 104.0)

A :class:`Profile` fixes, per dtype (:class:`Rules`), the arithmetic facts a NaN story depends on, each
measured in the real framework by ``scripts/probe_frameworks.py`` (its output, with the versions, is kept in
``scripts/probes.json``; ``tests/test_frameworks.py`` holds every profile to it):

- ``ftz``: results below the smallest normal number are flushed to 0 (TensorFlow's CPU kernels, float32,
  float64 and bfloat16, eager and ``tf.function``, oneDNN on and off; not float16, computed in float32);
  ``daz``: subnormal inputs are read as 0 (the same set). So ``exp(x)`` is 0 from ``x < log(smallest normal)``:
  87.3 in float32 instead of 104.0;
- ``softmax``: where softmax's ops round in the half formats: ``"float32_once"`` (PyTorch's CPU kernels compute
  ``z - max``, exp, the sum and the division in float32 and round the output once: 22890 of 22890 probabilities
  bit-identical, float16 and bfloat16) or ``"every_op"`` (each op rounded to the dtype: NumPy's, TensorFlow's
  Eigen kernels); ``softmax_divide``: ``e / s`` (``"divide"``) or ``e * (1 / s)`` (``"reciprocal"``, TF's Eigen
  softmax: ``softmax * sum.inverse()``);
- ``nll_sum``, ``mean_sum``: whether the fused loss's (``nll_loss``) and the naive graph's (``mean``) batch sum
  is rounded to a half dtype before the division (PyTorch's float16 ``nll_loss`` and TF's float16 ``reduce_mean``
  are: a batch whose sum passes 65504 has an ``inf`` mean; PyTorch's ``mean`` accumulates in float32);

and, per framework: ``log_backward``, the naive backward's order (``grad / x``, PyTorch; ``grad * reciprocal(x)``,
TF, which matters in float16); the autocast/mixed policies (the ops each computes in float32, the rest in the
half dtype: :meth:`Profile.policy`, ``--mixed-policy``; :meth:`mnist_cli.losses.Loss.mixed_dtype` says where a
loss then computes); the loss scaler's rules (:class:`Scaler`, taken by :class:`mnist_cli.engine.half.LossScaler`).

The ``numpy`` profile is the lab's pure-IEEE reference (what it computed before profiles): no flushing,
every op rounded, ``e / s``, float32 accumulation everywhere, ``grad / x``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from mnist_cli.errors import ConfigError, SettingsError
from mnist_cli.settings import DTYPE_NAMES, FRAMEWORK_NAMES, HALF_NAMES, MIXED_POLICY_NAMES

__all__ = ["Rules", "PLAIN", "Scaler", "Profile", "PROFILES", "FRAMEWORK_NAMES", "DEFAULT_FRAMEWORK", "profile",
           "check_probes"]


@dataclass(frozen=True)
class Rules:
    """How one framework computes in one dtype (see the module docstring for each field)."""

    ftz: bool = False
    daz: bool = False
    softmax: str = "every_op"  # "every_op" | "float32_once" (half formats only; float32/float64 compute natively)
    softmax_divide: str = "divide"  # "divide" (e / s) | "reciprocal" (e * (1 / s))
    mean_sum: str = "float32"  # a half-format batch sum of naive/clipped's ``mean``: "float32" | "dtype" (rounded)
    nll_sum: str = "float32"  # the same for the fused loss (PyTorch's float16 nll_loss: "dtype")
    log_backward: str = "divide"  # the profile's (Profile.rules fills it in)
    fused_form: str = "target"  # "target": logsumexp - z[y] | "labels": sum_j y_j (logsumexp - z_j) (TF: 0 * inf)
    fused_float32: bool = False  # the fused kernel computes a half dtype in float32, rounds once (TF float16)
    linear: str = "fused"  # x @ W + b rounded once ("fused", F.linear) | the product rounded, then + b ("bias_after")
    #: a pure half SGD update of W: ``rnd(W - lr * g)`` ("fused", torch's add_) | ``rnd(W - rnd(lr * g))``
    #: ("product_rounded", a Keras/TF ``assign_sub(lr * g)`` on a float16/bfloat16 variable)
    update: str = "fused"

    @property
    def bias_after(self) -> bool:
        """Whether a half-precision ``x @ W + b`` rounds the product before adding the bias (:attr:`linear`)."""
        return self.linear == "bias_after"

    @property
    def plain(self) -> bool:
        """The numpy profile's arithmetic: nothing to emulate (the formulas run exactly as before profiles)."""
        return self == PLAIN


PLAIN = Rules()


@dataclass(frozen=True)
class Scaler:
    """A dynamic loss scaler's rules: start at ``init_scale``; a non-finite gradient skips the step and multiplies
    the scale by ``backoff``; ``growth_interval`` finite steps in a row multiply it by ``growth``."""

    name: str
    init_scale: float
    growth: float = 2.0
    backoff: float = 0.5
    growth_interval: int = 2000


@dataclass(frozen=True)
class Profile:
    """One framework's arithmetic: :class:`Rules` per dtype, the naive backward's order, the mixed-precision
    policies, the loss scaler, and the versions they were measured with."""

    name: str
    measured_with: str  # the framework versions of scripts/probes.json
    per_dtype: Mapping[str, Rules]
    log_backward: str = "divide"  # "divide": grad / x | "reciprocal": grad * reciprocal(x)
    #: policy name -> the ops of the lab's graphs it computes in float32 (the rest in the half dtype)
    mixed_policies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: the policy ``--precision mixed`` follows under this profile
    mixed: str = ""
    scaler: Scaler = Scaler("GradScaler", 65536.0)
    #: the fused loss of a row with a non-target -inf logit ("finite", or "nan": TF's 0 * inf)
    fused_neg_inf: str = "finite"
    notes: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "_rules", {})  # dtype -> Rules: asked at every step of a run (not a field)

    def rules(self, dtype) -> Rules:
        """The :class:`Rules` of ``dtype`` (a name or a NumPy dtype), with the profile's backward order."""
        got = self._rules.get(dtype)
        if got is None:
            name = dtype if isinstance(dtype, str) else getattr(dtype, "name", str(dtype))
            fused_form = "labels" if self.fused_neg_inf == "nan" else "target"
            got = self._rules[dtype] = replace(self.per_dtype.get(name, Rules()), log_backward=self.log_backward,
                                               fused_form=fused_form)
        return got

    def smallest_positive(self, dtype) -> float:
        """The smallest positive result this framework keeps in ``dtype``: the smallest normal under FTZ,
        else the smallest subnormal."""
        from mnist_cli.rounding import finfo

        f = finfo(dtype)
        return float(f.smallest_normal if self.rules(dtype).ftz else f.smallest_subnormal)

    def underflow_limit(self, dtype) -> float:
        """The gap ``max(z) - z_j`` past which ``exp(z_j - max)`` is 0: ``-log(u / 2)`` with ``u`` the smallest
        subnormal (round to nearest: 104.0 float32, 745.1 float64, 17.3 float16, 92.9 bfloat16), or, where
        results are flushed, ``-log(smallest normal)`` (87.3 float32, 708.4 float64, 87.3 bfloat16; an exact
        value below it is subnormal, hence 0; measured 87.33 / 87.25 in TF, bfloat16 rounding the gap)."""
        u = self.smallest_positive(dtype)
        return -math.log(u) if self.rules(dtype).ftz else math.log(2) - math.log(u)

    def policy(self, name: str = "", dtype: str | None = None) -> tuple[str, tuple[str, ...]]:
        """``(name, the ops it computes in float32)`` of the mixed-precision policy ``name`` of this profile for a
        run in ``dtype``; ``""``: the profile's default, :attr:`mixed` (a policy named after a half dtype,
        Keras's ``mixed_float16``, is that dtype's only, so the default in bfloat16 is ``mixed_bfloat16``).
        A :class:`SettingsError` for a policy of another profile or of another dtype."""
        if not name:
            name = self.mixed
            if dtype is not None and _policy_dtype(name) not in (None, dtype):
                name = next((p for p in self.mixed_policies if _policy_dtype(p) == dtype), name)
        if name not in self.mixed_policies:
            raise SettingsError(("mixed_policy", "framework"), f"{name!r} is not a mixed policy of {self.name}: "
                                f"choose {' or '.join(self.mixed_policies)}, or another {{framework}}")
        if dtype is not None and _policy_dtype(name) not in (None, dtype):
            raise SettingsError(("mixed_policy", "dtype"), f"the mixed policy {name} computes in "
                                f"{_policy_dtype(name)}, the run in {dtype}: change {{mixed_policy}} or {{dtype}}")
        return name, tuple(self.mixed_policies[name])

    def describe(self) -> dict:
        """The profile as a JSON-able record (reports, documents and saved models name it)."""
        return {"framework": self.name, "measured_with": self.measured_with, "log_backward": self.log_backward,
                "mixed": self.mixed, "scaler": {"name": self.scaler.name, "init_scale": self.scaler.init_scale,
                                                "growth_interval": self.scaler.growth_interval},
                "ftz": sorted(d for d in DTYPE_NAMES if self.rules(d).ftz)}


def _policy_dtype(name: str) -> str | None:
    """The half dtype a policy is named after (Keras's ``mixed_bfloat16``: bfloat16), None for any."""
    return next((d for d in HALF_NAMES if name.endswith("_" + d)), None)


#: PyTorch's CUDA autocast (``aten/src/ATen/autocast_mode.h``: AT_FORALL_FP32, AT_FORALL_FP32_SET_OPT_DTYPE),
#: and its CPU autocast (measured: ``softmax``, ``log``, ``exp`` and ``sum`` follow their input's dtype).
_TORCH_POLICIES = {
    "autocast-cuda": ("exp", "log", "softmax", "log_softmax", "sum", "nll_loss", "cross_entropy"),
    "autocast-cpu": ("nll_loss", "cross_entropy"),
}
#: Keras 3's mixed_float16 / mixed_bfloat16: float32 variables, every op of the lab's graphs in the half
#: dtype (the Softmax layer's output measured float16 / bfloat16).
_KERAS_POLICIES = {"mixed_float16": (), "mixed_bfloat16": ()}
_HALF_ONCE = Rules(softmax="float32_once")
_FLUSH = Rules(ftz=True, daz=True)

PROFILES: dict[str, Profile] = {
    "numpy": Profile(
        "numpy", "NumPy (pure IEEE, round to nearest, the lab's reference)", {},
        mixed_policies={"float32-softmax": ("exp", "log", "softmax", "sum", "nll_loss", "cross_entropy")},
        mixed="float32-softmax", scaler=Scaler("GradScaler", 65536.0),
        notes=("the arithmetic the lab computed before profiles: every half-precision op rounded, no flushing",)),
    "torch": Profile(
        "torch", "torch 2.13.0+cpu",
        {"float16": Rules(softmax="float32_once", nll_sum="dtype"), "bfloat16": _HALF_ONCE},
        log_backward="divide", mixed_policies=_TORCH_POLICIES, mixed="autocast-cuda",
        scaler=Scaler("torch.amp.GradScaler", 65536.0, 2.0, 0.5, 2000),
        notes=("no flushing of subnormals (torch.set_flush_denormal not called)",
               "torch.autocast('cpu') keeps softmax and log in the half dtype; 'mixed' is CUDA autocast's policy")),
    "tensorflow": Profile(
        "tensorflow", "tensorflow-cpu 2.21.0, keras 3.15.1",
        {"float32": _FLUSH, "float64": _FLUSH,
         "bfloat16": Rules(ftz=True, daz=True, softmax_divide="reciprocal", update="product_rounded"),
         "float16": Rules(softmax_divide="reciprocal", mean_sum="dtype", nll_sum="dtype", fused_float32=True,
                          linear="bias_after", update="product_rounded")},
        log_backward="reciprocal", mixed_policies=_KERAS_POLICIES, mixed="mixed_float16",
        scaler=Scaler("keras.mixed_precision.LossScaleOptimizer", 32768.0, 2.0, 0.5, 2000),
        fused_neg_inf="nan",
        notes=("subnormals flushed on the CPU (FTZ and DAZ) in float32, float64 and bfloat16; float16 is not",
               "oneDNN on (TF_ENABLE_ONEDNN_OPTS=1): the float32 softmax of one max breaks from a gap of 86.64",
               "in a Session, fetching the naive loss alone lets grappler rewrite Log(Softmax) into LogSoftmax",
               "the half-precision softmax's sum order (Eigen's reduction) is not reproduced: ~88% of "
               "probabilities bit-identical (oneDNN on, bfloat16: CPU-dependent, 39% rounded once on AVX2, "
               "99.3% with avx512_bf16)",
               "float16 tf.matmul(x, W) + b rounds the product, then the sum (Keras Dense; measured by the "
               "training-level crosscheck: 71 of 320 logits differ from one rounding); bfloat16's Eigen matmul "
               "does not accumulate in float32 (45% of products equal), not reproduced")),
}
DEFAULT_FRAMEWORK = "numpy"
assert tuple(PROFILES) == FRAMEWORK_NAMES  # settings.py, NumPy-free, lists them for the CLI and TrainConfig
assert tuple(p for prof in PROFILES.values() for p in prof.mixed_policies) == MIXED_POLICY_NAMES  # likewise


def profile(name: str | Profile | None = None) -> Profile:
    """The profile named ``name`` (None: :data:`DEFAULT_FRAMEWORK`); a typed error names the choices."""
    if isinstance(name, Profile):
        return name
    try:
        return PROFILES[name or DEFAULT_FRAMEWORK]
    except KeyError:
        choices = ", ".join(FRAMEWORK_NAMES)
        raise ConfigError(f"unknown {{framework}} {name!r}: choose one of {choices}", "framework") from None


# --- the probes -------------------------------------------------------------------------------------------


def _facts(found: dict, fw: str) -> list[tuple[str, dict]]:
    """(setting, per-dtype facts) of a probe document: one setting for torch, four for tensorflow."""
    doc = found[fw]
    if fw == "torch":
        return [("default", {**doc, "dtypes": doc["dtypes"]})]
    return list(doc["settings"].items())


def check_probes(found: dict) -> list[str]:
    """Every way :data:`PROFILES` disagrees with a probe document (``scripts/probe_frameworks.py``'s JSON)."""
    problems = []
    for fw in ("torch", "tensorflow"):
        if fw not in found:
            continue
        prof = PROFILES[fw]
        for setting, facts in _facts(found, fw):
            order = {"grad / x": "divide", "grad * reciprocal(x)": "reciprocal"}[facts["log_backward"]["order"]]
            if order != prof.log_backward:
                problems.append(f"{fw} {setting}: log backward {order}, profile {prof.log_backward}")
            fused = "finite" if facts["fused_neg_inf"] == "finite" else "nan"
            if fused != prof.fused_neg_inf:
                problems.append(f"{fw} {setting}: fused loss of a -inf logit {fused}, profile {prof.fused_neg_inf}")
            for dtype, f in facts["dtypes"].items():
                r = prof.rules(dtype)
                if (f["ftz"], f["daz"]) != (r.ftz, r.daz):
                    problems.append(f"{fw} {setting} {dtype}: ftz/daz {f['ftz']}/{f['daz']}, profile {r.ftz}/{r.daz}")
                gap = f["exp_gap"]
                if not abs(gap - prof.underflow_limit(dtype)) < 0.1 + (0.5 if dtype == "bfloat16" else 0):
                    problems.append(f"{fw} {setting} {dtype}: exp underflows past {gap}, "
                                    f"profile {prof.underflow_limit(dtype):.2f}")
                if dtype in HALF_NAMES:
                    once = f["softmax_rounding"]["float32_rounded_once"] == 1.0
                    if once != (r.softmax == "float32_once"):
                        problems.append(f"{fw} {setting} {dtype}: softmax rounded once in "
                                        f"{f['softmax_rounding']['float32_rounded_once']:.4f} of entries, "
                                        f"profile {r.softmax}")
                votes = f.get("sgd_update", {}).get("W", {})  # the pure update of W; b's product is rounded in both
                if votes and votes.get(r.update) != 1.0:
                    problems.append(f"{fw} {setting} {dtype}: the SGD update of W matches {votes}, profile {r.update}")
                if "nll_mean_overflows" in f and f["nll_mean_overflows"] != (r.nll_sum == "dtype"):
                    problems.append(f"{fw} {dtype}: nll_loss batch sum overflows {f['nll_mean_overflows']}, "
                                    f"profile nll_sum {r.nll_sum}")
                if "mean_overflows" in f and f["mean_overflows"] != (r.mean_sum == "dtype"):
                    problems.append(f"{fw} {setting} {dtype}: mean of a sum past the range overflows "
                                    f"{f['mean_overflows']}, profile mean_sum {r.mean_sum}")
    if "torch" in found:
        s = found["torch"]["scaler"]
        mine = PROFILES["torch"].scaler
        if (s["init_scale"], s["growth_interval"]) != (mine.init_scale, mine.growth_interval):
            problems.append(f"torch GradScaler {s}, profile {mine}")
        cpu = found["torch"]["autocast"]["cpu"]["float16"]
        fp32 = tuple(op for op, d in cpu.items() if d == "float32")
        if set(fp32) != set(PROFILES["torch"].mixed_policies["autocast-cpu"]):
            problems.append(f"torch autocast cpu float32 ops {fp32}, profile "
                            f"{PROFILES['torch'].mixed_policies['autocast-cpu']}")
    if "tensorflow" in found:
        s = found["tensorflow"]["scaler"]
        mine = PROFILES["tensorflow"].scaler
        if (s["init_scale"], s["growth_interval"], s["growth_factor"], s["backoff_factor"]) != \
                (mine.init_scale, mine.growth_interval, mine.growth, mine.backoff):
            problems.append(f"keras LossScaleOptimizer {s}, profile {mine}")
    return problems
