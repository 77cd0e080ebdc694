"""Ordered parallel maps: results come back in input order, so the bytes written do not depend
on the number of workers."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tqdm import tqdm


def n_workers(requested: int) -> int:
    """0 means every core this process may use."""
    if requested > 0:
        return requested
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def ordered_map(
    func: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    workers: int = 0,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    desc: str | None = None,
    chunksize: int = 4,
) -> Iterator[Any]:
    """Yield func(item) for each item, in order, from a pool of worker processes.

    With one worker everything runs in this process (no pickling, easy to debug)."""
    workers = min(n_workers(workers), max(1, len(items)))
    bar = tqdm(total=len(items), desc=desc, unit="it", disable=desc is None, mininterval=1.0)
    try:
        if workers == 1:
            if initializer is not None:
                initializer(*initargs)
            results: Iterable[Any] = map(func, items)
            for result in results:
                bar.update()
                yield result
            return
        ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(workers, initializer=initializer, initargs=initargs) as pool:
            for result in pool.imap(func, items, chunksize=chunksize):
                bar.update()
                yield result
    finally:
        bar.close()


def ordered_thread_map(
    func: Callable[[Any], Any], items: Sequence[Any], *, workers: int = 0, desc: str | None = None
) -> Iterator[Any]:
    """Like ordered_map, with threads: for work that releases the GIL (OpenCV codecs, numpy),
    where starting processes would cost more than the work itself."""
    workers = min(n_workers(workers), max(1, len(items)))
    with (
        tqdm(total=len(items), desc=desc, unit="it", disable=desc is None, mininterval=1.0) as bar,
        ThreadPoolExecutor(workers) as pool,
    ):
        for result in pool.map(func, items):
            bar.update()
            yield result
