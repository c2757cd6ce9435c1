"""Every ``mnist_cli.module.name`` that the package's docstrings, the scripts, the README and docs/ mention exists:
a module moved or a function renamed leaves no stale reference behind."""

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOTTED = re.compile(r"mnist_cli(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def _resolves(ref: str) -> bool:
    parts = ref.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def test_every_dotted_reference_resolves():
    texts = [*ROOT.joinpath("mnist_cli").rglob("*.py"), *ROOT.joinpath("scripts").glob("*.py"), ROOT / "README.md",
             *ROOT.joinpath("docs").glob("*.md")]
    assert len(texts) > 20 and any(p.parent.name == "docs" for p in texts)
    stale = sorted({(p.relative_to(ROOT).as_posix(), ref) for p in texts for ref in DOTTED.findall(p.read_text())
                    if not _resolves(ref)})
    assert stale == []
