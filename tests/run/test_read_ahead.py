"""run.read_ahead.ahead: the next item made in a thread while the caller holds this one."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from batchd.run.read_ahead import ahead


def test_in_order_one_ahead_and_errors_where_they_belong() -> None:
    drawn: list[int] = []
    workers: set[str] = set()

    def items():  # type: ignore[no-untyped-def]
        for i in range(5):
            drawn.append(i)
            yield i

    def work(i: int) -> int:
        workers.add(threading.current_thread().name)
        return i * i

    with ThreadPoolExecutor(1, thread_name_prefix="ahead") as pool:
        seen = []
        for item, result in ahead(items(), work, pool):
            seen.append((item, result))
            assert len(drawn) <= item + 2  # never more than one item ahead of the caller
        assert seen == [(i, i * i) for i in range(5)]
        assert workers and all(name.startswith("ahead") for name in workers)

        def fails(i: int) -> int:
            if i == 2:
                raise ValueError("line 2")
            return i

        got = []
        with pytest.raises(ValueError, match="line 2"):
            for item, _ in ahead(range(5), fails, pool):
                got.append(item)
        assert got == [0, 1]  # the items before the one that failed were handed over
        assert list(ahead([], work, pool)) == []
