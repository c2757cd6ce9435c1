"""The package's layers, read from its source: who may import whom, no import cycles, no oversized modules.

Every ``import`` counts, at the top of a module or inside a function (a lazy import is still a dependency).
A package's ``__init__`` is the package: ``from mnist_cli.engine import train`` depends on ``mnist_cli.engine``,
``from mnist_cli.engine import half`` on the module ``mnist_cli.engine.half``. The layers, bottom up:

* base modules (settings, errors, ...): no subpackage, no command pipeline; ``options`` only ``settings``;
* ``data``: the base only, not ``engine`` nor ``report``;
* ``engine``: no ``report``, no pipeline, no ``cli``;
* ``report``: no ``engine``, no pipeline;
* the command pipelines (train, compare with its document, evaluate, predict, forensics) and the CLI (cli, shell)
  on top.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

import mnist_cli

MAX_LINES = 450
SUBPACKAGES = ("data", "engine", "report")
PIPELINES = ("train", "compare", "compare_document", "compare_workers", "evaluate", "predict", "forensics", "cli", "shell")
BASE = ("settings", "errors", "fileio", "rounding", "frameworks", "losses", "model", "metrics", "scoring", "scenarios",
        "threads", "progress", "options")
ENTRY = ("mnist_cli", "mnist_cli.__main__")  # the package's version and `python -m mnist_cli`


def _q(names):
    return tuple(f"mnist_cli.{n}" for n in names)


def within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def read_package(root: Path) -> dict[str, str]:
    """``{"mnist_cli/data/load.py": source, ...}`` for every module under ``root`` (the mnist_cli directory)."""
    return {p.relative_to(root.parent).as_posix(): p.read_text() for p in sorted(root.rglob("*.py"))}


class Package:
    """The modules of a package given as ``{relative path: source}``, and the imports between them."""

    def __init__(self, files: dict[str, str]):
        self.files = files
        self.path = {}  # module name -> relative path
        for rel in files:
            parts = rel.removesuffix(".py").split("/")
            self.path[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = rel
        self.imports = {m: self._imports(m) for m in self.path}  # module -> [(target module, line)]

    def _imports(self, module: str) -> list[tuple[str, int]]:
        out = []
        rel = self.path[module]
        for node in ast.walk(ast.parse(self.files[rel], rel)):
            if isinstance(node, ast.Import):
                targets = [self._known(a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, one level up per extra dot
                    pkg = module.split(".") if rel.endswith("__init__.py") else module.split(".")[:-1]
                    pkg = pkg[: len(pkg) - node.level + 1]
                    base = ".".join([*pkg, base] if base else pkg)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in self.path else self._known(base)
                           for a in node.names]
            else:
                continue
            out += [(t, node.lineno) for t in dict.fromkeys(targets) if t and t != module]
        return out

    def _known(self, name: str) -> str | None:
        """The module of ours that ``import name`` runs last (``a.b.c`` -> ``a.b.c``, or ``a.b`` if c is a name)."""
        while name and name not in self.path:
            name = name.rpartition(".")[0]
        return name or None

    def offending(self, sources, forbidden, allowed=()) -> list[str]:
        """Each import from a module within ``sources`` of a module within ``forbidden`` (and not ``allowed``)."""
        return [f"{self.path[m]}:{line} imports {t}" for m, targets in self.imports.items() if within(m, *sources)
                for t, line in targets if within(t, *forbidden) and not within(t, *allowed)]

    def cycles(self) -> list[str]:
        """A shortest cycle through each module on one (and not on a cycle already listed), each edge with the
        line that makes it."""
        found, seen = [], set()
        for start in sorted(self.path):
            if start in seen:
                continue
            back = {start: None}
            queue = deque([start])
            while queue and start not in [t for t, _ in self.imports[queue[0]]]:
                m = queue.popleft()
                for t, _ in self.imports[m]:
                    if t not in back:
                        back[t] = m
                        queue.append(t)
            if not queue:
                continue
            chain = [queue[0]]
            while chain[-1] != start:
                chain.append(back[chain[-1]])
            chain = [*reversed(chain), start]  # start -> ... -> start
            seen.update(chain)
            hops = [f"{a} ({self.path[a]}:{dict(self.imports[a])[b]})" for a, b in zip(chain, chain[1:])]
            found.append(" -> ".join([*hops, start]))
        return found

    def too_long(self, limit: int = MAX_LINES) -> list[str]:
        return [f"{rel}: {n} lines > {limit}" for rel, src in self.files.items() if (n := len(src.splitlines())) > limit]

    def unplaced(self) -> list[str]:
        return sorted(m for m in self.path if m not in ENTRY and not within(m, *_q(SUBPACKAGES + PIPELINES + BASE)))


@pytest.fixture(scope="module")
def package() -> Package:
    return Package(read_package(Path(mnist_cli.__file__).parent))


def say(found: list[str]) -> str:
    return "\n".join(found)


def test_every_module_has_a_layer(package):
    assert package.unplaced() == [], "modules in no layer of this test (add them to BASE, PIPELINES or a subpackage)"


def test_data_imports_neither_engine_nor_report(package):
    found = package.offending(_q(["data"]), _q(["engine", "report"]))
    assert not found, say(found)


def test_report_imports_no_pipeline_and_no_engine(package):
    found = package.offending(_q(["report"]), _q([*PIPELINES, "engine"]))
    assert not found, say(found)


def test_engine_imports_no_pipeline_and_no_report(package):
    found = package.offending(_q(["engine"]), _q([*PIPELINES, "report"]))
    assert not found, say(found)


def test_base_modules_import_no_subpackage_and_no_pipeline(package):
    found = package.offending(_q(set(BASE) - {"options"}), _q(SUBPACKAGES + PIPELINES))
    found += package.offending(_q(["options"]), ["mnist_cli"], allowed=_q(["settings"]))
    assert not found, say(found)


def test_no_import_cycles(package):
    found = package.cycles()
    assert not found, say(found)


def test_no_module_is_over_450_lines(package):
    found = package.too_long()
    assert not found, say(found)


# --- the checks themselves: each one catches a violation planted in an otherwise clean package ------------

CLEAN = {
    "mnist_cli/__init__.py": '__version__ = "0"\n',
    "mnist_cli/settings.py": "from mnist_cli.errors import E\n",
    "mnist_cli/errors.py": "",
    "mnist_cli/options.py": "from mnist_cli.settings import X\n",
    "mnist_cli/model.py": "from mnist_cli import fileio\nfrom mnist_cli.settings import X\n",
    "mnist_cli/fileio.py": "from . import errors\n",
    "mnist_cli/data/__init__.py": "from mnist_cli.data.load import load\n",
    "mnist_cli/data/load.py": "from .idx import read\nfrom mnist_cli.settings import X\n",
    "mnist_cli/data/idx.py": "def read():\n    from mnist_cli import errors\n",
    "mnist_cli/engine/__init__.py": "from mnist_cli.engine.schedule import train\n",
    "mnist_cli/engine/schedule.py": "from mnist_cli.engine import base\nfrom mnist_cli.model import M\n",
    "mnist_cli/engine/base.py": "import mnist_cli.model\n",
    "mnist_cli/report/__init__.py": "from mnist_cli.report.text import *\n",
    "mnist_cli/report/text.py": "from ..settings import X\n",
    "mnist_cli/report/plots.py": "from mnist_cli.report import number_text\n",
    "mnist_cli/train.py": "from mnist_cli.engine import train\nfrom mnist_cli.data import load\n",
    "mnist_cli/cli.py": "def main():\n    from mnist_cli.train import run\n    from mnist_cli.report import plots\n",
}

DATA, REPORT, ENGINE = (test_data_imports_neither_engine_nor_report, test_report_imports_no_pipeline_and_no_engine,
                        test_engine_imports_no_pipeline_and_no_report)
BASE_RULE, CYCLES = test_base_modules_import_no_subpackage_and_no_pipeline, test_no_import_cycles
PLANTED = {  # name: (what to put into CLEAN, the rule that must fail, what its failure must say)
    "data -> report, lazily": ({"mnist_cli/data/idx.py": "def f():\n    from mnist_cli.report import x\n"},
                               DATA, "mnist_cli/data/idx.py:2 imports mnist_cli.report"),
    "data package -> engine": ({"mnist_cli/data/__init__.py": "import mnist_cli.engine.base\n"},
                               DATA, "mnist_cli/data/__init__.py:1 imports mnist_cli.engine.base"),
    "report -> pipeline": ({"mnist_cli/report/plots.py": "from mnist_cli.train import run\n"},
                           REPORT, "mnist_cli/report/plots.py:1 imports mnist_cli.train"),
    "report -> engine, relative": ({"mnist_cli/report/text.py": "from ..engine import train\n"},
                                   REPORT, "mnist_cli/report/text.py:1 imports mnist_cli.engine"),
    "engine -> cli": ({"mnist_cli/engine/base.py": "def f():\n    import mnist_cli.cli\n"},
                      ENGINE, "mnist_cli/engine/base.py:2 imports mnist_cli.cli"),
    "engine -> report": ({"mnist_cli/engine/schedule.py": "from mnist_cli.report import plots\n"},
                         ENGINE, "mnist_cli/engine/schedule.py:1 imports mnist_cli.report.plots"),
    "base -> engine, lazily": ({"mnist_cli/model.py": "def f():\n    from mnist_cli.engine.base import g\n"},
                               BASE_RULE, "mnist_cli/model.py:2 imports mnist_cli.engine.base"),
    "base -> pipeline": ({"mnist_cli/errors.py": "from mnist_cli import cli\n"},
                         BASE_RULE, "mnist_cli/errors.py:1 imports mnist_cli.cli"),
    "options -> errors": ({"mnist_cli/options.py": "from mnist_cli.errors import E\n"},
                          BASE_RULE, "mnist_cli/options.py:1 imports mnist_cli.errors"),
    "cycle through a lazy import": ({"mnist_cli/model.py": "def f():\n    from mnist_cli.engine import base\n"},
                                    CYCLES, "mnist_cli.engine.base (mnist_cli/engine/base.py:1) -> mnist_cli.model "
                                            "(mnist_cli/model.py:2) -> mnist_cli.engine.base"),
    "cycle through a package": ({"mnist_cli/report/text.py": "from mnist_cli.report import plots\n"},
                                CYCLES, "mnist_cli.report (mnist_cli/report/__init__.py:1) -> mnist_cli.report.text "
                                        "(mnist_cli/report/text.py:1) -> mnist_cli.report"),
    "long module": ({"mnist_cli/metrics.py": "x = 1\n" * 451},
                    test_no_module_is_over_450_lines, "mnist_cli/metrics.py: 451 lines > 450"),
    "module in no layer": ({"mnist_cli/helpers.py": ""}, test_every_module_has_a_layer, "mnist_cli.helpers"),
}


def test_a_clean_package_passes_every_check():
    clean = Package(CLEAN)
    for rule in dict.fromkeys(rule for _, rule, _ in PLANTED.values()):
        rule(clean)
    assert clean.imports["mnist_cli.fileio"] == [("mnist_cli.errors", 1)]  # relative, a module
    assert clean.imports["mnist_cli.report.text"] == [("mnist_cli.settings", 1)]  # relative, two dots
    assert clean.imports["mnist_cli.report.plots"] == [("mnist_cli.report", 1)]  # a name of the package
    assert clean.imports["mnist_cli.engine.schedule"] == [("mnist_cli.engine.base", 1), ("mnist_cli.model", 2)]
    assert clean.imports["mnist_cli.data.idx"] == [("mnist_cli.errors", 2)]  # lazy
    assert sum(len(v) for v in clean.imports.values()) == 20  # every import above was read
    assert Package({**CLEAN, "mnist_cli/metrics.py": "x = 1\n" * 450}).too_long() == []


@pytest.mark.parametrize("planted, rule, message", PLANTED.values(), ids=PLANTED.keys())
def test_each_check_catches_a_planted_violation(planted, rule, message):
    with pytest.raises(AssertionError) as failure:
        rule(Package({**CLEAN, **planted}))
    assert message in str(failure.value)
