"""Every setting of a run, its name, default and limits, in one NumPy-free place.

    >>> config = train_config("best", lr=2.0)        # a preset, then explicit overrides
    >>> config.epochs, config.lr, config.average
    (12, 2.0, True)
    >>> TrainConfig(lr=-1).validate()
    Traceback (most recent call last):
    ...
    mnist_cli.errors.SettingsError: lr: the learning rate must be a positive finite number, got -1

The CLI builds its choices and ``[default: ...]`` texts from these tables (so ``--help`` never
imports NumPy), and the library validates against them. The tables the numerics own
(:data:`mnist_cli.losses.LOSSES`, :data:`mnist_cli.rounding.DTYPES`, :data:`mnist_cli.model.INITS`) must
name exactly what is listed here; ``tests/test_settings.py`` ties them together.

Validation raises :class:`mnist_cli.errors.SettingsError`, which names the setting (``lr``, not
``--lr``): the CLI words it with its flag and exits 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from mnist_cli.errors import SettingsError

#: The losses, in the order the CLI lists them (keys of mnist_cli.losses.LOSSES).
LOSS_NAMES = ("fused", "naive", "clipped")
#: The dtypes a run can use (keys of mnist_cli.rounding.DTYPES); the half formats through mnist_cli.engine.half.
DTYPE_NAMES = ("float32", "float64", "float16", "bfloat16")
#: float16 and bfloat16 (mnist_cli.rounding.is_half): the dtypes ``precision`` applies to.
HALF_NAMES = ("float16", "bfloat16")
#: How a half-precision run computes (mnist_cli.engine.half): "pure" rounds every array to the dtype; "mixed" follows
#: the framework's mixed policy (products in the dtype, float32 weights, the ops the policy lists in float32: the
#: numpy profile's and CUDA autocast's compute softmax, log, exp and the loss in float32).
PRECISION_NAMES = ("pure", "mixed")
#: The framework profiles a run can compute as (mnist_cli.frameworks.PROFILES): "numpy" is the pure-IEEE reference.
FRAMEWORK_NAMES = ("numpy", "torch", "tensorflow")
#: The mixed-precision policies, every profile's (mnist_cli.frameworks.PROFILES, each profile's mixed_policies in order):
#: ``TrainConfig.mixed_policy``, ``--mixed-policy``; "" is the profile's default (Profile.mixed).
MIXED_POLICY_NAMES = ("float32-softmax", "autocast-cuda", "autocast-cpu", "mixed_float16", "mixed_bfloat16")
#: Loss scaling of a mixed-precision run (mnist_cli.engine.half.LossScaler): none, GradScaler's dynamic, or a number.
LOSS_SCALE_CHOICES = ("none", "dynamic")
#: evaluate --normalize: scikit-learn's ``confusion_matrix(normalize=...)`` (mnist_cli.metrics.normalize_confusion):
#: over each true class (rows sum to 1), each predicted class (columns sum to 1) or all examples.
NORMALIZE_NAMES = ("true", "pred", "all")
#: The declared datasets (mnist_cli.data.datasets.dataset_spec): --dataset, MNIST_SOFTMAX_DATASET.
DATASET_NAMES = ("mnist", "fashion-mnist")
#: How W starts (mnist_cli.model.INITS).
INIT_NAMES = ("zeros", "normal")
#: The largest finite value of each dtype (``numpy.finfo(dtype).max``, tied to it in tests/test_settings.py):
#: the brightest pixel becomes ``input_scale`` itself, which must be representable.
DTYPE_MAX = {"float32": 3.4028234663852886e38, "float64": 1.7976931348623157e308, "float16": 65504.0,
             "bfloat16": 3.3895313892515355e38}

#: The most steps one run may take: 10 million tutorial steps are ~15 minutes at ~10k steps/s, and
#: their per-step losses 80 MB; far more would only fail to allocate them.
MAX_STEPS = 10_000_000
#: More worker processes than this are refused (``compare --workers``): each holds a Python interpreter and
#: its runs' parameters, and no machine here has more cores.
MAX_WORKERS = 64
#: ``--workers auto`` runs in one process below this many training examples in all (runs x steps x batch):
#: a worker's start (an interpreter and NumPy, ~0.35 s) is only won back by ~1 s of training or more (the default
#: compare is 3e6: 30 runs x 1000 steps x 100, ~3.7 s on one core of a 2-core AMD EPYC).
AUTO_WORKERS_FROM = 1_000_000
#: A run's relative cost per training example, by how ``compare`` trains it, to deal the largest groups out to the
#: lanes first (``--workers``; the order changes no number). Measured per run in stacks on a 2-core Intel Xeon
#: (1000 steps of 100): float32 0.063 s, float64 0.09-0.11, float16 0.29-0.38, bfloat16 0.31; a run of another
#: profile's float32/float64, trained alone: 0.23-0.38.
GROUP_COST = {"float32": 1.0, "float64": 1.5, "float16": 5.0, "bfloat16": 5.0, "alone": 5.0}
#: The most runs one ``compare`` may make (cells x seeds x losses; a range ``a:b:N`` may not give more values
#: either): at ~0.1-2 s a run, 10,000 runs are hours already, and a larger grid would only exhaust memory.
MAX_RUNS = 10_000
#: More of the tool's own threads than this are refused: beyond the machine's cores they only add waiting.
MAX_THREADS = 64
#: The default number of the tool's own threads. Measured on a 2-core machine (scripts/bench.py
#: --contended, 3 alternating rounds): a 3-step full batch took 125 ms with 1 thread and 86 ms with 2
#: when idle, 141 ms and 134 ms beside one busy process. One thread stays within 1.12x of its idle time
#: there; two win 5% at twice the CPU and swing 1.56x with the neighbour (a step waits for its slowest
#: thread). Mini-batch steps (the default runs) use one thread whatever this says. So: 1.
DEFAULT_THREADS = 1

#: Environment variables, one place for their names.
DATA_DIR_ENV = "MNIST_SOFTMAX_DATA_DIR"
MIRRORS_ENV = "MNIST_SOFTMAX_MIRRORS"
OFFLINE_ENV = "MNIST_SOFTMAX_OFFLINE"
THREADS_ENV = "MNIST_SOFTMAX_THREADS"
WORKERS_ENV = "MNIST_SOFTMAX_WORKERS"
DATASET_ENV = "MNIST_SOFTMAX_DATASET"
LOCK_TIMEOUT_ENV = "MNIST_SOFTMAX_LOCK_TIMEOUT"


def check_input_scale(input_scale: float, dtype: str) -> None:
    """:class:`SettingsError` when the brightest pixel, ``255 * (input_scale / 255) = input_scale``, is past
    the largest finite ``dtype`` (it would be +inf before the first step, and every logit NaN)."""
    limit = DTYPE_MAX.get(dtype)
    if limit is not None and not input_scale <= limit:
        raise SettingsError(("input_scale", "dtype"),
                            f"an input scale of {input_scale:g} makes the brightest pixel {input_scale:g}, past the "
                            f"largest {dtype} ({limit:.5g}): the inputs would overflow to inf; lower {{input_scale}} "
                            f"below {limit:.5g}" + (" or use {dtype} float64" if dtype != "float64" else ""))


#: The largest float32: a loss scale is a float32 (GradScaler's), so a larger one would be inf.
_FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True)
class LossScale:
    """A mixed-precision run's loss scaling, parsed once from its text (``TrainConfig.loss_scale``):
    ``none``, ``dynamic`` (``torch.amp.GradScaler``'s) or a fixed positive float32 number.

        >>> LossScale.parse("1048576"), LossScale.parse(" Dynamic ").text
        (LossScale(kind='fixed', value=1048576.0), 'dynamic')
    """

    kind: str  # "none", "dynamic" or "fixed"
    value: float | None = None  # the fixed scale

    @classmethod
    def parse(cls, text) -> LossScale:
        """:class:`ValueError` unless ``text`` is none, dynamic or a positive number a float32 holds."""
        word = str(text).strip().lower()
        if word in LOSS_SCALE_CHOICES:
            return cls(word)
        value = float(word)  # ValueError for anything else
        if not (0 < value <= _FLOAT32_MAX):  # NaN and inf fail too
            raise ValueError(text)
        return cls("fixed", value)

    @property
    def text(self) -> str:
        """The canonical text: the word, or the number written exactly (``1048576``, ``0.5``)."""
        if self.kind != "fixed":
            return self.kind
        return repr(self.value).removesuffix(".0")


def loss_scale_ok(text: str) -> bool:
    """Whether :meth:`LossScale.parse` takes ``text``."""
    try:
        LossScale.parse(text)
    except (TypeError, ValueError):
        return False
    return True


def check_precision(dtype: str, precision: str, loss_scale: str, mixed_policy: str = "") -> None:
    """:class:`SettingsError` for a precision, loss scale or mixed policy that does not apply to ``dtype``."""
    if precision == "mixed" and dtype not in HALF_NAMES:
        raise SettingsError(("precision", "dtype"),
                            f"mixed precision computes the products in a half format; {dtype} is not one: use "
                            f"{{dtype}} {' or '.join(HALF_NAMES)}, or {{precision}} pure")
    if loss_scale != "none" and precision != "mixed":
        raise SettingsError(("loss_scale", "precision"),
                            "loss scaling unscales float32 master gradients, which only mixed precision has "
                            "(GradScaler refuses half-precision gradients): add {precision} mixed or drop {loss_scale}")
    if mixed_policy and precision != "mixed":
        raise SettingsError(("mixed_policy", "precision"),
                            f"the mixed policy {mixed_policy} applies to mixed precision only: add {{precision}} mixed "
                            "or drop {mixed_policy}")


def val_split_ok(v) -> bool:
    """Whether ``v`` is a validation split: a whole number of images >= 0, or a fraction 0 < v < 1."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return v >= 0
    return isinstance(v, float) and 0 < v < 1


def val_count(val_split: int | float, n: int) -> int:
    """How many of ``n`` training images ``val_split`` holds out (the last ones): a count as it is, a
    fraction ``x`` as Keras's ``validation_split`` does, ``n - floor(n * (1 - x))`` (``split_at`` is
    Keras's ``floor(n * (1 - x))``; 0.1 of 60,000 is 6,000)."""
    if isinstance(val_split, float):
        return n - math.floor(n * (1.0 - val_split))
    return val_split


def held_out(val_split: int | float, n: int) -> dict:
    """Which of ``n`` training images ``val_split`` holds out: ``split`` (as given: a count or a
    fraction), ``n`` of them, ``start`` and ``stop`` (the slice ``[start:stop]``) and ``of`` (``n`` images
    in all: the same slice of another training set would be other images). :class:`SettingsError` when
    it leaves nothing to train on, or a fraction holds out nothing."""
    count = val_count(val_split, n)
    if count >= n:
        raise SettingsError("val_split", f"holding out {count} of the {n} training images leaves none "
                            "to train on: lower {val_split}")
    if count <= 0:
        raise SettingsError("val_split", f"a validation split of {val_split:g} holds out none of the {n} training "
                            "images: raise {val_split}")
    return {"split": val_split, "n": count, "start": n - count, "stop": n, "of": n}


def check_steps(steps: int) -> None:
    """:class:`SettingsError` when a run of ``steps`` steps is past :data:`MAX_STEPS`."""
    if steps > MAX_STEPS:
        raise SettingsError(("steps", "epochs"),
                            f"{steps:,} steps is more than the {MAX_STEPS:,} a run may take: lower {{steps}} or {{epochs}}")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one run. Defaults are TF r1.4 ``mnist_softmax.py``."""

    loss: str = "fused"  # a key of LOSSES
    lr: float = 0.5  # GradientDescentOptimizer(0.5)
    batch_size: int = 100  # mnist.train.next_batch(100)
    steps: int | None = 1000  # for _ in range(1000); ignored when epochs is set
    epochs: int | None = None  # full passes over the (limited) training set instead of steps
    init: str = "zeros"  # tf.zeros; "normal" draws W ~ N(0, init_std^2) from the seed
    init_std: float = 0.01
    init_from: str | None = None  # a saved model's path: start from its W and b instead of init (same dtype, form)
    dtype: str = "float32"  # the dtype of every array in the run (of the products, in mixed precision)
    precision: str = "pure"  # "mixed": float32 masters, half products, the mixed_policy's float32 ops (engine.half)
    loss_scale: str = "none"  # mixed precision: "none", "dynamic" (GradScaler) or a fixed number
    input_scale: float = 1.0  # pixels map to [0, input_scale]; 255 = raw pixels, the beginner mistake
    seed: int = 0  # drives init and shuffling; the batch order does not depend on the loss
    train_limit: int | None = None  # use only the first N training examples (smoke runs)
    lr_decay: float = 1.0  # multiply lr by this after each epoch (1 = constant)
    weight_decay: float = 0.0  # L2: adds weight_decay * W to dL/dW (bias not decayed)
    average: bool = False  # report the average of the iterates over the last epochs (Polyak-Ruppert)
    average_epochs: int = 1  # how many final epochs the average spans
    full_batch: bool = False  # one batch of all (limited) training examples per step: exact gradient descent
    fast: bool = True  # the fast step (mnist_cli.engine.fast); False runs the plain loop, the reference it is tested against
    stop_on_nan: bool = False  # stop at the first non-finite loss or gradient, before applying its update
    threads: int = DEFAULT_THREADS  # the tool's own threads (full-batch row groups); never changes a result
    # hold out the last training images for validation: a count N (TF's input_data: 5000) or a fraction 0 < x < 1
    # (Keras's validation_split: the last n - floor(n * (1 - x))); 0 = none. See val_count.
    val_split: int | float = 0
    # stop when the validation loss has not improved for this many evaluations (epoch ends and every log_every
    # steps) and keep the best parameters: Keras's EarlyStopping(patience, restore_best_weights=True); None = never
    early_stop: int | None = None
    framework: str = "numpy"  # compute as this profile does (mnist_cli.frameworks): numpy (pure IEEE), torch, tensorflow
    # mixed precision: the framework's policy (Profile.mixed_policies: which ops compute in float32); "" = its
    # default (Profile.mixed); the trainer records the one it followed
    mixed_policy: str = ""

    @property
    def loss_scaling(self) -> LossScale:
        """:attr:`loss_scale` parsed (:class:`LossScale`)."""
        return LossScale.parse(self.loss_scale)

    def validate(self) -> None:
        """:class:`SettingsError` naming the first setting that cannot work (see :data:`_RULES`)."""
        for name, ok, what in _RULES:
            value = getattr(self, name)
            if value is not None and not ok(value):
                raise SettingsError(name, f"{what}, got {value!r}" if isinstance(value, str) else f"{what}, got {value:g}")
        check_input_scale(self.input_scale, self.dtype)
        check_precision(self.dtype, self.precision, self.loss_scale, self.mixed_policy)
        if self.average and self.epochs is not None and self.average_epochs > self.epochs:
            raise SettingsError(("average_epochs", "epochs"),
                                f"averaging over the last {self.average_epochs} epochs needs at least that many, "
                                f"but the run has {self.epochs}: lower {{average_epochs}} or raise {{epochs}}")
        if self.early_stop is not None and not self.val_split:
            raise SettingsError(("early_stop", "val_split"), "early stopping watches the validation loss: add {val_split}")
        if self.early_stop is not None and self.average:
            raise SettingsError(("early_stop", "average_epochs"),
                                "early stopping keeps the best iterate, averaging the mean of the last ones: choose one")
        if self.epochs is None and self.steps is None:
            raise SettingsError(("steps", "epochs"), "give {steps} or {epochs}")
        if self.epochs is None:
            check_steps(self.steps)  # epochs become steps in train(), which checks them there


def _positive(x) -> bool:
    return x > 0 and math.isfinite(x)


#: (setting, test of a given value, what it must be): TrainConfig.validate's checks, in order.
_RULES = (
    ("loss", lambda v: v in LOSS_NAMES, f"the loss must be one of {', '.join(LOSS_NAMES)}"),
    ("dtype", lambda v: v in DTYPE_NAMES, f"the dtype must be one of {', '.join(DTYPE_NAMES)}"),
    ("precision", lambda v: v in PRECISION_NAMES, f"the precision must be one of {', '.join(PRECISION_NAMES)}"),
    ("loss_scale", loss_scale_ok, "the loss scale must be none, dynamic or a positive number a float32 holds (<= 3.4e38)"),
    ("init", lambda v: v in INIT_NAMES, f"the init must be one of {', '.join(INIT_NAMES)}"),
    ("framework", lambda v: v in FRAMEWORK_NAMES, f"the framework must be one of {', '.join(FRAMEWORK_NAMES)}"),
    ("mixed_policy", lambda v: v in ("", *MIXED_POLICY_NAMES),
     f"the mixed policy must be one of {', '.join(MIXED_POLICY_NAMES)}"),
    ("lr", _positive, "the learning rate must be a positive finite number"),
    ("batch_size", lambda v: v >= 1, "the batch size must be at least 1"),
    ("steps", lambda v: v >= 1, "the number of steps must be at least 1"),
    ("epochs", lambda v: v >= 1, "the number of epochs must be at least 1"),
    ("input_scale", _positive, "the input scale must be a positive finite number"),
    ("train_limit", lambda v: v >= 1, "the train limit must be at least 1"),
    ("lr_decay", lambda v: 0 < v <= 1 and math.isfinite(v), "the lr decay must be in (0, 1]"),
    ("average_epochs", lambda v: v >= 1, "the number of averaged epochs must be at least 1"),
    ("weight_decay", lambda v: v >= 0 and math.isfinite(v), "the weight decay must be a finite number >= 0"),
    ("threads", lambda v: 1 <= v <= MAX_THREADS, f"threads must be from 1 to {MAX_THREADS}"),
    ("early_stop", lambda v: v >= 1, "the patience must be at least 1 evaluation"),
    ("val_split", lambda v: val_split_ok(v), "the validation split must be a number of images >= 0 or a fraction "
     "0 < x < 1"),
)

#: name -> overrides of TrainConfig; "tutorial" is the defaults.
PRESETS: dict[str, dict] = {
    "tutorial": {},
    # >= 0.926 test accuracy (scikit-learn's converged LogisticRegression: 0.9262) in ~0.7 s: constant-lr
    # SGD, then the average of the iterates over the last 8 epochs (Polyak-Ruppert), which lands much
    # nearer the optimum than the last iterate or a decaying lr. Chosen on a held-out split (train on
    # the first 50k, validate on the last 10k); test accuracy 0.9264-0.9270 for seeds 0-4.
    "best": {"epochs": 12, "lr": 1.0, "average": True, "average_epochs": 8},
}

TUTORIAL = TrainConfig()  # the value of every setting nothing overrides
_FIELDS = {f.name for f in fields(TrainConfig)}


#: Settings that never change a number (left out of the report of what differs from the tutorial).
_NO_EFFECT = ("threads",)


def changed_settings(config: TrainConfig, preset: str = "tutorial") -> dict:
    """``{setting: value}`` for every setting of ``config`` that differs from the tutorial's and can change
    a result (``steps`` when ``epochs`` decide is left out; ``average_epochs`` only when averaging)."""
    out = {}
    for f in fields(TrainConfig):
        value = getattr(config, f.name)
        if f.name in _NO_EFFECT or value == getattr(TUTORIAL, f.name):
            continue
        if f.name in ("average", "average_epochs") or (f.name == "steps" and config.epochs is not None):
            continue
        out[f.name] = value
    if config.average and "average_epochs" not in out:
        out["average_epochs"] = config.average_epochs
    return out


def train_config(preset: str = "tutorial", **overrides) -> TrainConfig:
    """A preset's settings, then every override that is not None, validated.

    An explicit ``steps`` drops a preset's ``epochs`` (and ``epochs`` its ``steps``); ``average_epochs``
    turns averaging on. ``steps`` and ``epochs`` together, or ``full_batch`` with a ``batch_size``,
    contradict each other and are refused.
    """
    if preset not in PRESETS:
        raise SettingsError("preset", f"the preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - _FIELDS
    if unknown:
        raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
    if "steps" in given and "epochs" in given:
        raise SettingsError(("steps", "epochs"), "give {steps} or {epochs}, not both")
    if given.get("init_from") and ({"init", "init_std"} & set(given)):
        raise SettingsError(("init_from", "init"), "a run continued from a saved model starts from its parameters: "
                            "drop {init}")
    if given.get("full_batch") and "batch_size" in given:
        raise SettingsError(("full_batch", "batch_size"),
                            "a full batch is every training example: drop {batch_size}")
    settings = {**PRESETS[preset], **given}
    if "epochs" in given:
        settings["steps"] = None
    elif "steps" in given:
        settings["epochs"] = None  # an explicit number of steps overrides a preset's epochs
    if "average_epochs" in given:
        settings["average"] = True
    config = replace(TUTORIAL, **settings)
    config.validate()
    return config
