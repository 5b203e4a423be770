"""Nightly job specs: firing on an injected clock, once per scheduled time among several
coordinators (real redis-server), missed-run catch-up, and the `batchd jobs` commands."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from batchd.config.settings import load_settings
from batchd.errors import BatchdError
from batchd.run.services import open_services
from batchd.triggers.nightly import last_fired, load_specs, next_time, previous_time, tick
from tests.support.helpers import Batchd, chat, write_jsonl


def _t(iso: str) -> float:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


def _spec(jobs: Path, name: str = "nightly", **fields: Any) -> Path:
    jobs.mkdir(exist_ok=True)
    data = {
        "name": name,
        "schedule": "0 2 * * *",
        "timezone": "Europe/Berlin",
        "source": str(jobs.parent / "in" / "*.jsonl"),
        "output": str(jobs.parent / "out"),
        "deadline": "30h",  # past the 24 h vendor window the planner assumes
        **fields,
    }
    body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in data.items())
    path = jobs / f"{name}.toml"
    path.write_text(body)
    return path


@pytest.fixture
def coordinators(tmp_path: Path, redis_url: str) -> list[Any]:
    """Two services on the same Redis, as two coordinators on two machines would have."""
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", [chat("a1", "night a")])
    write_jsonl(tmp_path / "in" / "b.jsonl", [chat("b1", "night b")])
    _spec(tmp_path / "jobs")
    svcs = []
    for i in range(2):
        env = {"BATCHD_HOME": str(tmp_path / f"home{i}"), "BATCHD_REDIS_URL": redis_url}
        svcs.append(open_services(load_settings(environ=env)))
    yield svcs
    for s in svcs:
        s.close()


def test_fires_once_per_scheduled_time_and_catches_up_once(
    coordinators: list[Any], tmp_path: Path
) -> None:
    a, b = coordinators
    specs = load_specs(tmp_path / "jobs")
    # First sight at noon: last night's slot is remembered, not fired.
    assert tick(a, specs, _t("2026-11-20T12:00:00"), "a") == []
    assert last_fired(a, specs[0]) is None
    # 02:00 in Berlin is 01:00 UTC in November. Both coordinators tick just after it.
    at = _t("2026-11-21T01:00:20")
    fired = tick(a, specs, at, "a") + tick(b, specs, at, "b")
    assert sorted(r.source.rsplit("/", 1)[1] for r in fired) == ["a.jsonl", "b.jsonl"]
    assert {r.options["scheduled_at"] for r in fired} == {"2026-11-21T01:00:00Z"}
    assert {r.deadline_at for r in fired} == {_t("2026-11-22T07:00:00")}  # 30h from the slot
    assert tick(b, specs, _t("2026-11-21T01:30:00"), "b") == []  # same slot: nothing
    assert tick(a, specs, _t("2026-11-21T23:59:00"), "a") == []
    # Down for three nights: one catch-up run for the latest slot only, then nothing.
    late = _t("2026-11-24T09:00:00")
    caught = tick(b, specs, late, "b") + tick(a, specs, late, "a")
    assert {r.options["scheduled_at"] for r in caught} == {"2026-11-24T01:00:00Z"}
    assert len(caught) == 2  # one run per source file
    assert tick(a, specs, late + 60, "a") == []
    runs = a.store.list_runs()
    assert sorted({r.options["scheduled_at"] for r in runs}) == [
        "2026-11-21T01:00:00Z",
        "2026-11-24T01:00:00Z",
    ]
    slot, info = last_fired(b, specs[0]) or ("", {})
    assert slot == "2026-11-24T01:00:00Z" and sorted(info["runs"]) == sorted(
        r.run_id for r in caught
    )


def test_schedule_arithmetic_in_the_spec_time_zone(tmp_path: Path) -> None:
    _spec(tmp_path / "jobs", schedule="30 1 * * mon-fri", timezone="America/New_York")
    spec = load_specs(tmp_path / "jobs")[0]
    # Saturday 2026-11-21 noon UTC: the previous slot is Friday 01:30 EST = 06:30 UTC.
    now = _t("2026-11-21T12:00:00")
    assert previous_time(spec, now) == _t("2026-11-20T06:30:00")
    assert next_time(spec, now) == _t("2026-11-23T06:30:00")  # Monday
    assert previous_time(spec, _t("2026-11-23T06:30:00")) == _t("2026-11-23T06:30:00")


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"schedule": "every night"}, "not a 5-field cron"),
        ({"timezone": "Mars/Olympus"}, "time zone"),
        ({"deadline": "soon"}, "Cannot read deadline"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_specs_name_the_file_and_the_problem(
    tmp_path: Path, fields: dict[str, Any], needle: str
) -> None:
    path = _spec(tmp_path / "jobs", **fields)
    with pytest.raises(BatchdError) as exc:
        load_specs(tmp_path / "jobs")
    assert str(path) in exc.value.message and needle in exc.value.message


def test_jobs_list_and_run_now(batchd: Batchd) -> None:
    (batchd.tmp / "in").mkdir()
    write_jsonl(batchd.tmp / "in" / "x.jsonl", [chat("x1", "now 1"), chat("x2", "now 2")])
    _spec(batchd.tmp / "jobs")
    listed = batchd.run("jobs", "list")
    assert listed.returncode == 0, listed.stderr
    assert "nightly" in listed.stdout and "0 2 * * * (Europe/Berlin)" in listed.stdout
    assert " CET " in listed.stdout or " CEST " in listed.stdout  # next run, local time
    ran = batchd.run("jobs", "run", "nightly")
    assert ran.returncode == 0, ran.stderr
    assert "succeeded 2" in ran.stdout
    rows = batchd.results()
    assert [r["custom_id"] for r in rows] == ["x1", "x2"]
    missing = batchd.run("jobs", "run", "nope")
    assert missing.returncode == 1 and "No job spec named 'nope'" in missing.stderr
