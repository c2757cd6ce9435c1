"""Measure what compare's named scenarios do on each declared dataset, and check the expectations table.

    python scripts/measure_scenarios.py --data mnist=DIR --data fashion-mnist=DIR   # seeds 0-7, both presets
    python scripts/measure_scenarios.py --data fashion-mnist=DIR --json runs.json   # keep the measurements
    python scripts/measure_scenarios.py --from runs.json                            # re-read them, no training

Every scenario of :data:`mnist_cli.scenarios.SCENARIOS` (the smoke-only selection too) is run by
:func:`mnist_cli.compare.run_compare`, losses naive and fused, over the seeds, in two presets: ``full`` (compare's
default: 1000 steps on all 60000 examples) and ``smoke`` (:data:`mnist_cli.scenarios.SMOKE`). For each scenario and
loss it prints the first non-finite step of every seed, the largest logit gap (max - min) of the batch at that
step (from the forensics), what holds on *every* seed ("finite", "fails by N" with N the latest first break, or
"seed-dependent"), and what the table says there for that dataset (:func:`mnist_cli.scenarios.expectations`).
Exit 1 if a stated expectation fails on a seed measured (a scenario marked ``smoke=False`` is not held to its
expectations in the smoke preset). A dataset without ``--data`` is read from its default data directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

LOSSES = ("naive", "fused")
PRESETS = ("full", "smoke")


def measure(dataset: str, data_dir: str | None, seeds: list[int], presets: list[str], workers) -> dict:
    """{preset: {scenario: {loss: [{"seed", "first", "weights_finite", "gap"}]}}} for ``dataset``."""
    from mnist_cli.compare import compare_config, run_compare
    from mnist_cli.data import load_mnist
    from mnist_cli.scenarios import SCENARIO_NAMES

    data = load_mnist(data_dir, offline=True, dataset=dataset)
    out: dict = {}
    for preset in presets:
        config = compare_config(smoke=preset == "smoke", losses=LOSSES, seeds=seeds, scenarios=SCENARIO_NAMES,
                                workers=workers)
        def progress(done, total, label, preset=preset):
            print(f"\r{dataset} {preset}: {done}/{total} runs", end="", file=sys.stderr, flush=True)

        result = run_compare(data.train_images, data.train_labels, data.test_images, data.test_labels, config,
                             on_run=progress)
        print(file=sys.stderr)
        table = out.setdefault(preset, {"steps": config.steps, "scenarios": {}})
        for run in result.runs:
            table["scenarios"].setdefault(run.cell.scenario.name, {}).setdefault(run.loss, []).append({
                "seed": run.cell.seed,
                "first": run.result.nan.first_nonfinite_step,
                "weights_finite": bool(run.result.model.finite),
                "gap": run.explanation["max_gap_max_minus_min"] if run.explanation else None,
            })
    return out


def holds_on_every_seed(runs: list[dict]) -> str:
    """What is true of every run: "finite", "fails by N" (N = the latest first non-finite step) or neither."""
    firsts = [r["first"] for r in runs]
    if all(f is None and r["weights_finite"] for f, r in zip(firsts, runs)):
        return "finite"
    if all(f is not None for f in firsts):
        return f"fails by {max(firsts)}"
    return "seed-dependent"


def _gaps(runs: list[dict]) -> str:
    gaps = [r["gap"] for r in runs if r["gap"] is not None]
    return f"{min(gaps):.3g}-{max(gaps):.3g}" if gaps else "-"


def report(measured: dict) -> tuple[list[str], int]:
    """The printed table of every dataset and preset, and how many stated expectations failed."""
    from mnist_cli.compare import CompareConfig
    from mnist_cli.scenarios import SCENARIOS, check, expectations

    lines, failed = [], 0
    by_name = {s.name: s for s in SCENARIOS}
    for dataset, presets in measured.items():
        for preset, table in presets.items():
            lines += ["", f"{dataset}, {preset} ({table['steps']} steps): scenario / loss: first non-finite step "
                      "per seed; gap at it; holds on every seed; the table says"]
            config = CompareConfig(losses=LOSSES, scenarios=tuple(table["scenarios"]), steps=table["steps"],
                                   dataset=dataset)
            cells = {c.scenario.name: c for c in config.cells()}
            for name, by_loss in table["scenarios"].items():
                held = preset == "full" or by_name[name].smoke
                expect = expectations(cells[name], LOSSES, table["steps"], dataset)
                for loss, runs in by_loss.items():
                    firsts = " ".join("-" if r["first"] is None else str(r["first"]) for r in runs)
                    said = expect.get(loss)
                    bad = [r["seed"] for r in runs if said and not check(name, loss, said, {
                        "first_nonfinite_step": r["first"], "weights_finite": r["weights_finite"]})["ok"]]
                    failed += len(bad) * held
                    verdict = ("-" if said is None else check(name, loss, said, {"first_nonfinite_step": None,
                               "weights_finite": True})["expect"]) + (
                        "" if not bad else f"  FAILS on seeds {','.join(map(str, bad))}" if held
                        else "  (not held: smoke=False)")
                    lines.append(f"  {name:16} {loss:6} {firsts:24} gap {_gaps(runs):15} "
                                 f"{holds_on_every_seed(runs):16} {verdict}")
    return lines, failed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", action="append", default=[], metavar="DATASET=DIR",
                        help="a dataset to measure and its data directory (repeat); default: both, default dirs")
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6,7", help="comma-separated seeds (default 0-7)")
    parser.add_argument("--presets", default=",".join(PRESETS), help="full,smoke (default both)")
    parser.add_argument("--workers", default="1", help="compare's --workers (never changes a number)")
    parser.add_argument("--json", type=Path, help="also write the measurements to this file")
    parser.add_argument("--from", dest="sources", type=Path, action="append", default=[],
                        help="read measurements from this file (repeat: one per dataset); train nothing")
    args = parser.parse_args(argv)
    if args.sources:
        measured = {name: m for source in args.sources for name, m in json.loads(source.read_text()).items()}
    else:
        from mnist_cli.settings import DATASET_NAMES

        given = dict(item.split("=", 1) for item in args.data) or dict.fromkeys(DATASET_NAMES)
        seeds = [int(s) for s in args.seeds.split(",")]
        workers = args.workers if args.workers == "auto" else int(args.workers)
        measured = {name: measure(name, path, seeds, args.presets.split(","), workers) for name, path in given.items()}
        if args.json:
            args.json.write_text(json.dumps(measured, indent=1) + "\n")
    lines, failed = report(measured)
    print("\n".join(lines))
    print(f"\n{failed} stated expectation(s) failed on a seed measured.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
