"""What `pip install .` ships (pyproject.toml's setuptools configuration): the package and every subpackage."""

import tomllib
from fnmatch import fnmatchcase
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def shipped(config: dict, candidates: list[str]) -> list[str]:
    """The ``candidates`` setuptools builds into the wheel: a ``packages`` list, or ``packages.find``'s
    include/exclude patterns (matched against the dotted names, as setuptools matches them)."""
    packages = config.get("tool", {}).get("setuptools", {}).get("packages", {"find": {}})
    if isinstance(packages, list):
        return [c for c in candidates if c in packages]
    find = packages.get("find", {})
    include, exclude = find.get("include", ["*"]), find.get("exclude", [])
    return [c for c in candidates if any(fnmatchcase(c, p) for p in include)
            and not any(fnmatchcase(c, p) for p in exclude)]


def test_the_wheel_holds_every_subpackage():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = sorted(".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "mnist_cli").rglob("__init__.py"))
    assert {"mnist_cli", "mnist_cli.data", "mnist_cli.engine", "mnist_cli.report"} <= set(packages)
    assert shipped(config, packages) == packages


def test_the_check_reads_both_forms_of_the_configuration():
    candidates = ["mnist_cli", "mnist_cli.data"]
    assert shipped({"tool": {"setuptools": {"packages": ["mnist_cli"]}}}, candidates) == ["mnist_cli"]
    find = {"tool": {"setuptools": {"packages": {"find": {"include": ["mnist_cli*"], "exclude": ["*.data"]}}}}}
    assert shipped(find, candidates) == ["mnist_cli"]
    assert shipped({}, candidates) == candidates
