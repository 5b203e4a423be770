"""`batchd plan`: the dry run (where each request would run and what it would cost)."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import msgspec
import typer

from batchd.cli.agreement_view import print_guard_plan
from batchd.cli.common import (
    Fallback,
    JsonFlag,
    cli_settings,
    out,
    run_deadline,
)
from batchd.cli.plan_view import plan_document, print_plan
from batchd.run import preflight
from batchd.run.identity import parse_deadline
from batchd.run.pipeline import plan_file
from batchd.run.services import open_services


def plan(
    file: Annotated[
        str, typer.Argument(metavar="FILE", help="JSONL (or .jsonl.gz) file of requests, or s3://.")
    ],
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Ignore the result cache.")] = False,
    tenant: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Tenant for lines without metadata.tenant."),
    ] = None,
    deadline: Annotated[
        str | None,
        typer.Option(
            metavar="WHEN",
            help="When every line must be done: 2026-11-25T06:00Z (or 36h). [default: 72h]",
        ),
    ] = None,
    within: Annotated[
        str | None,
        typer.Option(metavar="DURATION", help="Deadline as a duration from now: 12h, 90m, 2d."),
    ] = None,
    fallback: Annotated[
        Fallback | None,
        typer.Option(
            help="The deadline guard's fallback the plan counts on: realtime, flex or none "
            "(lines due before a batch finishes are planned to it). [default: realtime]"
        ),
    ] = None,
    as_json: JsonFlag = False,
    wide: Annotated[
        bool, typer.Option("--wide", help="Tokens, chunks, worst case, GPU-s per target.")
    ] = False,
    now: Annotated[
        str | None, typer.Option(hidden=True, help="Plan as if it were this time.")
    ] = None,
) -> None:
    """Dry run: parse, dedup, cache lookup, where each request runs, its cost. Sends nothing.

    Needs no API key. Per target: requests, estimated tokens and cost, the realtime list price
    (baseline), savings and GPU-seconds; requests no target can finish before their deadline
    are counted apart ('max' assumes every reply uses its full max_tokens).
    """
    settings = cli_settings(fallback=fallback.value if fallback else None)
    now_s = parse_deadline(now, time.time()) or time.time()
    deadline_at = run_deadline(deadline, within, now_s)
    preflight.check_input(file)  # before anything exists on disk
    svc = open_services(settings)
    try:
        t0 = time.perf_counter()
        report = plan_file(
            svc, file, {"no_cache": no_cache, "tenant": tenant}, deadline_at=deadline_at, now=now_s
        )
        elapsed = time.perf_counter() - t0
    finally:
        svc.close()
    source = _deadline_source(deadline, within, settings.default_deadline_h)
    if as_json:
        doc = plan_document(file, report)
        doc["deadline_source"] = source
        doc["quality"] = report.quality  # each guarded alias's targets: agreement, gate
        sys.stdout.write(msgspec.json.encode(doc).decode() + "\n")
        return
    print_plan(out, file, report, elapsed, source, wide)
    print_guard_plan(out, report.quality)


def _deadline_source(deadline: str | None, within: str | None, default_h: float) -> str:
    if deadline:
        return f"--deadline {deadline}"
    if within:
        return f"--within {within}"
    return (
        f"default_deadline_h = {default_h:g}, no --deadline given; "
        "lines with their own deadline keep it"
    )
