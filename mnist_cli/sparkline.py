"""A loss curve in one line of text.

    >>> sparkline([3.0, 2.0, 1.5, 1.0, 1.0])
    '█▅▃▁▁'
    >>> sparkline([2.3, float("nan"), float("nan")])
    '▁××'
"""

from __future__ import annotations

import math
from typing import Sequence

BARS = "▁▂▃▄▅▆▇█"
NONFINITE = "×"  # a NaN or infinite value


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
