"""`make mutation`: a sampled cosmic-ray run over the core modules, and its per-module table.

Each scope of ``tests/mutation/scopes.toml`` (a module, or the named top-level definitions of one) is mutated
by cosmic-ray in a copy of the tree (``.mutation/tree``: the checkout is never touched) and each mutant is
tested against that scope's own test files (``pytest -x -m "not slow"``). A fixed seed draws ``sample``
mutants per scope from all that cosmic-ray generates in it. A survivor listed in
``tests/mutation/equivalent.txt`` (argued equivalent, one line each) is counted apart; every other
survivor is printed with its diff, as a test to write.

    python scripts/mutation.py                      # every scope: init, sample, run, table
    python scripts/mutation.py --scope fileio       # one scope
    python scripts/mutation.py --report             # the table of the last run, nothing run
    python scripts/mutation.py --recheck            # run the last run's survivors again (after new tests)
    python scripts/mutation.py --sample 5           # a smaller sample than the scopes' own

The table's columns: generated (mutants cosmic-ray made in the scope), run (the sample, executed), killed,
survived (not killed and not argued equivalent), equivalent (survivors on the list, or inside an annotation,
which ``from __future__ import annotations`` never evaluates: such mutants are not drawn), and the kill rate
``killed / (run - equivalent)``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCOPES = ROOT / "tests" / "mutation" / "scopes.toml"
EQUIVALENT = ROOT / "tests" / "mutation" / "equivalent.txt"
WORK = ROOT / ".mutation"
SEP = " || "
ANNOTATION = "in an annotation"  # never evaluated (from __future__ import annotations): not drawn


def load_scopes() -> dict:
    return tomllib.loads(SCOPES.read_text())


def load_equivalent() -> dict[tuple[str, str, str], str]:
    """``(module, operator, mutated line) -> reason`` from equivalent.txt (``#`` comments, blank lines)."""
    out = {}
    for n, line in enumerate(EQUIVALENT.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(SEP)
        if len(parts) != 4 or not parts[3].strip():
            sys.exit(f"{EQUIVALENT}:{n}: expected 'module || operator || mutated line || reason'")
        out[(parts[0].strip(), parts[1].strip(), parts[2].strip())] = parts[3].strip()
    return out


def copy_tree() -> Path:
    """A fresh copy of the package, the tests and the project file, where cosmic-ray may edit files."""
    tree = WORK / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("mnist_cli", "tests"):
        shutil.copytree(ROOT / name, tree / name, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def line_ranges(source: str, names: list[str]) -> list[tuple[int, int]]:
    """The (first, last) lines of the top-level definitions ``names`` in ``source``, decorators included."""
    ranges = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.name in names:
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            ranges[node.name] = (first, node.end_lineno)
    missing = sorted(set(names) - set(ranges))
    if missing:
        sys.exit(f"{SCOPES}: no top-level definition named {', '.join(missing)}")
    return list(ranges.values())


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The (start, end) positions of every annotation in ``source`` if it has ``from __future__ import
    annotations`` (they are then never evaluated, so no mutant inside one can change anything), else none."""
    tree = ast.parse(source)
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and
                 any(a.name == "annotations" for a in n.names) for n in tree.body)
    if not future:
        return []
    nodes = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            nodes.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            nodes.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            nodes.append(node.annotation)
    return [((n.lineno, n.col_offset), (n.end_lineno, n.end_col_offset)) for n in nodes]


def cosmic(*args, cwd: Path) -> None:
    exe = Path(sys.executable).with_name("cosmic-ray")
    subprocess.run([str(exe), *args], cwd=cwd, check=True)


def test_command(scope: dict) -> str:
    tests = " ".join(scope["tests"])
    return f"{sys.executable} -m pytest -x -q -p no:cacheprovider -m 'not slow' {tests}"


def environment() -> dict:
    """The tests' environment in the copy: real MNIST found as the checkout's conftest would find it."""
    env = dict(os.environ)
    shared = ROOT.parent / "shared" / "datasets" / "mnist"
    if "MNIST_SOFTMAX_TEST_DATA" not in env and shared.is_dir():
        env["MNIST_SOFTMAX_TEST_DATA"] = str(shared)
    return env


def write_config(name: str, scope: dict, timeout: float) -> Path:
    config = WORK / f"{name}.toml"
    config.write_text(
        "[cosmic-ray]\n"
        f"module-path = {json.dumps(scope['module'])}\n"
        f"timeout = {timeout}\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(test_command(scope))}\n"
        "\n[cosmic-ray.distributor]\nname = \"local\"\n"
    )
    return config


def sample(session: Path, scope: dict, tree: Path, size: int, seed: int) -> None:
    """Mark as skipped every mutant outside the scope's definitions and all but ``size`` of the rest,
    drawn with ``seed`` from the mutants in a stable order (position, operator, occurrence); mutants inside
    annotations that are never evaluated are not drawn."""
    source = (tree / scope["module"]).read_text()
    ranges = line_ranges(source, scope["only"]) if "only" in scope else None
    spans = annotation_spans(source)
    db = sqlite3.connect(session)
    rows = db.execute("SELECT job_id, operator_name, occurrence, start_pos_row, start_pos_col, end_pos_row "
                      "FROM mutation_specs").fetchall()
    inside = [r for r in rows if ranges is None or any(a <= r[3] and r[5] <= b for a, b in ranges)]
    annotated = {r[0] for r in inside if any(a <= (r[3], r[4]) < b for a, b in spans)}
    pool = sorted((r for r in inside if r[0] not in annotated), key=lambda r: (r[3], r[4], r[1], r[2]))
    chosen = {r[0] for r in random.Random(seed).sample(pool, min(size, len(pool)))}
    inside_ids = {r[0] for r in inside}
    for job_id, *_ in rows:
        if job_id not in chosen:
            why = ANNOTATION if job_id in annotated else "not sampled" if job_id in inside_ids else "outside the scope"
            db.execute("INSERT INTO work_results (job_id, worker_outcome, output) VALUES (?, 'SKIPPED', ?)",
                       (job_id, why))
    db.commit()
    db.close()


def results(session: Path) -> list[dict]:
    db = sqlite3.connect(session)
    rows = db.execute(
        "SELECT s.job_id, s.module_path, s.operator_name, s.start_pos_row, s.start_pos_col, r.worker_outcome, "
        "r.test_outcome, "
        "r.output, r.diff FROM mutation_specs s LEFT JOIN work_results r ON r.job_id = s.job_id").fetchall()
    db.close()
    keys = ("job_id", "module", "operator", "line", "col", "worker", "test", "output", "diff")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def mutated_line(diff: str | None) -> str:
    """The mutant's new line(s) from its unified diff, stripped (several joined by ' / ')."""
    lines = [ln[1:].strip() for ln in (diff or "").splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    return " / ".join(lines)


def operator_name(op: str) -> str:
    return op.split("/")[-1]


def tally(name: str, scope: dict, equivalent: dict) -> tuple[dict, list[dict]]:
    rs = results(WORK / f"{name}.sqlite")
    generated = [r for r in rs if r["output"] != "outside the scope"]
    run = [r for r in generated if r["worker"] != "SKIPPED"]  # the sample (no result yet: pending)
    done = [r for r in run if r["test"] is not None]
    survivors = [r for r in done if r["test"] == "SURVIVED"]
    spans = annotation_spans((ROOT / scope["module"]).read_text())

    def annotated(r: dict) -> bool:
        return any(a <= (r["line"], r["col"]) < b for a, b in spans)

    equiv = [r for r in survivors
             if (scope["module"], operator_name(r["operator"]), mutated_line(r["diff"])) in equivalent or annotated(r)]
    real = [r for r in survivors if r not in equiv]
    row = {"scope": name, "module": scope["module"] + (" (" + ", ".join(scope["only"]) + ")" if "only" in scope else ""),
           "generated": len(generated), "annotations": sum(map(annotated, generated)),
           "run": len(done), "killed": len(done) - len(survivors),
           "survived": len(real), "equivalent": len(equiv), "pending": len(run) - len(done)}
    effective = row["run"] - row["equivalent"]
    row["kill_rate"] = row["killed"] / effective if effective else 1.0
    return row, real


def print_table(rows: list[dict]) -> None:
    head = f"{'scope':<11} {'generated':>9} {'run':>5} {'killed':>6} {'survived':>8} {'equivalent':>10} {'killed %':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        pending = f"  ({r['pending']} not run)" if r["pending"] else ""
        print(f"{r['scope']:<11} {r['generated']:>9} {r['run']:>5} {r['killed']:>6} {r['survived']:>8} "
              f"{r['equivalent']:>10} {100 * r['kill_rate']:>7.0f}%{pending}")
    total = {k: sum(r[k] for r in rows) for k in ("generated", "run", "killed", "survived", "equivalent", "annotations")}
    effective = total["run"] - total["equivalent"]
    rate = 100 * total["killed"] / effective if effective else 100.0
    print(f"{'all':<11} {total['generated']:>9} {total['run']:>5} {total['killed']:>6} {total['survived']:>8} "
          f"{total['equivalent']:>10} {rate:>7.0f}%")
    print(f"(generated includes {total['annotations']} mutants in annotations: never evaluated, so never drawn, and"
          " equivalent when an older sample drew them)")


def print_survivors(scope: dict, real: list[dict]) -> None:
    for r in sorted(real, key=lambda r: r["line"]):
        print(f"\n{scope['module']}:{r['line']} {operator_name(r['operator'])} survived; to list it as equivalent:")
        print(f"  {scope['module']}{SEP}{operator_name(r['operator'])}{SEP}{mutated_line(r['diff'])}{SEP}<why>")
        print("\n".join("    " + ln for ln in (r["diff"] or "").splitlines()[2:]))


def recheck(session: Path) -> None:
    """Forget the survivors' results, so that ``exec`` runs them again."""
    db = sqlite3.connect(session)
    db.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'")
    db.commit()
    db.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scope", action="append", help="a scope of tests/mutation/scopes.toml (repeatable)")
    ap.add_argument("--sample", type=int, help="mutants per scope instead of the scopes' own")
    ap.add_argument("--report", action="store_true", help="print the last run's table only")
    ap.add_argument("--recheck", action="store_true", help="run the last run's survivors again")
    ap.add_argument("--quiet", action="store_true", help="the table only, no survivor diffs")
    args = ap.parse_args(argv)
    config = load_scopes()
    scopes = config["scope"]
    names = args.scope or list(scopes)
    unknown = sorted(set(names) - set(scopes))
    if unknown:
        ap.error(f"unknown scope {', '.join(unknown)} (known: {', '.join(scopes)})")
    equivalent = load_equivalent()
    if not args.report:
        WORK.mkdir(exist_ok=True)
        tree = copy_tree()
        env = environment()
        os.environ.update(env)
        for name in names:
            scope = scopes[name]
            cfg, session = write_config(name, scope, config.get("timeout", 120.0)), WORK / f"{name}.sqlite"
            print(f"== {name}: {scope['module']} against {' '.join(scope['tests'])}", flush=True)
            if args.recheck and session.exists():
                recheck(session)
            else:
                session.unlink(missing_ok=True)
                cosmic("init", str(cfg), str(session), cwd=tree)
                sample(session, scope, tree, args.sample or scope["sample"], config["seed"])
            cosmic("exec", str(cfg), str(session), cwd=tree)
    rows, survivors = [], []
    for name in names:
        if not (WORK / f"{name}.sqlite").exists():
            continue
        row, real = tally(name, scopes[name], equivalent)
        rows.append(row)
        survivors.append((scopes[name], real))
    print()
    print_table(rows)
    if not args.quiet:
        for scope, real in survivors:
            print_survivors(scope, real)
    return 0


if __name__ == "__main__":
    sys.exit(main())
