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

import functools
import math
import os
import re
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
    """One decimal for ordinary numbers, 4 significant digits beyond a million (float32's 3e38) and below
    0.05 (a loss scale of 2**-32 is 2.328e-10, not 0.0)."""
    if isinstance(x, float) and not math.isfinite(x):
        return value_text(x)
    if not isinstance(x, (int, float)):
        return str(x)
    return f"{x:.1f}" if x == 0 or 0.05 <= abs(x) < 1e6 else f"{x:.4g}"


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


MIN_WIDTH = 40  # narrower than this, a report is not laid out any narrower (lines then wrap in the terminal)


def known_width() -> int | None:
    """The terminal's width, if there is one to fit: ``COLUMNS`` if set, else that of the terminal stdout
    or (when stdout is a pipe or a file) stderr is on; None for neither (a log file has no width)."""
    columns = shutil.get_terminal_size((0, 0)).columns  # COLUMNS, then stdout's terminal
    for fd in (2,) if not columns else ():
        try:
            columns = os.get_terminal_size(fd).columns
        except OSError:  # not a terminal either
            pass
    return max(MIN_WIDTH, columns) if columns else None


def terminal_width() -> int:
    """The width to lay the report out in: :func:`known_width`, at most :data:`WIDTH` (also without one)."""
    return min(WIDTH, known_width() or WIDTH)


def fit(text: str, width: int | None = None) -> str:
    """``text`` with every line longer than ``width`` (default :func:`terminal_width`) wrapped at words,
    each continuation under the value of a ``label   value`` row, else indented two more than its line (a
    word longer than the width is cut): what
    every readable report and help text passes through last, so no line is wider than the terminal."""
    width = width or terminal_width()
    out = []
    for line in text.split("\n"):
        if len(line) <= width:
            out.append(line)
            continue
        lead = min(len(line) - len(line.lstrip(" ")), width // 2)
        column = re.match(r" *\S.*?\S {2,}(?=\S)", line)  # a "label   value" row: continue under the value
        hang = column.end() if column and column.end() <= width // 2 else lead + 2
        out += textwrap.wrap(line.strip(), width, initial_indent=" " * lead, subsequent_indent=" " * hang,
                             break_on_hyphens=False) or [""]
    return "\n".join(out)


def fitted(format_function):
    """A report's ``format_*`` whose text is :func:`fit` to the terminal, when there is one: the one way
    each report is laid out at any width (``COLUMNS=60`` included)."""
    @functools.wraps(format_function)
    def formatted(*args, **kwargs) -> str:
        text, width = format_function(*args, **kwargs), known_width()
        return fit(text, width) if width else text  # no terminal, no width: a log keeps its long lines

    return formatted


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
