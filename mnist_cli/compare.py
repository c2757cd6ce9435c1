"""Run several losses from the same initial parameters on the same batches, over a grid of settings.

    result = run_compare(d.train_images, d.train_labels, d.test_images, d.test_labels,
                         CompareConfig())
    doc = to_document(result)
    doc["scenarios"][1]["runs"]["naive"]["first_nonfinite_step"]
    # -> 2

A *cell* is one setting of (lr, input scale, dtype, seed); every selected loss is trained in every
cell. ``train`` draws the initial parameters and the batch order from the seed alone, so within a
cell the runs differ by the loss only; each run records digests of both and the document says
whether they agree. With no sweep given, the cells are the :data:`SCENARIOS` table; a sweep
(``lrs``, ``input_scales``, ``dtypes``) runs their cartesian product instead, and a cell that matches
a scenario keeps its name and expectation. :func:`to_document` turns the result into one JSON-able
dict (documented in the README); :mod:`mnist_cli.report` words it, :mod:`mnist_cli.report.plots` draws it.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnist_cli.engine import TrainConfig, TrainResult, train
from mnist_cli.errors import ConfigError, OutputError, SettingsError
from mnist_cli.evaluate import evaluate_model
from mnist_cli.fileio import atomic_write, check_writable, jsonable
from mnist_cli.forensics import explain_result
from mnist_cli.report.compare import conclusion
from mnist_cli.report.text import number_text
from mnist_cli.settings import HALF_NAMES
from mnist_cli.threads import provenance

SCHEMA = "mnist-softmax/compare/1"
TUTORIAL = TrainConfig()  # TF r1.4 mnist_softmax.py: the value of every axis a sweep leaves alone


@dataclass(frozen=True)
class Scenario:
    """A named setting and what the naive loss does there (measured on real MNIST, seeds 0-7)."""

    name: str
    about: str
    lr: float = TUTORIAL.lr
    input_scale: float = TUTORIAL.input_scale
    dtype: str = TUTORIAL.dtype
    naive: str | None = None  # "finite": naive never goes non-finite; "fails": it does, by `by_step`
    by_step: int | None = None  # with "fails": the first non-finite step is at most this
    precision: str = TUTORIAL.precision  # "mixed": torch.autocast's policy (half dtypes only)
    fused: str | None = None  # as `naive`, for the fused loss where it is not ALWAYS_FINITE (half precision)
    fused_by_step: int | None = None


#: The default cells: a 2 x 2 x 2 grid (lr x input scale x dtype), each cell named, then half precision.
SCENARIOS = (
    Scenario("tutorial", "TF r1.4 mnist_softmax.py as published", naive="finite"),
    Scenario("raw-pixels", "pixels left in [0, 255], the classic beginner mistake", input_scale=255,
             naive="fails", by_step=3),
    Scenario("lr-5", "a learning rate 10x the tutorial's", lr=5, naive="fails", by_step=5),
    Scenario("lr-5-raw", "both mistakes at once", lr=5, input_scale=255, naive="fails", by_step=3),
    Scenario("f64", "float64: exp underflows only past a logit gap of 745", dtype="float64", naive="finite"),
    Scenario("f64-raw-pixels", "float64 does not save raw pixels: gaps reach 1e6", input_scale=255,
             dtype="float64", naive="fails", by_step=3),
    Scenario("f64-lr-5", "float64 survives lr 5: gaps stay near 300 < 745", lr=5, dtype="float64",
             naive="finite"),
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
)

SCENARIO_NAMES = tuple(s.name for s in SCENARIOS)

#: Losses that must stay finite in every float32/float64 cell, whatever the setting (checked by smoke runs).
#: Not in float16/bfloat16 (HALF_NAMES): there a logit can overflow in the product, and then nothing is finite.
ALWAYS_FINITE = ("fused",)

#: Smoke runs: a subset and fewer steps; the SCENARIOS' expectations hold there too (measured).
SMOKE = {"steps": 200, "train_limit": 2000}

#: How compare trains its runs: stacked (the default, :mod:`mnist_cli.engine.stacked`) or one by one with
#: :func:`mnist_cli.engine.train` (the reference the stack is measured against in ``scripts/bench.py``).
ENGINES = ("stack", "alone")

#: Points in each run's downsampled loss curve (``loss_curve`` in the document, the sparkline).
CURVE_POINTS = 40


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


@dataclass(frozen=True)
class CompareConfig:
    """What to compare. Empty sweep tuples mean: the :data:`SCENARIOS` table."""

    losses: tuple[str, ...] = ("naive", "fused")
    lrs: tuple[float, ...] = ()
    input_scales: tuple[float, ...] = ()
    dtypes: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ()  # "pure", "mixed": mixed applies to the half dtypes only
    scenarios: tuple[str, ...] = ()  # names of SCENARIOS to run (none given: all of them); not with a sweep
    loss_scale: str = "dynamic"  # the loss scaling of mixed-precision cells (GradScaler's by default)
    seeds: tuple[int, ...] = (TUTORIAL.seed,)
    steps: int = TUTORIAL.steps
    batch_size: int = TUTORIAL.batch_size
    train_limit: int | None = None  # train on the first N examples only (smoke runs)
    log_every: int = 0  # keep a per-step record every N steps for the metrics files (0 = none)
    threads: int = TUTORIAL.threads  # the tool's own threads in each run (never changes a number)
    engine: str = "stack"  # "stack": runs sharing a seed and dtype as one (mnist_cli.engine.stacked); "alone": one by one

    @property
    def sweep(self) -> bool:
        return bool(self.lrs or self.input_scales or self.dtypes or self.precisions)

    def _points(self) -> list[tuple]:
        """``(lr, input scale, dtype, precision)`` of every cell but the seed: the scenarios, or the sweep's
        product (mixed precision only with the half dtypes; a float32/float64 cell is computed once)."""
        if not self.sweep:
            return [(s.lr, s.input_scale, s.dtype, s.precision) for s in SCENARIOS
                    if not self.scenarios or s.name in self.scenarios]
        forms = [(dtype, precision) for dtype, precision in itertools.product(
            self.dtypes or (TUTORIAL.dtype,), self.precisions or (TUTORIAL.precision,))
            if precision == "pure" or dtype in HALF_NAMES]
        return [(lr, scale, dtype, precision) for (dtype, precision), lr, scale in itertools.product(
            forms, self.lrs or (TUTORIAL.lr,), self.input_scales or (TUTORIAL.input_scale,))]

    def cells(self) -> list[Cell]:
        """The grid, in order: the scenario table (times seeds), or the product of the sweeps."""
        many_seeds = len(self.seeds) > 1
        cells = []
        for (lr, scale, dtype, precision), seed in itertools.product(self._points(), self.seeds):
            scenario = next((s for s in SCENARIOS if (s.lr, s.input_scale, s.dtype, s.precision)
                             == (lr, scale, dtype, precision)), None)
            label = scenario.name if scenario else (f"lr={number_text(lr)} x{number_text(scale)} {dtype}"
                                                   + (" mixed" if precision == "mixed" else ""))
            cells.append(Cell(lr, scale, dtype, seed, scenario, label + (f" seed={seed}" if many_seeds else ""),
                              precision))
        return cells

    def train_config(self, cell: Cell, loss: str) -> TrainConfig:
        return TrainConfig(loss=loss, lr=cell.lr, input_scale=cell.input_scale, dtype=cell.dtype, seed=cell.seed,
                           steps=self.steps, batch_size=self.batch_size, train_limit=self.train_limit,
                           threads=self.threads, precision=cell.precision,
                           loss_scale=self.loss_scale if cell.precision == "mixed" else "none")

    def _check_grid(self) -> None:
        """:class:`SettingsError` for named scenarios that do not exist or meet a sweep, and for mixed precision
        without a half dtype."""
        unknown = [name for name in self.scenarios if name not in SCENARIO_NAMES]
        if unknown:
            raise SettingsError("scenarios", f"no scenario is named {unknown[0]!r}: choose from {', '.join(SCENARIO_NAMES)}")
        if self.scenarios and self.sweep:
            raise SettingsError("scenarios", "named scenarios are the grid when no sweep is given: drop {scenarios} or "
                                "the sweep")
        if self.precisions and set(self.precisions) != {"pure"} and not set(self.dtypes) & set(HALF_NAMES):
            raise SettingsError(("precisions", "dtypes"), "mixed precision applies to the half dtypes: add float16 "
                                "or bfloat16 to {dtypes}")

    def validate(self) -> None:
        """:class:`SettingsError` naming the first setting that cannot work."""
        if not self.losses:
            raise SettingsError("losses", "give at least one loss")
        if not self.seeds:
            raise SettingsError("seeds", "give at least one seed")
        for axis in ("losses", "lrs", "input_scales", "dtypes", "precisions", "scenarios", "seeds"):
            values = getattr(self, axis)
            if len(set(values)) != len(values):
                raise SettingsError(axis, f"a value is listed twice: {', '.join(map(str, values))}")
        if self.engine not in ENGINES:
            raise SettingsError("engine", f"the engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        self._check_grid()
        if self.log_every < 0:
            raise SettingsError("log_every", f"must be >= 0, got {self.log_every}")
        for cell in self.cells():
            for loss in self.losses:
                self.train_config(cell, loss).validate()


def compare_config(*, smoke: bool = False, losses=None, lrs=None, input_scales=None, dtypes=None, seeds=None,
                   steps=None, batch_size=None, train_limit=None, log_every=0, threads=None, precisions=None,
                   loss_scale=None, scenarios=None) -> CompareConfig:
    """A validated :class:`CompareConfig` from the given settings (None = the default; ``smoke`` makes
    the defaults those of :data:`SMOKE`)."""
    preset = SMOKE if smoke else {}
    given = dict(losses=losses, lrs=lrs, input_scales=input_scales, dtypes=dtypes, seeds=seeds, batch_size=batch_size,
                 steps=steps or preset.get("steps"), train_limit=train_limit or preset.get("train_limit"),
                 log_every=log_every, threads=threads, precisions=precisions, loss_scale=loss_scale, scenarios=scenarios)
    config = CompareConfig(**{k: tuple(v) if isinstance(v, (list, tuple)) else v
                              for k, v in given.items() if v is not None})
    config.validate()
    return config


@dataclass
class Run:
    """One loss trained in one cell, evaluated on the test set."""

    cell: Cell
    loss: str
    result: TrainResult
    evaluation: dict  # mnist_cli.evaluate.evaluate_model on the test set
    explanation: dict | None  # mnist_cli.forensics.explain of the first non-finite step
    records: list[dict] = field(default_factory=list)  # per-step records, every config.log_every steps


@dataclass
class CompareResult:
    config: CompareConfig
    runs: list[Run]
    n_train: int
    n_test: int
    seconds: float


def run_compare(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray,
                config: CompareConfig, *, on_run: Callable[[int, int, str], None] | None = None) -> CompareResult:
    """Train every loss in every cell on the shared (decoded once) arrays.

    ``on_run(done, total, label)`` is called after each run. Raises SettingsError for settings that
    cannot work (see :meth:`CompareConfig.validate`).
    """
    config.validate()
    n_train = len(train_labels) if config.train_limit is None else min(config.train_limit, len(train_labels))
    if n_train < config.batch_size:
        raise SettingsError(("batch_size", "train_limit"),
                            f"batch size {config.batch_size} is larger than the {n_train} training examples")
    jobs = [(cell, loss) for cell in config.cells() for loss in config.losses]
    t0 = time.perf_counter()
    train_one = _train_stacked if config.engine == "stack" else _train_alone
    finished: list[str] = []

    def track(done: int, total: int, label: str) -> None:
        finished.append(label)
        if on_run is not None:
            on_run(done, total, label)

    try:
        runs = train_one(train_images, train_labels, test_images, test_labels, config, jobs, track)
    except KeyboardInterrupt as exc:  # Ctrl-C: say which runs had finished (the CLI prints it)
        exc.done = {"command": "compare", "finished": finished, "runs": len(jobs)}
        raise
    return CompareResult(config, runs, n_train, len(test_labels), time.perf_counter() - t0)


def _train_alone(train_images, train_labels, test_images, test_labels, config, jobs, on_run) -> list[Run]:
    """Every run by :func:`mnist_cli.engine.train`, one after the other."""
    runs = []
    for done, (cell, loss) in enumerate(jobs, start=1):
        tc = config.train_config(cell, loss)
        records: list[dict] = []
        result = train(train_images, train_labels, tc, on_log=lambda step, rec, records=records: records.append(rec),
                       log_every=config.log_every)
        evaluation = evaluate_model(result.model, test_images, test_labels, tc.input_scale, threads=tc.threads)
        explanation = explain_result(result, tc.dtype, loss)
        runs.append(Run(cell, loss, result, evaluation, explanation, records))
        if on_run is not None:
            on_run(done, len(jobs), f"{cell.label} / {loss}")
    return runs


def _train_stacked(train_images, train_labels, test_images, test_labels, config, jobs, on_run) -> list[Run]:
    """Every float32/float64 run by :func:`mnist_cli.engine.stacked.train_stack` (runs sharing a seed and dtype as
    one), then evaluated together (:func:`mnist_cli.engine.stacked.evaluate_stack`); the half-precision runs, which
    the stack does not implement, one by one (:func:`_train_alone`). Runs come back in the order of ``jobs``."""

    half = [i for i, (cell, _) in enumerate(jobs) if cell.dtype in HALF_NAMES]
    full = [i for i, (cell, _) in enumerate(jobs) if cell.dtype not in HALF_NAMES]
    out: list[Run | None] = [None] * len(jobs)
    if full:
        stacked = _stack_runs(train_images, train_labels, test_images, test_labels, config, [jobs[i] for i in full],
                              on_run, len(jobs))
        for i, run in zip(full, stacked):
            out[i] = run
    if half:
        done = len(full)

        def on_alone(n, total, label):
            if on_run is not None:
                on_run(done + n, len(jobs), label)

        for i, run in zip(half, _train_alone(train_images, train_labels, test_images, test_labels, config,
                                             [jobs[i] for i in half], on_alone)):
            out[i] = run
    return out


def _stack_runs(train_images, train_labels, test_images, test_labels, config, jobs, on_run, total) -> list[Run]:
    """:func:`_train_stacked`'s stacked part: ``jobs`` trained by :func:`mnist_cli.engine.stacked.train_stack`."""
    from mnist_cli.engine.stacked import evaluate_stack, log_records, train_stack

    configs = [config.train_config(cell, loss) for cell, loss in jobs]
    done = 0

    def on_stack(positions):
        nonlocal done
        for pos in positions:
            done += 1
            if on_run is not None:
                on_run(done, total, f"{jobs[pos][0].label} / {jobs[pos][1]}")

    results = train_stack(train_images, train_labels, configs, on_stack=on_stack)
    evaluations = evaluate_stack(results, test_images, test_labels)
    runs = []
    for (cell, loss), result, evaluation in zip(jobs, results, evaluations):
        explanation = explain_result(result, cell.dtype, loss)
        records = log_records(result, config.log_every) if config.log_every else []
        runs.append(Run(cell, loss, result, evaluation, explanation, records))
    return runs


