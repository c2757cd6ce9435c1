"""Progress bars: tqdm, imported only when a bar is actually shown."""

from __future__ import annotations

import sys


def bars_enabled(quiet: bool) -> bool:
    """Bars go to stderr, and only when it is a terminal and the user did not ask for quiet."""
    return not quiet and sys.stderr.isatty()


def make_bar(total: int, desc: str, unit: str = "it", enabled: bool = True, **kwargs):
    """A tqdm bar, or ``None`` when disabled (callers check before updating)."""
    if not enabled:
        return None
    from tqdm import tqdm  # deferred: importing tqdm costs startup time that quiet runs need not pay

    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, file=sys.stderr, **kwargs)
