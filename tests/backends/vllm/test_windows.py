"""Off-peak window arithmetic (time zones, weekdays, midnight, daylight saving)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from batchd.backends.vllm.windows import Windows
from batchd.errors import BatchdError

BERLIN = ZoneInfo("Europe/Berlin")


def at(y: int, mo: int, d: int, h: int, mi: int = 0, tz: ZoneInfo = BERLIN) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=tz)


def test_nightly_window_across_midnight() -> None:
    w = Windows(["22:00-06:00"], "Europe/Berlin")
    assert w.is_open(at(2026, 11, 23, 23)) and w.is_open(at(2026, 11, 24, 5, 59))
    assert not w.is_open(at(2026, 11, 24, 6)) and not w.is_open(at(2026, 11, 23, 21, 59))
    start, end = w.current(at(2026, 11, 24, 3))  # type: ignore[misc]
    assert (start, end) == (at(2026, 11, 23, 22), at(2026, 11, 24, 6))
    assert w.next_open(at(2026, 11, 24, 12)) == at(2026, 11, 24, 22)
    assert w.next_open(at(2026, 11, 24, 23)) == at(2026, 11, 24, 23)  # open now: now


def test_weekday_sets_and_several_windows() -> None:
    w = Windows(["mon-fri 22:00-06:00", "sat,sun 00:00-24:00"], "UTC")
    utc = ZoneInfo("UTC")
    # Friday 22:00 window runs into Saturday; the weekend is open all day.
    assert w.is_open(at(2026, 11, 28, 3, tz=utc))  # Saturday
    assert w.is_open(at(2026, 11, 29, 14, tz=utc))  # Sunday afternoon
    assert not w.is_open(at(2026, 11, 30, 3, tz=utc))  # Monday 03:00: no Sunday-night window
    assert not w.is_open(at(2026, 11, 30, 12, tz=utc))  # Monday noon
    assert w.next_open(at(2026, 11, 30, 12, tz=utc)) == at(2026, 11, 30, 22, tz=utc)
    wrap = Windows(["fri-mon 01:00-02:00"], "UTC")  # a day range that wraps the week
    assert wrap.is_open(at(2026, 11, 30, 1, 30, tz=utc))  # Monday
    assert not wrap.is_open(at(2026, 12, 1, 1, 30, tz=utc))  # Tuesday


def test_seconds_open_counts_overlaps_once() -> None:
    w = Windows(["22:00-06:00", "04:00-07:00"], "UTC")
    utc = ZoneInfo("UTC")
    a, b = at(2026, 11, 23, 0, tz=utc), at(2026, 11, 25, 0, tz=utc)
    # Each day 00-07 and 22-24 open: 9 h a day.
    assert w.seconds_open(a, b) == pytest.approx(2 * 9 * 3600)
    assert w.seconds_open(b, a) == 0.0
    assert w.seconds_open(at(2026, 11, 23, 5, tz=utc), at(2026, 11, 23, 6, 30, tz=utc)) == 5400


def test_admitting_stops_before_the_end() -> None:
    w = Windows(["22:00-06:00"], "Europe/Berlin")
    assert w.admitting(at(2026, 11, 24, 5, 30), margin_s=600)
    assert not w.admitting(at(2026, 11, 24, 5, 55), margin_s=600)  # 5 min left: finish only
    assert not w.admitting(at(2026, 11, 24, 12), margin_s=0)


def test_daylight_saving_changes_the_night_length() -> None:
    w = Windows(["22:00-06:00"], "Europe/Berlin")
    # 2026-03-29 02:00 -> 03:00 (spring forward): that night is 7 real hours.
    start, end = w.current(at(2026, 3, 29, 4))  # type: ignore[misc]
    assert (end - start.astimezone(UTC)).total_seconds() == 7 * 3600
    # 2026-10-25 03:00 -> 02:00 (fall back): that night is 9 real hours.
    night = w.seconds_open(at(2026, 10, 24, 21), at(2026, 10, 25, 7))
    assert night == 9 * 3600
    # Instants in UTC are what callers compare.
    assert w.is_open(datetime(2026, 10, 25, 4, 30, tzinfo=UTC))  # 05:30 Berlin (winter time)
    assert not w.is_open(datetime(2026, 10, 25, 5, 30, tzinfo=UTC))  # 06:30 Berlin


def test_capacity_until_a_deadline() -> None:
    w = Windows(["22:00-06:00"], "Europe/Berlin")
    now = at(2026, 11, 23, 12)
    assert w.seconds_open(now, now + timedelta(hours=10)) == 0.0
    assert w.seconds_open(now, at(2026, 11, 24, 2)) == 4 * 3600


@pytest.mark.parametrize(
    ("specs", "tz", "says"),
    [
        (["25:00-06:00"], "UTC", "Bad time"),
        (["22:00-06:60"], "UTC", "Bad time"),
        (["funday 22:00-06:00"], "UTC", "Bad days"),
        (["22:00 to 06:00"], "UTC", "Cannot read"),
        (["22:00-22:00"], "UTC", "empty"),
        ([], "UTC", "No off-peak window"),
        (["22:00-06:00"], "Mars/Olympus", "Unknown time zone"),
    ],
)
def test_bad_specs_say_what_to_write(specs: list[str], tz: str, says: str) -> None:
    with pytest.raises(BatchdError, match=says) as err:
        Windows(specs, tz)
    assert err.value.hint