# --- the document ----------------------------------------------------------------------------------


def loss_curve(losses: np.ndarray, points: int = CURVE_POINTS) -> list[float]:
    """The per-step losses cut into ``points`` consecutive buckets: each bucket's mean, NaN where a
    step in it was non-finite."""
    if losses.size == 0:
        return []
    out = []
    for chunk in np.array_split(losses, min(points, losses.size)):
        out.append(float(np.mean(chunk)) if np.isfinite(chunk).all() else float("nan"))
    return out


def _run_doc(run: Run) -> dict:
    r, ev = run.result, run.evaluation
    return {
        "loss": run.loss,
        "test_accuracy": ev["accuracy"],
        "test_accuracy_softmax": ev["accuracy_softmax"],
        "accuracy_meaningful": ev["accuracy_meaningful"],
        "final_loss": r.final_loss,
        "steps": r.steps,
        "first_nonfinite_step": r.nan.first_nonfinite_step,
        "weights_finite": r.model.finite,
        "nan": r.nan.to_dict(),
        "argmax": {**ev["argmax"], "nonfinite_logits": ev["nonfinite_logits"]},
        "seconds": r.seconds,
        "init_digest": r.init_digest,
        "order_digest": r.order_digest,
        "loss_curve": loss_curve(r.losses),
    }


