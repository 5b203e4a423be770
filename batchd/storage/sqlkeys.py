"""Look rows up by many keys in SQLite without bloating its statement cache.

sqlite3 caches a prepared statement per distinct SQL text; `IN (?, ?, ...)` with a
different number of marks each call fills that cache with huge statements (hundreds
of MB on a big file). Keys are sent in groups of one fixed size instead, the last
group padded with repeats, so there is one statement text.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

GROUP = 256
_MARKS = ",".join("?" * GROUP)


def select_in(
    db: sqlite3.Connection, sql: str, keys: Sequence[Any], extra: tuple[Any, ...] = ()
) -> Iterator[Any]:
    """Rows of `sql` (with `{keys}` where the IN list goes) for every key; `extra` follows."""
    query = sql.format(keys=_MARKS)
    for i in range(0, len(keys), GROUP):
        group = list(keys[i : i + GROUP])
        group += [group[0]] * (GROUP - len(group))
        yield from db.execute(query, (*group, *extra))
