"""Run several losses from the same initial parameters on the same batches, over a grid of settings.

    result = run_compare(d.train_images, d.train_labels, d.test_images, d.test_labels,
                         CompareConfig())
    doc = to_document(result)
    doc["scenarios"][1]["runs"]["naive"]["first_nonfinite_step"]
    # -> 2

A *cell* is one setting of (lr, input scale, dtype, seed); every selected loss is trained in every
cell. ``train`` draws the initial parameters and the batch order from the seed alone, so within a
cell the runs differ by the loss only; each run records digests of both and the document says
whether they agree. With no sweep given, the cells are the :data:`mnist_cli.scenarios.SCENARIOS` table;
a sweep (``lrs``, ``input_scales``, ``dtypes``) runs their cartesian product instead, and a cell that
matches a scenario keeps its name and expectation. :func:`mnist_cli.compare_document.to_document` turns
the result into one JSON-able dict (documented in docs/json.md); :mod:`mnist_cli.report` words it,
:mod:`mnist_cli.report.plots` draws it.
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

from mnist_cli.compare_document import to_document
from mnist_cli.compare_workers import lanes, run_groups, train_groups
from mnist_cli.engine import TrainResult, train
from mnist_cli.engine.base import emulated_framework
from mnist_cli.errors import ConfigError, OutputError, SettingsError
from mnist_cli.fileio import atomic_write, check_writable, jsonable
from mnist_cli.forensics import explain_result
from mnist_cli.report.text import number_text
from mnist_cli.scenarios import SCENARIO_NAMES, SCENARIOS, SMOKE, Cell, expectations
from mnist_cli.scoring import evaluate_model, evaluate_stack
from mnist_cli.settings import DATASET_NAMES, HALF_NAMES, MAX_RUNS, MAX_WORKERS, TUTORIAL, TrainConfig

#: How compare trains its runs: stacked (the default, :mod:`mnist_cli.engine.stacked`) or one by one with
#: :func:`mnist_cli.engine.train` (the reference the stack is measured against in ``scripts/bench.py``).
ENGINES = ("stack", "alone")

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
    workers: int | str = "auto"  # processes training the groups of runs, or "auto" (never changes a number)
    engine: str = "stack"  # "stack": runs sharing a seed and dtype as one (mnist_cli.engine.stacked); "alone": one by one
    frameworks: tuple[str, ...] = ()  # profiles to sweep (mnist_cli.frameworks); none given: each scenario's own
    dataset: str = "mnist"  # whose measured expectations the runs are checked against (mnist_cli.scenarios)

    @property
    def sweep(self) -> bool:
        return bool(self.lrs or self.input_scales or self.dtypes or self.precisions or self.frameworks)

    def _points(self) -> list[tuple]:
        """``(lr, input scale, dtype, precision, framework)`` of every cell but the seed: the scenarios, or the
        sweep's product (mixed precision only with the half dtypes; a float32/float64 cell is computed once)."""
        if not self.sweep:
            return [(s.lr, s.input_scale, s.dtype, s.precision, s.framework) for s in SCENARIOS
                    if not self.scenarios or s.name in self.scenarios]
        return [(lr, scale, dtype, precision, fw) for (dtype, precision), lr, scale, fw in itertools.product(
            self._forms(), self.lrs or (TUTORIAL.lr,), self.input_scales or (TUTORIAL.input_scale,),
            self.frameworks or (TUTORIAL.framework,))]

    def _forms(self) -> list[tuple[str, str]]:
        """The sweep's ``(dtype, precision)`` pairs (mixed with the half dtypes only)."""
        return [(dtype, precision) for dtype, precision in itertools.product(
            self.dtypes or (TUTORIAL.dtype,), self.precisions or (TUTORIAL.precision,))
            if precision == "pure" or dtype in HALF_NAMES]

    def runs(self) -> int:
        """How many runs the grid makes (cells x losses), counted without building it."""
        points = (len(self._forms()) * len(self.lrs or (1,)) * len(self.input_scales or (1,))
                  * len(self.frameworks or (1,)) if self.sweep else len(self._points()))
        return points * len(self.seeds) * len(self.losses)

    def cells(self) -> list[Cell]:
        """The grid, in order: the scenario table (times seeds), or the product of the sweeps."""
        many_seeds = len(self.seeds) > 1
        cells = []
        for (lr, scale, dtype, precision, fw), seed in itertools.product(self._points(), self.seeds):
            scenario = next((s for s in SCENARIOS if (s.lr, s.input_scale, s.dtype, s.precision, s.framework)
                             == (lr, scale, dtype, precision, fw)), None)
            label = scenario.name if scenario else (f"lr={number_text(lr)} x{number_text(scale)} {dtype}"
                                                   + (" mixed" if precision == "mixed" else "")
                                                   + (f" {fw}" if fw != TUTORIAL.framework else ""))
            cells.append(Cell(lr, scale, dtype, seed, scenario, label + (f" seed={seed}" if many_seeds else ""),
                              precision, fw))
        return cells

    def train_config(self, cell: Cell, loss: str) -> TrainConfig:
        return TrainConfig(loss=loss, lr=cell.lr, input_scale=cell.input_scale, dtype=cell.dtype, seed=cell.seed,
                           steps=self.steps, batch_size=self.batch_size, train_limit=self.train_limit,
                           threads=self.threads, precision=cell.precision, framework=cell.framework,
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
        for axis in ("losses", "lrs", "input_scales", "dtypes", "precisions", "scenarios", "seeds", "frameworks"):
            values = getattr(self, axis)
            if len(set(values)) != len(values):
                raise SettingsError(axis, f"a value is listed twice: {', '.join(map(str, values))}")
        if self.dataset not in DATASET_NAMES:
            raise SettingsError("dataset", f"the dataset must be one of {', '.join(DATASET_NAMES)}, got {self.dataset!r}")
        if self.engine not in ENGINES:
            raise SettingsError("engine", f"the engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        self._check_grid()
        if self.workers != "auto" and not (isinstance(self.workers, int) and 1 <= self.workers <= MAX_WORKERS):
            raise SettingsError("workers", f"give a number of workers from 1 to {MAX_WORKERS} or auto, got {self.workers!r}")
        if self.log_every < 0:
            raise SettingsError("log_every", f"must be >= 0, got {self.log_every}")
        if self.runs() > MAX_RUNS:
            raise SettingsError(("lrs", "input_scales", "seeds"), f"this grid makes {self.runs():,} runs, more than "
                                f"the {MAX_RUNS:,} a compare may make: sweep fewer values")
        for cell in self.cells():
            for loss in self.losses:
                self.train_config(cell, loss).validate()


def compare_config(*, smoke: bool = False, losses=None, lrs=None, input_scales=None, dtypes=None, seeds=None,
                   steps=None, batch_size=None, train_limit=None, log_every=0, threads=None, precisions=None,
                   loss_scale=None, scenarios=None, workers=None, frameworks=None, dataset=None) -> CompareConfig:
    """A validated :class:`CompareConfig` from the given settings (None = the default; ``smoke`` makes
    the defaults those of :data:`SMOKE`)."""
    preset = SMOKE if smoke else {}
    if smoke and scenarios is None and not (lrs or input_scales or dtypes or precisions or frameworks):
        scenarios = [s.name for s in SCENARIOS if s.smoke]  # the scenarios measured under the smoke preset
    given = dict(losses=losses, lrs=lrs, input_scales=input_scales, dtypes=dtypes, seeds=seeds, batch_size=batch_size,
                 steps=steps or preset.get("steps"), train_limit=train_limit or preset.get("train_limit"),
                 log_every=log_every, threads=threads, precisions=precisions, loss_scale=loss_scale, scenarios=scenarios,
                 workers=workers, frameworks=frameworks, dataset=dataset)
    config = CompareConfig(**{k: tuple(v) if isinstance(v, (list, tuple)) else v
                              for k, v in given.items() if v is not None})
    config.validate()
    if loss_scale is not None and not any(c.precision == "mixed" for c in config.cells()):
        raise SettingsError(("loss_scale", "precisions"), "loss scaling applies to mixed-precision cells only, and "
                            "this grid has none: add mixed to {precisions} with a half dtype, or drop {loss_scale}")
    return config


def planned_checks(config: CompareConfig) -> int:
    """How many expectations :func:`to_document` will check for ``config``, known before any run: fused
    (a loss whose record is ``promised_finite``) is checked in every float32/float64 cell, naive (and fused in
    half precision) only in the cells of named scenarios."""
    return sum(len(expectations(cell, config.losses, config.steps, config.dataset)) for cell in config.cells())


@dataclass
class Run:
    """One loss trained in one cell, evaluated on the test set."""

    cell: Cell
    loss: str
    result: TrainResult
    evaluation: dict  # mnist_cli.scoring.evaluate_model on the test set
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
    groups = run_groups(config, jobs)
    workers = lanes(config, jobs, groups)
    t0 = time.perf_counter()
    finished: list[str] = []

    def on_group(positions: list[int]) -> None:
        for pos in positions:
            finished.append(f"{jobs[pos][0].label} / {jobs[pos][1]}")
            if on_run is not None:
                on_run(len(finished), len(jobs), finished[-1])

    arrays = {"train_images": train_images, "train_labels": train_labels, "test_images": test_images,
              "test_labels": test_labels}
    try:
        runs = train_groups(arrays, config, jobs, groups, workers, train_group, on_group)
    except KeyboardInterrupt as exc:  # Ctrl-C: say which runs had finished (the CLI prints it)
        exc.done = {"command": "compare", "finished": finished, "runs": len(jobs)}
        raise
    return CompareResult(config, runs, n_train, len(test_labels), time.perf_counter() - t0)


def train_group(train_images, train_labels, test_images, test_labels, config, jobs) -> list[Run]:
    """One group of :func:`mnist_cli.compare_workers.run_groups` (a stack, or one run), trained and evaluated."""
    from mnist_cli.engine.stacked import stackable

    if len(jobs) > 1 or (config.engine == "stack" and stackable(config.train_config(*jobs[0]))):
        return _stack_runs(train_images, train_labels, test_images, test_labels, config, jobs)
    return [_train_alone(train_images, train_labels, test_images, test_labels, config, *jobs[0])]


def _train_alone(train_images, train_labels, test_images, test_labels, config, cell, loss) -> Run:
    """One run by :func:`mnist_cli.engine.train` (one the stack does not compute, or ``engine="alone"``)."""
    tc = config.train_config(cell, loss)
    records: list[dict] = []
    result = train(train_images, train_labels, tc, on_log=lambda step, rec: records.append(rec), log_every=config.log_every)
    evaluation = evaluate_model(result.model, test_images, test_labels, tc.input_scale, threads=tc.threads,
                                framework=emulated_framework(tc))  # in the run's own arithmetic
    return Run(cell, loss, result, evaluation, explain_result(result, tc.dtype, loss), records)


def _stack_runs(train_images, train_labels, test_images, test_labels, config, jobs) -> list[Run]:
    """A stack's ``jobs`` trained by :func:`mnist_cli.engine.stacked.train_stack`, evaluated together
    (:func:`mnist_cli.scoring.evaluate_stack`)."""
    from mnist_cli.engine.stacked import log_records, train_stack

    configs = [config.train_config(cell, loss) for cell, loss in jobs]
    results = train_stack(train_images, train_labels, configs)
    evaluations = evaluate_stack([r.model for r in results], [c.input_scale for c in configs], test_images, test_labels,
                                 [emulated_framework(c) for c in configs])
    runs = []
    for (cell, loss), result, evaluation in zip(jobs, results, evaluations):
        explanation = explain_result(result, cell.dtype, loss)
        records = log_records(result, config.log_every) if config.log_every else []
        runs.append(Run(cell, loss, result, evaluation, explanation, records))
    return runs


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
    doc["data"].update(data.where)
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


__all__ = ["CompareConfig", "Run", "CompareResult", "run_compare", "metrics_paths", "write_metrics", "probe_outputs",
           "planned_checks", "compare_config", "publish", "add_metrics", "add_plot"]