def _expect_doc(cell: Cell, losses: tuple[str, ...]) -> dict:
    """What each loss must do in this cell: {loss: {"nonfinite": bool, "by_step": int | None}}."""
    out = {loss: {"nonfinite": False, "by_step": None} for loss in losses
           if loss in ALWAYS_FINITE and cell.dtype not in HALF_NAMES}
    s = cell.scenario
    if s is not None and s.naive is not None and "naive" in losses:
        out["naive"] = {"nonfinite": s.naive == "fails", "by_step": s.by_step}
    if s is not None and s.fused is not None and "fused" in losses:
        out["fused"] = {"nonfinite": s.fused == "fails", "by_step": s.fused_by_step}
    return out


def planned_checks(config: CompareConfig) -> int:
    """How many expectations :func:`to_document` will check for ``config``, known before any run: fused
    (:data:`ALWAYS_FINITE`) is checked in every float32/float64 cell, naive (and fused in half precision)
    only in the cells of named scenarios."""
    return sum(len(_expect_doc(cell, config.losses)) for cell in config.cells())


def _check(label: str, loss: str, expect: dict, run: dict) -> dict:
    first = run["first_nonfinite_step"]
    if expect["nonfinite"]:
        want = "non-finite" + (f" by step {expect['by_step']}" if expect["by_step"] else "")
        ok = first is not None and (expect["by_step"] is None or first <= expect["by_step"])
    else:
        want, ok = "finite at every step", first is None and run["weights_finite"]
    seen = f"first non-finite step {first}" if first is not None else "finite at every step"
    return {"scenario": label, "loss": loss, "expect": want, "observed": seen, "ok": bool(ok)}


