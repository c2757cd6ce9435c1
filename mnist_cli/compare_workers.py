"""``compare``'s independent groups of runs, trained in this process or in worker processes, bit-identically.

    groups = run_groups(config, jobs)         # [[positions of one stack], [one run of another profile], ...]
    runs = train_groups(data, config, jobs, groups, workers=2)

A *group* is what is trained as one computation: the runs sharing a stack
(:func:`mnist_cli.engine.stacked.stack_key`: seed, dtype, precision, profile, batches; float32/float64 in the
plain profile and float16/bfloat16 in every profile, :func:`mnist_cli.engine.stacked.stackable`), or one run
the stack does not compute (float32/float64 of another framework's profile), or, with ``engine="alone"``, any
single run. A group's runs depend
on nothing outside it (each run's numbers are bit-identical whatever else shares its process, see
:mod:`mnist_cli.engine.stacked`), so the groups can be dealt out to worker processes: every accuracy,
per-step loss, NaN count, digest and saved array is the same for any number of workers.

``workers`` N means N lanes: this process and N - 1 workers, started with ``spawn`` (a fresh interpreter: no
copied locks or BLAS thread pools); this process trains queued groups itself while they start. Workers run BLAS
on one thread as every run does, and map the decoded dataset (:class:`SharedArrays`), not copies of their
own: the data cache's files where the arrays are maps of them, else shared memory the parent fills once.
Ctrl-C and SIGTERM stop every worker; a worker that dies (killed, out of memory) is a one-line
:class:`WorkerError` naming its group.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from multiprocessing import get_context, shared_memory

import numpy as np

from mnist_cli.errors import MnistError

__all__ = ["WorkerError", "SharedArrays", "run_groups", "group_cost", "group_label", "worker_count", "lanes",
           "train_groups"]


class WorkerError(MnistError):
    """A worker process died before its group of runs finished."""

    settings = ("workers",)


def run_groups(config, jobs: list[tuple]) -> list[list[int]]:
    """The positions in ``jobs`` ((cell, loss) pairs) of each group, in the order their first run appears."""
    from mnist_cli.engine.stacked import stack_key

    groups: dict[tuple, list[int]] = {}
    for pos, (cell, loss) in enumerate(jobs):
        tc = config.train_config(cell, loss)
        groups.setdefault(("run", pos) if _alone(config, tc) else ("stack", *stack_key(tc)), []).append(pos)
    return list(groups.values())


def _alone(config, tc) -> bool:
    """Whether the run of ``tc`` is trained by itself rather than in a stack (``engine="alone"``, or arithmetic
    the stack does not compute: :func:`mnist_cli.engine.stacked.stackable`)."""
    from mnist_cli.engine.stacked import stackable

    return config.engine == "alone" or not stackable(tc)


def group_cost(config, jobs: list[tuple], positions: list[int]) -> float:
    """A group's estimated training cost, for the order the lanes take the groups in (the largest first): its
    runs' examples (steps x batch) weighted by :data:`mnist_cli.settings.GROUP_COST`."""
    from mnist_cli.settings import GROUP_COST

    total = 0.0
    for p in positions:
        tc = config.train_config(*jobs[p])
        total += GROUP_COST["alone" if _alone(config, tc) else tc.dtype] * tc.steps * tc.batch_size
    return total


def group_label(jobs: list[tuple], positions: list[int]) -> str:
    """What a group is called in messages: its one run, or its first run and how many it holds."""
    cell, loss = jobs[positions[0]]
    first = f"{cell.label} / {loss}"
    return first if len(positions) == 1 else f"the stack of {first} and {len(positions) - 1} more runs"


def worker_count(workers, groups: int, examples: int = 0) -> int:
    """``workers`` capped by the number of groups; ``"auto"``: the CPUs this process may use, or 1 when the runs
    train on fewer than :data:`mnist_cli.settings.AUTO_WORKERS_FROM` examples in all (``examples``)."""
    from mnist_cli.settings import AUTO_WORKERS_FROM

    if workers == "auto":
        n = len(os.sched_getaffinity(0)) if examples >= AUTO_WORKERS_FROM else 1
    else:
        n = int(workers)
    return max(1, min(n, groups))


def lanes(config, jobs: list[tuple], groups: list[list[int]]) -> int:
    """The lanes ``config.workers`` gives ``groups`` of ``jobs`` (:func:`worker_count`, their examples in all:
    runs x steps x batch)."""
    return worker_count(config.workers, len(groups), len(jobs) * config.steps * config.batch_size)


def _mapped_file(a: np.ndarray):
    """``(path, offset, facts)`` of the read-only file map ``a`` is a contiguous part of (the data cache,
    :func:`mnist_cli.data.load.load_mnist`), else None; ``facts``: :func:`mnist_cli.data.directory.file_facts`."""
    from mnist_cli.data.directory import file_facts

    root = a  # the np.memmap that made the map (a slice of a memmap is a memmap too, with the file's offset)
    while isinstance(root, np.ndarray) and not (isinstance(root, np.memmap) and isinstance(root.base, mmap.mmap)):
        root = root.base
    if not isinstance(root, np.memmap) or root.filename is None or root.mode != "r" or not a.flags.c_contiguous:
        return None
    start = a.ctypes.data - root.ctypes.data
    if start < 0 or start + a.nbytes > root.nbytes:
        return None
    return root.filename, root.offset + start, file_facts(root.filename)


