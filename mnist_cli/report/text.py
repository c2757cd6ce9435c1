"""The words every report shares: numbers, NaN and inf, plurals, sparklines, wrapping, the data line.

    >>> value_text(float("nan")), value_text(float("inf")), value_text(0.25, ".2f"), value_text(None)
    ('NaN', 'inf', '0.25', '-')
    >>> sparkline([3.0, 2.0, 1.5, 1.0, 1.0])
    '█▅▃▁▁'
    >>> sparkline([2.3, float("nan"), float("nan")])
    '▁××'

Pure functions from values to text; one module per command's report builds on them
(:mod:`~mnist_cli.report.train`, :mod:`~mnist_cli.report.evaluate`, :mod:`~mnist_cli.report.predict`,
:mod:`~mnist_cli.report.compare`, :mod:`~mnist_cli.report.explain`).
"""

from __future__ import annotations

import math
import shutil
import textwrap
from collections.abc import Sequence

from mnist_cli.data.load import describe_data

WIDTH = 100  # wrap prose for an ordinary terminal
NONFINITE = "×"  # a NaN or infinite value in a sparkline
BARS = "▁▂▃▄▅▆▇█"  # a sparkline's eight heights


def value_text(x, fmt: str = "g") -> str:
    """A number in ``fmt``; ``None`` as ``-``; NaN and infinities spelt ``NaN``, ``inf``, ``-inf`` (the one spelling)."""
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return "NaN" if x != x else ("inf" if x > 0 else "-inf")
    return format(x, fmt)


def accuracy_text(acc: float, meaningful: bool = True, weights_finite: bool = False) -> str:
    """An accuracy to 4 places, or ``n/a`` with the reason when a logit was non-finite (argmax of a NaN
    row is 0, so the number would only count the zeros among the labels)."""
    if meaningful:
        return f"{acc:.4f}"
    return f"n/a (non-finite {'logits' if weights_finite else 'weights'})"


def plural(n: int, word: str) -> str:
    """``1 step``, ``2 steps``."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def number_text(x: float) -> str:
    """``x`` as short as ``:g`` writes it when that reads back as ``x``, else with every digit needed
    (``0.1000001``, not ``0.1``): distinct values always get distinct labels and file names."""
    short = f"{x:g}"
    return short if float(short) == x else repr(float(x))


def short_number(x) -> str:
    """One decimal for ordinary numbers, 4 significant digits beyond a million (float32's 3e38)."""
    if isinstance(x, float) and not math.isfinite(x):
        return value_text(x)
    if not isinstance(x, (int, float)):
        return str(x)
    return f"{x:.1f}" if abs(x) < 1e6 else f"{x:.4g}"


def sparkline(values: Sequence[float], width: int | None = None) -> str:
    """One character per value (or per bucket of values when ``width`` is smaller than their
    number): the finite ones scaled between their min and max, the non-finite ones as ``×``."""
    values = [float(v) for v in values]
    if width is not None and 0 < width < len(values):
        size = len(values) / width
        buckets = [values[int(i * size) : int((i + 1) * size)] for i in range(width)]
        values = [sum(b) / len(b) if all(math.isfinite(v) for v in b) else math.nan for b in buckets]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return NONFINITE * len(values)
    lo, hi = min(finite), max(finite)
    span = (hi - lo) or 1.0
    top = len(BARS) - 1
    return "".join(BARS[round((v - lo) / span * top)] if math.isfinite(v) else NONFINITE for v in values)


def data_lines(r: dict) -> list[str]:
    """The report's line naming the data directory and whether it is verified MNIST (if known)."""
    data = r.get("data") or {}
    return [describe_data(data["dir"], data["verified"], data.get("title", "MNIST"))] if "dir" in data else []


def class_name(r: dict, label) -> str:
    """A class as the report's dataset names it: the digit for MNIST, ``7 (Sneaker)`` for Fashion-MNIST."""
    classes = (r.get("data") or {}).get("classes")
    if not classes or label is None or classes[label] == str(label):
        return str(label)
    return f"{label} ({classes[label]})"


def foreign_lines(r: dict) -> list[str]:
    """For a model from elsewhere (``--foreign``): that nothing is known of its training."""
    if not r.get("foreign"):
        return []
    return ["model: W and b from elsewhere (--foreign): nothing is known of its training (settings, data, "
            f"provenance); computed at input scale {number_text(r['input_scale'])}"]


def provenance_text(p: dict | None) -> str:
    """One line naming what computed a result: threads, BLAS library and kernel, NumPy, CPU."""
    if not isinstance(p, dict) or not p:  # a model saved before provenance was recorded (or tampered with)
        return "not recorded"
    libs = p.get("blas") if isinstance(p.get("blas"), list) else []
    blas = ", ".join(f"{b.get('library')} {b.get('version')} {b.get('kernel') or ''}".rstrip()
                     for b in libs if isinstance(b, dict))
    threads = p.get("threads")
    return (f"{threads} thread{'s' if threads != 1 else ''} (BLAS {p.get('blas_threads', '?')}), "
            f"{blas or 'BLAS unknown'}, numpy {p.get('numpy')}, {p.get('cpu')}")


def terminal_width() -> int:
    """The width to lay the report out in: the terminal's (``COLUMNS`` first), at most :data:`WIDTH`."""
    return min(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns)


def wrap(text: str, width: int = WIDTH) -> list[str]:
    """``text`` as lines of at most ``width`` characters (words whole, hyphenated ones too)."""
    return textwrap.wrap(text, width, break_on_hyphens=False)


def para(head: str, text: str, indent: int, width: int = WIDTH) -> str:
    """``head`` + ``text`` wrapped to ``width``, continuation lines under the text."""
    first = " " * indent + head
    return textwrap.fill(text, width=width, initial_indent=first, subsequent_indent=" " * len(first),
                         break_on_hyphens=False)


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, an ellipsis marking the cut."""
    return text if len(text) <= width else text[: width - 1] + "…"