#: The axes of the stability map's grid, in order (each cell's settings, then the loss); an axis that a
#: cell's document does not carry (``precision`` in a document from before mixed precision) is left out.
MAP_AXES = ("dtype", "precision", "lr", "input_scale", "seed")


def _map_cell(scenario: dict, axes: list[str], losses: tuple[str, ...]) -> dict:
    """One cell of :func:`stability_map`: its label, coordinates and first non-finite step per loss."""
    return {"label": scenario["label"], **{a: scenario[a] for a in axes},
            "first_nonfinite": {loss: scenario["runs"][loss]["first_nonfinite_step"] for loss in losses}}


def stability_map(scenarios: list[dict], losses: tuple[str, ...]) -> dict:
    """First non-finite step per cell and loss (None = never), with the grid's axes spelt out, so that a
    notebook can rebuild the map without knowing how compare lays it out.

    ``grid_axes``: every axis, in order (:data:`MAP_AXES` the document's cells carry, then ``loss``);
    ``values``: each axis's values in the grid's order (the order the cells run in); ``axes``: the
    cell axes with more than one value (what the text report lays out); ``cells``: one per cell, its
    coordinates and ``first_nonfinite`` per loss; ``points``: one per cell and loss, every coordinate
    named (a long table: ``pandas.DataFrame(points)``)."""
    axes = [a for a in MAP_AXES if scenarios and all(a in s for s in scenarios)]
    values = {a: list(dict.fromkeys(s[a] for s in scenarios)) for a in axes}
    cells = [_map_cell(s, axes, losses) for s in scenarios]
    return {
        "grid_axes": [*axes, "loss"],
        "axes": [a for a in axes if len(values[a]) > 1],
        "values": {**values, "loss": list(losses)},
        "losses": list(losses),
        "cells": cells,
        "points": [{**{a: c[a] for a in axes}, "loss": loss, "first_nonfinite_step": step, "label": c["label"]}
                   for c in cells for loss, step in c["first_nonfinite"].items()],
    }


