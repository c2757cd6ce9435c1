"""The named scenarios of ``compare`` and what each loss must do in them: data as a table, then the checks.

    >>> [s.name for s in SCENARIOS][:3]
    ['tutorial', 'raw-pixels', 'lr-5']

Each :class:`Scenario` was measured on every dataset of :data:`MEASURED_ON` (seeds 0-7, 1000 steps and the
:data:`SMOKE` preset; ``scripts/measure_scenarios.py`` reruns it): its fields say what holds on all of them, and
``differs`` what a dataset does instead where its runs differ. :func:`expectations` says what a cell's losses must
do on a dataset (a loss whose record in :data:`mnist_cli.losses.LOSSES` is ``promised_finite`` in every
float32/float64 cell, the others where a named scenario says), :func:`check` whether a run did.

    >>> {d: SCENARIOS[6].on(d).naive for d in MEASURED_ON}  # f64-lr-5: naive is seed-dependent on Fashion-MNIST
    {'mnist': 'finite', 'fashion-mnist': None}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from mnist_cli.losses import LOSSES
from mnist_cli.settings import HALF_NAMES, TUTORIAL

#: The datasets the table below was measured on (its expectations are stated for these only).
MEASURED_ON = ("mnist", "fashion-mnist")


@dataclass(frozen=True)
class Expect:
    """What a scenario does on one dataset where that differs from its own fields: each field replaces the
    scenario's (``about`` too: what happens there is another story)."""

    about: str
    naive: str | None = None
    by_step: int | None = None
    fused: str | None = None
    fused_by_step: int | None = None


@dataclass(frozen=True)
class Scenario:
    """A named setting and what the naive loss does there: on every dataset of :data:`MEASURED_ON` (seeds 0-7)
    but those ``differs`` names, which say what they do instead (:meth:`on`)."""

    name: str
    about: str
    lr: float = TUTORIAL.lr
    input_scale: float = TUTORIAL.input_scale
    dtype: str = TUTORIAL.dtype
    naive: str | None = None  # "finite": naive never goes non-finite; "fails": it does, by `by_step`
    by_step: int | None = None  # with "fails": the first non-finite step is at most this
    precision: str = TUTORIAL.precision  # "mixed": CUDA autocast's policy (half dtypes only)
    fused: str | None = None  # as `naive`, for the fused loss where its record's promise does not hold (half precision)
    fused_by_step: int | None = None
    framework: str = TUTORIAL.framework  # the profile the cell computes as (mnist_cli.frameworks)
    smoke: bool = True  # run by the SMOKE preset too (its expectations measured to hold there)
    differs: tuple[tuple[str, Expect], ...] = ()  # (dataset, what holds there instead of the fields above)

    def on(self, dataset: str) -> Scenario:
        """This scenario with the expectations measured on ``dataset`` (its own fields unless ``differs``
        names the dataset)."""
        instead = dict(self.differs).get(dataset)
        return self if instead is None else replace(self, **asdict(instead), differs=())


