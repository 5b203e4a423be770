"""Off-peak window arithmetic: when self-hosted GPUs may take work, in a named time zone.

A spec is `[DAYS ]HH:MM-HH:MM`, e.g. `22:00-06:00` (every day, across midnight),
`mon-fri 20:00-07:00`, `sat,sun 00:00-24:00`. A window belongs to the day it starts on,
so `fri 22:00-06:00` runs into Saturday morning. Local times are turned into instants
day by day, so daylight-saving changes shorten or lengthen a night as the clock does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from batchd.errors import BatchdError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPEC = re.compile(
    r"^\s*(?:(?P<days>[a-z,\-]+)\s+)?(?P<start>\d{1,2}:\d{2})\s*-\s*"
    r"(?P<end>\d{1,2}:\d{2})\s*$"
)
_HINT = "Write windows like '22:00-06:00', 'mon-fri 20:00-07:00' or 'sat,sun 00:00-24:00'."


@dataclass(frozen=True)
class _Window:
    days: frozenset[int]  # weekday numbers (Monday 0) the window starts on
    start_min: int  # minutes after local midnight
    length_min: int


def _minutes(text: str, spec: str) -> int:
    h, m = (int(x) for x in text.split(":"))
    if not (0 <= h <= 24 and 0 <= m < 60) or (h == 24 and m):
        raise BatchdError(f"Bad time {text!r} in window {spec!r}.", _HINT)
    return h * 60 + m


def _days(text: str | None, spec: str) -> frozenset[int]:
    if not text:
        return frozenset(range(7))
    out: set[int] = set()
    for part in text.split(","):
        ends = part.split("-")
        if len(ends) > 2 or any(e not in DAYS for e in ends):
            raise BatchdError(f"Bad days {text!r} in window {spec!r}.", _HINT)
        a, b = DAYS.index(ends[0]), DAYS.index(ends[-1])
        out.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(out)


class Windows:
    """A set of recurring windows in one time zone; every answer is an aware datetime."""

    def __init__(self, specs: list[str], tz: str) -> None:
        try:
            self.tz = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise BatchdError(
                f"Unknown time zone {tz!r}.", "Use an IANA name such as 'Europe/Berlin' or 'UTC'."
            ) from exc
        self._windows: list[_Window] = []
        for spec in specs:
            m = _SPEC.match(spec.lower())
            if not m:
                raise BatchdError(f"Cannot read window {spec!r}.", _HINT)
            start = _minutes(m["start"], spec)
            end = _minutes(m["end"], spec)
            if end == start:
                raise BatchdError(
                    f"Window {spec!r} is empty (or means a whole day: write 00:00-24:00).", _HINT
                )
            length = end - start if end > start else end + 24 * 60 - start
            self._windows.append(_Window(_days(m["days"], spec), start, length))
        if not self._windows:
            raise BatchdError("No off-peak window given.", _HINT)

    def _wall(self, day: date, minutes: int) -> datetime:
        """Local wall-clock time `minutes` after the day's midnight, as an aware datetime."""
        return (datetime.combine(day, time(0)) + timedelta(minutes=minutes)).replace(tzinfo=self.tz)

    def _intervals(self, first_day: date, days: int) -> Iterator[tuple[datetime, datetime]]:
        """Window instances starting on first_day .. first_day + days, in start order."""
        found = []
        for offset in range(days + 1):
            day = first_day + timedelta(days=offset)
            for w in self._windows:
                if day.weekday() in w.days:
                    start = self._wall(day, w.start_min)
                    end = self._wall(day, w.start_min + w.length_min)
                    if end.timestamp() > start.timestamp():
                        found.append((start, end))
        found.sort(key=lambda se: se[0].timestamp())
        return iter(found)

    def _around(self, t: datetime, days: int) -> Iterator[tuple[datetime, datetime]]:
        local = t.astimezone(self.tz)
        return self._intervals(local.date() - timedelta(days=1), days + 1)

    def current(self, t: datetime) -> tuple[datetime, datetime] | None:
        """The window open at t (the one ending last if several overlap), or None."""
        ts = t.timestamp()
        best = None
        for start, end in self._around(t, 1):
            if start.timestamp() <= ts < end.timestamp() and (
                best is None or end.timestamp() > best[1].timestamp()
            ):
                best = (start, end)
        return best

    def is_open(self, t: datetime) -> bool:
        return self.current(t) is not None

    def admitting(self, t: datetime, margin_s: float) -> bool:
        """Open, and more than margin_s before the window closes (new work may start)."""
        cur = self.current(t)
        return cur is not None and cur[1].timestamp() - t.timestamp() > margin_s

    def next_open(self, t: datetime) -> datetime:
        """t itself when a window is open, else the start of the next one."""
        if self.is_open(t):
            return t
        for start, _ in self._around(t, 8):
            if start.timestamp() > t.timestamp():
                return start
        raise AssertionError("a weekly schedule always opens within 8 days")

    def open_spans(self, a: datetime, b: datetime) -> list[tuple[float, float]]:
        """The open stretches between a and b as (start, end) epoch seconds, merged, in order."""
        if b <= a:
            return []
        days = int((b - a).total_seconds() // 86400) + 2
        spans = sorted(
            (max(s.timestamp(), a.timestamp()), min(e.timestamp(), b.timestamp()))
            for s, e in self._around(a, days)
        )
        merged: list[tuple[float, float]] = []
        for s, e in spans:
            if e <= s:
                continue
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        return merged

    def seconds_open(self, a: datetime, b: datetime) -> float:
        """Seconds between a and b during which some window is open (overlaps counted once)."""
        if b <= a:
            return 0.0
        days = int((b - a).total_seconds() // 86400) + 2
        spans = sorted(
            (max(s.timestamp(), a.timestamp()), min(e.timestamp(), b.timestamp()))
            for s, e in self._around(a, days)
        )
        total, cursor = 0.0, a.timestamp()
        for s, e in spans:
            s = max(s, cursor)
            if e > s:
                total += e - s
                cursor = e
        return total