def to_document(result: CompareResult) -> dict:
    """Everything ``compare`` reports, as one dict with stable keys (non-finite floats stay floats;
    pass it through :func:`mnist_cli.report.jsonable` before ``json.dumps``)."""
    cfg = result.config
    by_cell: dict[Cell, dict[str, Run]] = {}
    for run in result.runs:
        by_cell.setdefault(run.cell, {})[run.loss] = run
    scenarios, checks, forensics = [], [], []
    for cell, runs in by_cell.items():
        run_docs = {loss: _run_doc(run) for loss, run in runs.items()}
        expect = _expect_doc(cell, cfg.losses)
        scenarios.append({
            "label": cell.label,
            "name": cell.scenario.name if cell.scenario else None,
            "about": cell.scenario.about if cell.scenario else None,
            "lr": cell.lr, "input_scale": cell.input_scale, "dtype": cell.dtype, "precision": cell.precision,
            "loss_scale": cfg.loss_scale if cell.precision == "mixed" else "none", "seed": cell.seed,
            "same_init": len({d["init_digest"] for d in run_docs.values()}) == 1,
            "same_batches": len({d["order_digest"] for d in run_docs.values()}) == 1,
            "expect": expect,
            "runs": run_docs,
        })
        checks += [_check(cell.label, loss, e, run_docs[loss]) for loss, e in expect.items()]
        forensics += [{"scenario": cell.label, **run.explanation} for run in runs.values() if run.explanation]
    doc = {
        "schema": SCHEMA,
        "settings": {
            "losses": list(cfg.losses), "steps": cfg.steps, "batch_size": cfg.batch_size,
            "train_limit": cfg.train_limit, "init": TUTORIAL.init, "seeds": list(cfg.seeds),
            "grid": "sweep" if cfg.sweep else "scenarios", "threads": cfg.threads,
        },
        "provenance": provenance(cfg.threads),
        "data": {"n_train": result.n_train, "n_test": result.n_test},
        "scenarios": scenarios,
        "stability_map": stability_map(scenarios, cfg.losses),
        "forensics": forensics,
        "checks": checks,
        "ok": all(c["ok"] for c in checks),
        "seconds": result.seconds,
    }
    doc["conclusion"] = conclusion(doc)
    return doc


