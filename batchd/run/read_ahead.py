"""One step ahead: while the caller works on an item, the next one is made in a thread."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
_END = object()


def ahead(items: Iterable[T], work: Callable[[T], R], pool: Executor) -> Iterator[tuple[T, R]]:
    """(item, work(item)) for every item, in order. The next item is drawn from `items` and
    worked on in `pool` while the caller holds the current one: one job at a time, so
    neither `items` nor `work` is ever entered by two threads at once. An exception in
    either is raised here, at the item it belongs to."""
    it = iter(items)

    def step() -> tuple[T, R] | object:
        item = next(it, _END)
        return _END if item is _END else (item, work(item))  # type: ignore[arg-type]

    job = pool.submit(step)
    while True:
        done = job.result()
        if done is _END:
            return
        job = pool.submit(step)
        yield done  # type: ignore[misc]
