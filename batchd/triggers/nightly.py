"""Nightly (scheduled) runs: job specs in <jobs_dir>/*.toml, fired once per scheduled time.

A spec names a cron schedule in a time zone, a source (a file, a glob, an s3:// prefix or
an s3:// glob), an output and run options. Each scheduled time is claimed in the store
under (spec name, time), so however many coordinators tick, one fires it. Only the most
recent scheduled time is ever considered: after downtime a missed run fires once, never
once per missed slot. The first time a spec is seen, its latest slot is recorded without
firing (deploying a coordinator at noon does not start last night's run);
`batchd jobs run NAME` runs one now. Every function takes `now` (epoch seconds), so tests
drive the clock.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import logging
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from croniter import croniter

from batchd.errors import BatchdError
from batchd.run.identity import parse_deadline, run_options, start_run
from batchd.run.services import Services
from batchd.state.base import Run
from batchd.storage.s3 import is_s3, join, split

log = logging.getLogger("batchd.jobs")

FIRST_SEEN = "first-seen"


class JobSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    schedule: str  # cron: minute hour day month weekday
    timezone: str = "UTC"
    source: str  # file, glob (*.jsonl), s3://bucket/prefix/ or s3://bucket/prefix/*.jsonl
    output: str = ""  # "" = settings.output
    deadline: str = ""  # from the scheduled time: 12h, 90m, 2d
    tenant: str = ""
    no_cache: bool = False
    export: str = ""  # openai-jsonl to also write results.openai.jsonl
    enabled: bool = True
    file: str = ""  # where the spec was read from (set on load)

    @property
    def claims(self) -> str:
        return f"job:{self.name}"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def load_specs(jobs_dir: str | Path) -> list[JobSpec]:
    """Every *.toml spec in the folder, checked; a bad one is an error naming its file."""
    specs: dict[str, JobSpec] = {}
    for path in sorted(Path(jobs_dir).glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            spec = msgspec.convert({**data, "file": str(path)}, JobSpec)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, msgspec.ValidationError) as exc:
            raise BatchdError(f"Job spec {path} is invalid: {exc}.", "Fix the file.") from exc
        problem = _problem(spec)
        if problem:
            raise BatchdError(f"Job spec {path}: {problem}.", "Fix the file.")
        if spec.name in specs:
            raise BatchdError(
                f"Job name {spec.name!r} is used by {specs[spec.name].file} and {path}.",
                "Give each spec its own name.",
            )
        specs[spec.name] = spec
    return list(specs.values())


def _problem(spec: JobSpec) -> str | None:
    if not spec.name or "/" in spec.name or ":" in spec.name:
        return f"name {spec.name!r} must be non-empty, without '/' or ':'"
    if not croniter.is_valid(spec.schedule) or len(spec.schedule.split()) != 5:
        return f"schedule {spec.schedule!r} is not a 5-field cron expression"
    try:
        spec.tz  # noqa: B018
    except (ZoneInfoNotFoundError, ValueError):
        return f"time zone {spec.timezone!r} is unknown (use e.g. Europe/Berlin or UTC)"
    if spec.deadline:
        try:
            parse_deadline(spec.deadline, 0.0)
        except BatchdError as exc:
            return exc.message
    return None


def get_spec(jobs_dir: str | Path, name: str) -> JobSpec:
    for spec in load_specs(jobs_dir):
        if spec.name == name:
            return spec
    raise BatchdError(
        f"No job spec named {name!r} in {jobs_dir}/.", "List them with `batchd jobs list`."
    )


def previous_time(spec: JobSpec, now: float) -> float:
    """The latest scheduled time at or before `now` (epoch seconds)."""
    start = datetime.fromtimestamp(int(now) + 1, spec.tz)
    return float(croniter(spec.schedule, start).get_prev(datetime).timestamp())


def next_time(spec: JobSpec, now: float) -> float:
    start = datetime.fromtimestamp(now, spec.tz)
    return float(croniter(spec.schedule, start).get_next(datetime).timestamp())


def slot_key(t: float) -> str:
    """Scheduled times as sortable UTC strings (the claim key)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def last_fired(svc: Services, spec: JobSpec) -> tuple[str, dict[str, Any]] | None:
    fired = {k: json.loads(v) for k, v in svc.store.claims(spec.claims).items()}
    fired = {k: v for k, v in fired.items() if v.get("kind") != FIRST_SEEN}
    if not fired:
        return None
    key = max(fired)
    runs = svc.store.claims(spec.claims + ":runs").get(key)
    return key, {**fired[key], "runs": json.loads(runs) if runs else []}


def tick(svc: Services, specs: list[JobSpec], now: float, owner: str) -> list[Run]:
    """Fire every spec whose latest scheduled time is not claimed yet (once, among all)."""
    runs: list[Run] = []
    for spec in specs:
        if not spec.enabled:
            continue
        slot = previous_time(spec, now)
        value = {"owner": owner, "fired_at": now}
        if not svc.store.claims(spec.claims):  # first sight: remember, do not fire
            svc.store.claim(spec.claims, slot_key(slot), json.dumps({**value, "kind": FIRST_SEEN}))
            continue
        if not svc.store.claim(spec.claims, slot_key(slot), json.dumps(value)):
            continue
        log.info("job %s: firing for %s", spec.name, slot_key(slot))
        try:
            started = fire(svc, spec, slot, now)
            runs += started
            ids = json.dumps([r.run_id for r in started])
            svc.store.claim(spec.claims + ":runs", slot_key(slot), ids)
        except BatchdError as exc:  # the slot stays claimed: no endless refiring
            log.error("job %s at %s: %s", spec.name, slot_key(slot), exc)
    return runs


def fire(svc: Services, spec: JobSpec, scheduled_at: float, now: float) -> list[Run]:
    """Start one run per source file of the spec for this scheduled time."""
    sources = resolve_sources(svc, spec.source)
    if not sources:
        raise BatchdError(
            f"Job {spec.name}: no input matches {spec.source}.", "Check the spec's source."
        )
    options = run_options(
        svc.settings,
        no_cache=spec.no_cache,
        tenant=spec.tenant or None,
        deadline=spec.deadline or None,
        export=spec.export,
    )
    options.update(job=spec.name, scheduled_at=slot_key(scheduled_at))
    deadline_at = parse_deadline(spec.deadline, scheduled_at) if spec.deadline else None
    if deadline_at is not None and deadline_at <= now:
        deadline_at = None  # a late catch-up gets the default deadline from now
    output = spec.output or svc.settings.output
    return [start_run(svc, src, output, options, deadline_at)[0] for src in sources]


def resolve_sources(svc: Services, source: str) -> list[str]:
    """A file, a local glob, an s3:// prefix (ending in /) or an s3:// glob -> inputs."""
    if is_s3(source):
        bucket, key = split(source)
        if not any(c in key for c in "*?[") and not key.endswith("/"):
            return [source]
        wild = key.endswith("/") or any(c in key for c in "*?[")
        prefix = key.split("*")[0].split("?")[0].split("[")[0] if wild else key
        pattern = key + "*" if key.endswith("/") else key
        found = [
            join(f"s3://{bucket}", o["Key"])
            for o in svc.s3.list(f"s3://{bucket}/{prefix}")
            if fnmatch.fnmatchcase(o["Key"], pattern) and not o["Key"].endswith("/")
        ]
        return sorted(found)
    if any(c in source for c in "*?["):
        return sorted(glob.glob(source))
    return [source]