# --- per-run curves ------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_")


def metrics_paths(config: CompareConfig, directory: str | Path) -> dict[tuple[str, str], Path]:
    """The JSONL file of each run (keyed by cell label and loss) that :func:`write_metrics` writes into
    ``directory``. :class:`OutputError` if two runs would share a file (compared case-insensitively)."""
    directory = Path(directory)
    paths: dict[tuple[str, str], Path] = {}
    owner: dict[str, tuple[str, str]] = {}
    for cell in config.cells():
        for loss in config.losses:
            path = directory / f"{_slug(cell.label)}-{loss}.jsonl"
            key = path.name.casefold()  # one file on a case-insensitive file system too
            if key in owner:
                raise OutputError(
                    f"runs {' / '.join(owner[key])} and {cell.label} / {loss} would both write {path}; "
                    "run them as separate compares with separate {metrics_out} directories", "metrics_out"
                )
            owner[key] = (cell.label, loss)
            paths[cell.label, loss] = path
    return paths


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {directory}: {exc.strerror}; choose a writable {{metrics_out}}",
                          "metrics_out") from None


def probe_outputs(config: CompareConfig, *, metrics_out: str | Path | None = None,
                  plot: str | Path | None = None) -> None:
    """Check, before any run, that the outputs can be written: the ``plot`` file's directory and the
    ``metrics_out`` directory (created here, as :func:`write_metrics` would) with every file it will
    hold. :class:`OutputError` / :class:`ConfigError` naming the path and the option otherwise."""
    if plot is not None:
        from mnist_cli.report.plots import probe_plot

        probe_plot(plot)
    if metrics_out is not None:
        directory = Path(metrics_out)
        paths = metrics_paths(config, directory)
        _make_dir(directory)
        for path in paths.values():
            if path.is_dir():
                raise OutputError(f"cannot write {path}: it is a directory; choose another {{metrics_out}} directory",
                                  "metrics_out")
        check_writable(next(iter(paths.values())), "{metrics_out} directory")


