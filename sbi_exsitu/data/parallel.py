"""Map a function over items on local processes or a Dask cluster, in order.

One helper for every embarrassingly parallel command (``simulate``, ``render``):
``workers=1`` runs in-process (easy to debug), ``workers>1`` uses a spawn-based
process pool, and ``scheduler="tcp://host:8786"`` sends the work to an existing
Dask cluster (``dask[distributed]`` is an optional dependency). Results are
yielded in the order of ``items`` as soon as they and all earlier ones are
ready, so the caller can stream them to disk; at most ``2 * workers`` items
are in flight on a local pool to bound memory.

Local workers never outlive the parent, even when it is SIGKILLed (which runs
no cleanup): on Linux each worker asks the kernel for SIGTERM when its parent
dies (``prctl(PR_SET_PDEATHSIG)``, set before any work, then re-checks that the
parent is still the one that started it, closing the race of a parent that dies
during start-up); elsewhere a daemon thread in the worker exits it once
``os.getppid()`` changes. The kernel signal is preferred where available: it
fires at once, costs nothing, and works while the worker is busy in C code.

Example:
    >>> list(parallel_map(abs, [-1, 2, -3]))
    [1, 2, 3]
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

from tqdm.auto import tqdm

from sbi_exsitu.errors import DependencyError

__all__ = ["parallel_map"]

T = TypeVar("T")
R = TypeVar("R")


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    workers: int = 1,
    scheduler: str | None = None,
    progress: bool = False,
    desc: str | None = None,
) -> Iterator[R]:
    """Yield ``fn(item)`` for every item, in order.

    Args:
        fn: a picklable (module-level) function.
        items: the inputs.
        workers: local processes; 1 runs in this process.
        scheduler: address of a Dask scheduler; overrides ``workers``.
        progress: show a tqdm progress bar (on stderr).
        desc: the bar's label.

    Yields:
        The results, in the order of ``items``. An exception raised by ``fn``
        propagates at its item's turn.

    Raises:
        ValueError: ``workers < 1``.
        RuntimeError: ``scheduler`` given but ``distributed`` is not installed.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    bar = tqdm(total=len(items), desc=desc, disable=not progress, leave=False)
    try:
        if scheduler is not None:
            gen = _dask_map(fn, items, scheduler, bar)
        elif workers == 1 or len(items) <= 1:
            gen = _serial_map(fn, items, bar)
        else:
            gen = _pool_map(fn, items, workers, bar)
        yield from gen
    finally:
        bar.close()


def _serial_map(fn: Callable[[T], R], items: Sequence[T], bar: Any) -> Iterator[R]:
    for item in items:
        result = fn(item)
        bar.update(1)
        yield result


def _pool_map(
    fn: Callable[[T], R], items: Sequence[T], workers: int, bar: Any
) -> Iterator[R]:
    # spawn: the parent may hold torch or HDF5 handles that fork would copy.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=ctx,
        initializer=_die_with_parent,
        initargs=(os.getpid(),),
    ) as pool:
        pending: dict[int, Future[R]] = {}
        next_submit = next_yield = 0
        while next_yield < len(items):
            while next_submit < len(items) and len(pending) < 2 * workers:
                pending[next_submit] = pool.submit(fn, items[next_submit])
                next_submit += 1
            # Block on the oldest item; the others keep running meanwhile.
            result = pending.pop(next_yield).result()
            bar.update(1)
            yield result
            next_yield += 1


_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def _die_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this worker when ``parent_pid`` dies."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0:
                if os.getppid() != parent_pid:  # died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):  # no usable libc: fall back to polling
            pass
    threading.Thread(
        target=_watch_parent, args=(parent_pid,), daemon=True, name="watch-parent"
    ).start()


def _watch_parent(parent_pid: int, interval: float = 1.0) -> None:
    while os.getppid() == parent_pid:
        time.sleep(interval)
    os._exit(1)


def _dask_map(
    fn: Callable[[T], R], items: Sequence[T], scheduler: str, bar: Any
) -> Iterator[R]:
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - depends on the environment
        raise DependencyError(
            "--scheduler needs dask.distributed: pip install 'sbi-exsitu[dask]'"
        ) from None
    with Client(scheduler) as client:
        futures = client.map(fn, list(items), pure=False)
        for future in futures:
            result = future.result()
            bar.update(1)
            yield result
