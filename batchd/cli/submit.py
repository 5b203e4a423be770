"""`batchd submit`: start (or resume) a run of a file and wait for it."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import typer

from batchd.cli.common import (
    EXIT_OK,
    Export,
    Fallback,
    cli_settings,
    err,
    exit_code,
    out,
    print_summary,
    raise_if_failed,
    run_deadline,
)
from batchd.cli.driving import run_embedded, wait_distributed
from batchd.errors import BatchdError
from batchd.run import preflight
from batchd.run.identity import redirect_output, run_options, stage_input, start_run
from batchd.run.services import open_services


def submit(
    file: Annotated[
        str, typer.Argument(metavar="FILE", help="JSONL (or .jsonl.gz) file of requests, or s3://.")
    ],
    output: Annotated[
        str | None,
        typer.Option(
            metavar="DIR",
            help="Where <run_id>/results.parquet and costs.parquet go (local or s3://). "
            "[default: ./batchd-results]",
        ),
    ] = None,
    deadline: Annotated[
        str | None,
        typer.Option(
            metavar="WHEN",
            help="When every line must be done: 36h, 90m, 2d or 2026-11-25T06:00Z. "
            "Lines not done by then end as 'expired'. [default: 72h]",
        ),
    ] = None,
    within: Annotated[
        str | None,
        typer.Option(metavar="DURATION", help="The deadline as a duration from now: 12h, 90m, 2d."),
    ] = None,
    no_cache: Annotated[
        bool,
        typer.Option("--no-cache", help="Neither read nor fill the result cache for this run."),
    ] = False,
    tenant: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="Tenant for lines without metadata.tenant (cache answers never cross tenants). "
            "[default: default]",
        ),
    ] = None,
    semantic_cache: Annotated[
        bool | None,
        typer.Option(
            "--semantic-cache/--no-semantic-cache",
            help="Answer near-duplicate lines from the cache ([cache.semantic], under its "
            "max_error_rate) for every line of this run, or for none; embeddings from "
            'cache.semantic.embedding ("" bundled all-MiniLM-L6-v2, local:<dir>, vllm:<dir> '
            "a vLLM pooling model, openai:<model>). [default: as settings say: "
            "cache.semantic.enabled, cache.semantic.models, models.<alias>.semantic_cache]",
        ),
    ] = None,
    no_prompt_cache: Annotated[
        bool,
        typer.Option(
            "--no-prompt-cache",
            help="Do not mark shared prompt prefixes for the vendor's prompt cache (Claude).",
        ),
    ] = False,
    export: Annotated[
        Export | None,
        typer.Option(help="Also write results.openai.jsonl in the OpenAI batch output format."),
    ] = None,
    fallback: Annotated[
        Fallback | None,
        typer.Option(
            help="At the deadline guard, send unfinished vendor lines synchronously: realtime "
            "(OpenAI flex first where the model has it, then the standard tier; Claude "
            "Messages API), flex (flex only), none (they end 'expired'). [default: realtime]"
        ),
    ] = None,
    guard_margin_s: Annotated[
        float | None,
        typer.Option(
            help="Seconds before the deadline the guard fires. [default: 10% of the time to "
            "the deadline, 60-3600]"
        ),
    ] = None,
    poll_interval_s: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help="Seconds between vendor polls (env BATCHD_POLL_INTERVAL_S). [default: 30]",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    no_wait: Annotated[
        bool,
        typer.Option("--no-wait", help="Enqueue and print the run id (distributed mode only)."),
    ] = False,
    now: Annotated[
        bool,
        typer.Option(
            "--now",
            help="Run self-hosted vLLM work now, ignoring [backends.vllm] windows (embedded mode).",
        ),
    ] = False,
) -> None:
    """Run a file of LLM requests and wait for it, with live progress.

    Submitting the same file again while its run is unfinished resumes that run (nothing is
    sent twice); after it finished, a new run answers every line it can from the cache.
    Needs OPENAI_API_KEY for OpenAI models, ANTHROPIC_API_KEY for Claude models and
    GEMINI_API_KEY (or GOOGLE_API_KEY) for Gemini models (OPENAI_BASE_URL,
    ANTHROPIC_BASE_URL and GOOGLE_GEMINI_BASE_URL select other endpoints). Exit code 0: every
    line succeeded; 3: some did not (see `batchd results RUN`); 4: canceled; 1: error.
    """
    settings = cli_settings(
        poll_interval_s=poll_interval_s,
        output=output,
        backends={"vllm": {"windows": []}} if now else None,
    )
    if now and settings.redis_url:
        raise BatchdError(
            "--now runs vLLM work in this process, which distributed mode does not do.",
            "Unset BATCHD_REDIS_URL to run embedded, or widen the gpu workers' windows.",
        )
    if no_wait and not settings.redis_url:
        raise BatchdError(
            "--no-wait needs distributed mode.",
            "Set BATCHD_REDIS_URL to a Redis the batchd coordinators use, or drop "
            "--no-wait to run here and wait.",
        )
    options = run_options(
        settings,
        no_cache=no_cache,
        tenant=tenant,
        deadline=deadline or within,
        export=export.value if export else "",
        no_prompt_cache=no_prompt_cache,
        semantic_cache=semantic_cache,
        fallback=fallback.value if fallback else None,
        guard_margin_s=guard_margin_s,
    )
    deadline_at = run_deadline(deadline, within, time.time())
    preflight.check_input(file)  # before anything exists on disk
    preflight.check_start(settings, settings.output)
    preflight.check_embedding(settings, options)  # an endpoint embedding has its key
    svc = open_services(settings)
    try:
        run, resumed = start_run(
            svc,
            file,
            settings.output,
            options,
            deadline_at,
            stage=stage_input(svc) if svc.distributed else None,
            refuse_other_options=True,
        )
        if resumed:
            err.print(f"Resuming unfinished run {run.run_id} (same file and options).")
            if output is not None:
                run, was = redirect_output(svc, run, settings.output)
                if was:
                    err.print(f"Its results now go to {run.output} (was {was}).")
        else:
            err.print(f"Started run {run.run_id}.")
        if svc.distributed:
            from batchd.distributed.coordinator import kick

            asyncio.run(kick(settings.redis_url, svc, run.run_id))
            if no_wait:
                out.print(run.run_id)
                raise typer.Exit(EXIT_OK)
            run = wait_distributed(svc, run, quiet)
        else:
            run = run_embedded(svc, run, quiet)
        print_summary(svc, run)
        code = exit_code(run)
        raise_if_failed(run)
    finally:
        svc.close()
    raise typer.Exit(code)
