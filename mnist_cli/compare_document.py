"""The ``compare`` document: every run's numbers, the expectations checked, the stability map, in one dict.

:func:`to_document` turns a :class:`mnist_cli.compare.CompareResult` into the JSON-able document that
``compare --json`` prints (documented in docs/json.md); :mod:`mnist_cli.report.compare` words it and
:mod:`mnist_cli.report.plots` draws it, from the document alone.
"""

from __future__ import annotations

import numpy as np

from mnist_cli.report.compare import conclusion
from mnist_cli.scenarios import Cell, check, expectations
from mnist_cli.settings import TUTORIAL
from mnist_cli.threads import provenance

SCHEMA = "mnist-softmax/compare/1"



#: Points in each run's downsampled loss curve (``loss_curve`` in the document, the sparkline).
CURVE_POINTS = 40


def loss_curve(losses: np.ndarray, points: int = CURVE_POINTS) -> list[float]:
    """The per-step losses cut into ``points`` consecutive buckets: each bucket's mean, NaN where a
    step in it was non-finite."""
    if losses.size == 0:
        return []
    out = []
    for chunk in np.array_split(losses, min(points, losses.size)):
        out.append(float(np.mean(chunk)) if np.isfinite(chunk).all() else float("nan"))
    return out


def _run_doc(run) -> dict:
    """A :class:`mnist_cli.compare.Run`'s part of the document."""
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


def to_document(result) -> dict:
    """Everything ``compare`` reports, as one dict with stable keys (non-finite floats stay floats;
    pass it through :func:`mnist_cli.fileio.jsonable` before ``json.dumps``)."""
    cfg = result.config
    by_cell: dict[Cell, dict] = {}  # cell -> {loss: mnist_cli.compare.Run}
    for run in result.runs:
        by_cell.setdefault(run.cell, {})[run.loss] = run
    scenarios, checks, forensics = [], [], []
    for cell, runs in by_cell.items():
        run_docs = {loss: _run_doc(run) for loss, run in runs.items()}
        expect = expectations(cell, cfg.losses, cfg.steps, cfg.dataset)
        scenarios.append({
            "label": cell.label,
            "name": cell.scenario.name if cell.scenario else None,
            "about": cell.scenario.on(cfg.dataset).about if cell.scenario else None,  # as measured there
            "lr": cell.lr, "input_scale": cell.input_scale, "dtype": cell.dtype, "precision": cell.precision,
            "loss_scale": cfg.loss_scale if cell.precision == "mixed" else "none", "seed": cell.seed,
            "same_init": len({d["init_digest"] for d in run_docs.values()}) == 1,
            "same_batches": len({d["order_digest"] for d in run_docs.values()}) == 1,
            "expect": expect,
            "runs": run_docs,
        })
        checks += [check(cell.label, loss, e, run_docs[loss]) for loss, e in expect.items()]
        forensics += [{"scenario": cell.label, **run.explanation} for run in runs.values() if run.explanation]
    doc = {
        "schema": SCHEMA,
        "settings": {
            "losses": list(cfg.losses), "steps": cfg.steps, "batch_size": cfg.batch_size,
            "train_limit": cfg.train_limit, "init": TUTORIAL.init, "seeds": list(cfg.seeds),
            "grid": "sweep" if cfg.sweep else "scenarios", "threads": cfg.threads,
            "expectations_of": cfg.dataset,  # the dataset whose measured expectations were checked
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