#: The default cells: a 2 x 2 x 2 grid (lr x input scale x dtype), each cell named, then half precision.
SCENARIOS = (
    Scenario("tutorial", "TF r1.4 mnist_softmax.py as published", naive="finite"),
    # raw pixels (seeds 0-7, both presets, float32 and float64): naive first non-finite at step 2 on every seed, the
    # logit gap max - min at that step 2.2e5-4.0e5 on MNIST, 5.7e5-1.1e6 on Fashion-MNIST (1000 steps).
    Scenario("raw-pixels", "pixels left in [0, 255], the classic beginner mistake", input_scale=255,
             naive="fails", by_step=3),
    Scenario("lr-5", "a learning rate 10x the tutorial's", lr=5, naive="fails", by_step=5),
    Scenario("lr-5-raw", "both mistakes at once", lr=5, input_scale=255, naive="fails", by_step=3),
    Scenario("f64", "float64: exp underflows only past a logit gap of 745", dtype="float64", naive="finite"),
    Scenario("f64-raw-pixels", "float64 does not save raw pixels: gaps reach 1e6", input_scale=255,
             dtype="float64", naive="fails", by_step=3),
    # Fashion-MNIST (seeds 0-7): 1000 steps, naive first non-finite at steps 3 4 4 - 6 3 3 5, gaps 716-875 there;
    # smoke, - - 6 4 3 4 - 4 (gaps 739-829): no statement holds on every seed.
    Scenario("f64-lr-5", "float64 survives lr 5: gaps stay near 300 < 745", lr=5, dtype="float64",
             naive="finite", differs=(("fashion-mnist", Expect(
                 "float64 at lr 5 on Fashion-MNIST: gaps reach 716-875, past 709.8 (1/p overflows) or 745 (exp "
                 "underflows), so naive breaks on most seeds")),)),
    Scenario("f64-lr-5-raw", "float64, both mistakes", lr=5, input_scale=255, dtype="float64",
             naive="fails", by_step=3),
    # half precision (measured, seeds 0-7, 1000 steps and the smoke preset): mnist_cli.engine.half
    Scenario("f16", "float16: exp underflows past a gap of 17.3, so naive breaks at the tutorial's own settings",
             dtype="float16", naive="fails", by_step=100, fused="finite"),
    Scenario("f16-raw-pixels", "float16 raw pixels: logits pass 65504 and overflow, so even fused is NaN",
             input_scale=255, dtype="float16", naive="fails", by_step=3, fused="fails", fused_by_step=3),
    Scenario("f16-mixed", "mixed precision (autocast + GradScaler): softmax and log in float32 save naive",
             dtype="float16", precision="mixed", naive="finite", fused="finite"),
    Scenario("f16-mixed-raw", "mixed precision cannot save raw pixels: the float16 product overflows first",
             input_scale=255, dtype="float16", precision="mixed", naive="fails", by_step=10, fused="fails",
             fused_by_step=10),
    Scenario("bf16-lr-5", "bfloat16 has float32's range, not its precision: naive breaks at lr 5 as in float32",
             lr=5, dtype="bfloat16", naive="fails", by_step=5, fused="finite"),
    # where the frameworks differ (mnist_cli.frameworks): TF flushes subnormals, so float32 exp is 0 past a gap of
    # 87.3 (PyTorch: 104); at lr 2 the gaps reach ~96-100 (measured: scripts/probe_frameworks.py, crosscheck.py)
    # (seed 0: torch finite, its gaps reach 99.5; TF first non-finite at step 4; seeds 0-7 in TF: steps 3-9). Not
    # in SMOKE: on its 2000 examples the gaps of seed 0 stay below 87.3 for 200 steps (measured: finite in both).
    # Fashion-MNIST (seeds 0-7, 1000 steps and smoke): naive first non-finite at step 3 on every seed, gaps 123-328.
    Scenario("lr-2-torch", "lr 2 in PyTorch: gaps near 100 stay below float32's 104 on this seed", lr=2,
             framework="torch", smoke=False, differs=(("fashion-mnist", Expect(
                 "lr 2 in PyTorch on Fashion-MNIST: gaps pass float32's 104 (123-328), so naive breaks here too",
                 naive="fails", by_step=5)),)),
    Scenario("lr-2-tensorflow", "the same run in TensorFlow, which flushes subnormals: exp is 0 past a gap of "
             "87.3, so naive breaks", lr=2, framework="tensorflow", naive="fails", by_step=10, smoke=False),
)

SCENARIO_NAMES = tuple(s.name for s in SCENARIOS)


#: Smoke runs: a subset and fewer steps; the SCENARIOS' expectations hold there too (measured).
SMOKE = {"steps": 200, "train_limit": 2000}


@dataclass(frozen=True)
class Cell:
    """One point of the grid: the settings every loss is trained with."""

    lr: float
    input_scale: float
    dtype: str
    seed: int
    scenario: Scenario | None = None
    label: str = ""
    precision: str = TUTORIAL.precision
    framework: str = TUTORIAL.framework


def expectations(cell: Cell, losses: tuple[str, ...], steps: int | None = None, dataset: str = "mnist") -> dict:
    """What each loss must do in this cell of runs of ``steps`` steps on ``dataset``: {loss: {"nonfinite":
    bool, "by_step": int | None}}. A "fails by step N" is no expectation of a run shorter than N steps (it
    cannot fail by then); a loss's named "finite" still is (a shorter run has fewer chances to break). On a
    dataset not in :data:`MEASURED_ON` only the losses' own promises apply (no scenario was measured there)."""
    out = {loss: {"nonfinite": False, "by_step": None} for loss in losses
           if LOSSES[loss].promised_finite and cell.dtype not in HALF_NAMES}
    s = cell.scenario.on(dataset) if cell.scenario and dataset in MEASURED_ON else None
    for loss, said, by_step in (("naive", s and s.naive, s and s.by_step), ("fused", s and s.fused,
                                                                            s and s.fused_by_step)):
        if said is None or loss not in losses:
            continue
        if said == "fails" and steps is not None and by_step is not None and steps < by_step:
            out.pop(loss, None)  # too short to say: neither "fails by N" nor the loss's promise applies
            continue
        out[loss] = {"nonfinite": said == "fails", "by_step": by_step}
    return out


def check(label: str, loss: str, expect: dict, run: dict) -> dict:
    """Whether a run (its document) did what ``expect`` (an :func:`expectations` entry) says."""
    first = run["first_nonfinite_step"]
    if expect["nonfinite"]:
        want = "non-finite" + (f" by step {expect['by_step']}" if expect["by_step"] else "")
        ok = first is not None and (expect["by_step"] is None or first <= expect["by_step"])
    else:
        want, ok = "finite at every step", first is None and run["weights_finite"]
    seen = f"first non-finite step {first}" if first is not None else "finite at every step"
    return {"scenario": label, "loss": loss, "expect": want, "observed": seen, "ok": bool(ok)}
