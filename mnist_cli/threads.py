"""Who does the arithmetic: BLAS pinned to one thread, the tool's own threads, and their provenance.

    with blas_pinned():
        z = x @ W                                                # one BLAS thread, whatever the env says

Two kinds of threads could run a step, and only one is allowed to:

- **BLAS threads** (OpenBLAS, MKL, ...: ``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``) are pinned to
  one inside every training, evaluation and compare run (:func:`blas_pinned`, through threadpoolctl).
  Our products are tiny (10 x 785 x 100 at the tutorial's batch): a second BLAS thread wins nothing on
  an idle machine, spins on a busy one (3-100x slower with one other busy process), and changes how
  some products are split, so results would depend on the thread count.
- **The tool's own threads** (``--threads``, ``MNIST_SOFTMAX_THREADS``) share out fixed-size row
  groups of large batches (full batch) and evaluation blocks. Each group's partial sum is kept apart
  and the partial sums are added in group order, so every number is bit-identical for any thread
  count; only the speed changes.

:func:`provenance` names what ran (threads, BLAS library, version and kernel, NumPy, CPU), so two
machines' numbers can be told apart: the same seed gives the same numbers on one machine, and may
differ in the last bits on a CPU whose BLAS picks another kernel.
"""

from __future__ import annotations

import contextlib
import os
import platform
import threading
from collections.abc import Iterator
from functools import lru_cache

_lock = threading.Lock()
_depth = 0  # blas_pinned() nesting: only the outermost call changes the BLAS thread count
_limiter = None


def _controller():
    """threadpoolctl's view of the BLAS and OpenMP libraries loaded now (found afresh, 0.2 ms: a library loaded
    after the first training, say SciPy's or PyTorch's OpenBLAS, is pinned too)."""
    import numpy  # noqa: F401  (load NumPy's BLAS before asking which libraries are loaded)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextlib.contextmanager
def blas_pinned() -> Iterator[None]:
    """Run the body with every BLAS and OpenMP pool limited to one thread; re-entrant and cheap when nested."""
    global _depth, _limiter
    with _lock:
        if _depth == 0:
            _limiter = _controller().limit(limits=1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _limiter.restore_original_limits()
                _limiter = None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what the platform reports)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(("model name", "Model", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def blas_info() -> list[dict]:
    """One entry per BLAS library NumPy loaded: ``{library, version, kernel, threading}``.

    ``kernel`` is the code path the library chose for this CPU (OpenBLAS: ``Haswell``, ``SkylakeX``, ...;
    ``OPENBLAS_CORETYPE`` overrides it), which decides the last bits of every product.
    """
    return [{"library": p.get("internal_api"), "version": p.get("version"), "kernel": p.get("architecture"),
             "threading": p.get("threading_layer")}
            for p in _controller().info() if p.get("user_api") == "blas"]


@lru_cache(maxsize=1)
def _machine() -> dict:
    import numpy as np

    from mnist_cli import __version__

    return {"blas": blas_info(), "numpy": np.__version__, "python": platform.python_version(),
            "cpu": cpu_model(), "cpus": os.cpu_count(), "mnist_softmax": __version__}


def provenance(threads: int) -> dict:
    """What computed a result: ``{threads, blas_threads, blas [...], numpy, python, cpu, cpus, mnist_softmax}``."""
    return {"threads": threads, "blas_threads": 1, **_machine()}


def blas_kernel() -> str | None:
    """The first BLAS library's kernel name (see :func:`blas_info`), or None if it does not say."""
    info = _machine()["blas"]
    return info[0]["kernel"] if info else None