def write_metrics(result: CompareResult, directory: str | Path) -> list[Path]:
    """Write one JSONL file per run into ``directory`` (created if needed): a record every
    ``log_every`` steps (step, loss, nan_loss, inf_loss, nonfinite_grad), then a final record.
    Refuses (:class:`OutputError`, nothing written) when two runs would write one file."""
    directory = Path(directory)
    planned = metrics_paths(result.config, directory)
    _make_dir(directory)
    paths = []
    for run in result.runs:
        path = planned[run.cell.label, run.loss]
        final = {"final": True, "scenario": run.cell.label, "loss": run.loss, "steps": run.result.steps,
                 "final_loss": run.result.final_loss, "test_accuracy": run.evaluation["accuracy"],
                 "first_nonfinite_step": run.result.nan.first_nonfinite_step,
                 "provenance": run.result.model.meta["provenance"]}
        text = "".join(json.dumps(jsonable(r)) + "\n" for r in [*run.records, final])
        with atomic_write(path, "{metrics_out} directory") as fh:
            fh.write(text.encode())
        paths.append(path)
    return paths


def publish(result: CompareResult, data) -> dict:
    """The document of ``result`` with where its data came from (``data``: a :class:`mnist_cli.data.MNIST`)."""
    doc = to_document(result)
    doc["data"].update(dir=str(data.data_dir), verified=data.verified)
    return doc


def add_metrics(doc: dict, result: CompareResult, directory: str | Path) -> None:
    """Write the per-run curves into ``directory`` (:func:`write_metrics`) and list them in ``doc``."""
    doc["metrics_files"] = [str(p) for p in write_metrics(result, directory)]


def add_plot(doc: dict, result: CompareResult, path: str | Path) -> None:
    """Draw the figure to ``path`` (:func:`mnist_cli.report.plots.plot_compare`) and name it in ``doc``."""
    from mnist_cli.report.plots import plot_compare

    t0 = time.perf_counter()
    curves = {(run.cell.label, run.loss): run.result.losses for run in result.runs}
    doc["plot"] = str(plot_compare(doc, path, curves))
    doc["plot_seconds"] = time.perf_counter() - t0


__all__ = ["SCENARIOS", "ALWAYS_FINITE", "SMOKE", "Scenario", "Cell", "CompareConfig", "Run", "CompareResult",
           "run_compare", "to_document", "stability_map", "loss_curve", "metrics_paths",
           "write_metrics", "probe_outputs", "planned_checks", "compare_config", "publish", "add_metrics", "add_plot"]