class SharedArrays:
    """Named arrays that worker processes map without copying (:meth:`attach`): an array that is a contiguous part
    of a read-only file map (the data cache) by that file, the others copied once into shared memory."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.blocks, self.specs = [], {}
        try:
            for name, a in arrays.items():
                if (mapped := _mapped_file(a)) is not None:
                    self.specs[name] = ("file", *mapped, a.shape, a.dtype.str)
                    continue
                shm = shared_memory.SharedMemory(create=True, size=max(1, a.nbytes))
                self.blocks.append(shm)
                np.ndarray(a.shape, a.dtype, buffer=shm.buf)[...] = a
                self.specs[name] = ("shm", shm.name, a.shape, a.dtype.str)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def attach(specs: dict) -> tuple[dict[str, np.ndarray], list]:
        """The arrays of ``specs`` (:attr:`specs` of the parent's instance), and the blocks to keep open. A mapped
        file must still be the one the parent mapped (a cache is replaced by a rename, never rewritten)."""
        from mnist_cli.data.directory import file_facts

        arrays, blocks = {}, []
        for name, (kind, *where, shape, dtype) in specs.items():
            if kind == "file":
                path, offset, facts = where
                if file_facts(path) != facts:
                    raise WorkerError(f"the data cache {path} was replaced while compare ran: run it again")
                arrays[name] = np.asarray(np.memmap(path, np.dtype(dtype), "r", offset, tuple(shape)))
                continue
            shm = shared_memory.SharedMemory(name=where[0])
            blocks.append(shm)
            arrays[name] = np.ndarray(shape, np.dtype(dtype), buffer=shm.buf)
        return arrays, blocks

    def close(self) -> None:
        """Free the shared memory (the workers have stopped)."""
        for shm in self.blocks:
            shm.close()
            try:
                shm.unlink()
            except FileNotFoundError:
                pass
        self.blocks = []


_DATA: dict = {}  # a worker's view of the parent's arrays (set by _attach)


def _attach(specs: dict) -> None:
    """A worker's initializer: map the shared arrays (kept for the worker's life), ignore Ctrl-C (the parent
    decides when workers stop)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        arrays, blocks = SharedArrays.attach(specs)
    except WorkerError as exc:  # raised by the first group it is given (an initializer's error breaks the pool)
        _DATA["_error"] = exc
        return
    _DATA.update(arrays, _blocks=blocks)


def _work(train_group: Callable, config, jobs: list[tuple]) -> list:
    """In a worker: ``train_group`` (:func:`mnist_cli.compare.train_group`, pickled by name) on the shared arrays."""
    d = _DATA
    if "_error" in d:
        raise d["_error"]
    return train_group(d["train_images"], d["train_labels"], d["test_images"], d["test_labels"], config, jobs)


def train_groups(arrays: dict[str, np.ndarray], config, jobs: list[tuple], groups: list[list[int]], workers: int,
                 train_group: Callable, on_group: Callable[[list[int]], None] | None = None) -> list:
    """Every group's runs, in the order of ``jobs``: with ``workers == 1`` one group after the other here
    (``train_group(*arrays, config, group_jobs)``), else in that many spawned workers reading ``arrays`` from
    shared memory. ``on_group(positions)`` is called as each group finishes."""
    out: list = [None] * len(jobs)

    def done(positions: list[int], runs: list) -> None:
        for pos, run in zip(positions, runs):
            out[pos] = run
        if on_group is not None:
            on_group(positions)

    if workers <= 1:
        for positions in groups:
            done(positions, train_group(*arrays.values(), config, [jobs[p] for p in positions]))
        return out
    _in_workers(arrays, config, jobs, groups, workers, train_group, done)
    return out


def _in_workers(arrays, config, jobs, groups, workers: int, train_group: Callable, done: Callable) -> None:
    """``workers`` lanes: this process and ``workers - 1`` spawned ones. The spawned ones are fed from the queue
    as each finishes a group (a callback submits the next one); this process trains the next queued group itself
    meanwhile, so the first lane starts at once instead of after a worker's start-up (~0.35 s: an interpreter and
    NumPy), and the results are collected here between its own groups."""
    import threading
    from collections import deque
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # the largest groups first, so that no lane is left with a long one at the end (longest processing time first)
    queue = deque(sorted(groups, key=lambda positions: -group_cost(config, jobs, positions)))
    lock, pending = threading.RLock(), {}  # RLock: a callback may run at once, inside feed
    shared = SharedArrays(arrays)
    pool = ProcessPoolExecutor(workers - 1, mp_context=get_context("spawn"), initializer=_attach,
                               initargs=(shared.specs,))

    def feed(_finished=None) -> None:  # in the pool's thread after each group: the next queued group to the pool
        with lock:
            if queue and sum(not f.done() for f in pending) < workers - 1:
                positions = queue.popleft()
                try:
                    pending[pool.submit(_work, train_group, config, [jobs[p] for p in positions])] = positions
                except RuntimeError:  # the pool is shutting down (an error or Ctrl-C here): nothing more to run
                    return
                next(reversed(pending)).add_done_callback(feed)

    def collect(block: bool) -> None:
        with lock:
            waiting = list(pending)
        finished = wait(waiting, timeout=None if block else 0, return_when=FIRST_COMPLETED)[0] if waiting else ()
        for future in finished:
            with lock:
                positions = pending.pop(future)
            try:
                runs = future.result()
            except BrokenProcessPool:
                raise WorkerError(f"a worker process died while training {group_label(jobs, positions)} (killed, "
                                  "or out of memory): run again with fewer --workers") from None
            done(positions, runs)

    try:
        for _ in range(workers - 1):
            feed()
        while True:
            with lock:
                positions = queue.popleft() if queue else None
            if positions is not None:  # this process's lane
                done(positions, train_group(*arrays.values(), config, [jobs[p] for p in positions]))
                collect(block=False)
            elif pending:
                collect(block=True)
            else:
                break
    finally:  # done, failed, Ctrl-C or SIGTERM: no worker outlives this call
        for process in list(getattr(pool, "_processes", {}).values()):
            if process.is_alive():
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        shared.close()
