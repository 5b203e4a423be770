"""The run state machine: ingest -> dispatch (chunk steps) -> finalize.

Steps are plain functions over the store and blobs, so the embedded driver here
and (later) arq workers run the same code.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import msgspec
import pyarrow.parquet as pq

from batchd.config.settings import Settings
from batchd.errors import BatchdError
from batchd.intake.ingest import LINES_PATH, LINES_SCHEMA, IngestStats
from batchd.outcome import CANCELED, SUCCEEDED, Outcome
from batchd.output.cost_summary import CostSummary
from batchd.output.manifest import finished, write_manifest
from batchd.output.results import RESULTS_ROW_GROUP_ROWS, results_writer, write_openai_jsonl
from batchd.output.row_assembly import RowAssembler
from batchd.planning.chunking import Chunker
from batchd.planning.observations import Observations, Observer
from batchd.planning.plan_totals import Estimate, PlanSummary
from batchd.quality.measure import run_quality
from batchd.run import (
    answer_embed_step,
    deadline_guard,
    destination,
    embed_step,
    follow_ups,
    judge_step,
    preflight,
)
from batchd.run.answer_index import outcome_index, scratch_dir
from batchd.run.cancel import until_next_round
from batchd.run.dispatch import STEP, step_failed
from batchd.run.endings import RUN_CANCELED, abandon_chunk, end_run, retried_step
from batchd.run.read_ahead import ahead
from batchd.run.semantic_step import semantic_for_run, uses_endpoint, verifier_for_run
from batchd.run.services import Services
from batchd.run.source_pass import committed_gpu_s, dry_chunker, ingest_source, scanner
from batchd.state.base import (
    CHUNK_COLLECTED,
    RUN_DISPATCHING,
    RUN_DONE,
    RUN_FINALIZING,
    RUN_INGESTING,
    Chunk,
    Run,
    StaleLease,
)

log = logging.getLogger("batchd.pipeline")

FINALIZE_BATCH_ROWS = 65536
_outcome_dec = msgspec.msgpack.Decoder(Outcome)
_outcome_enc = msgspec.msgpack.Encoder()

RUN_SUCCEEDED = "succeeded"
RUN_WITH_FAILURES = "finished_with_failures"
__all__ = ["LINES_PATH", "RUN_CANCELED", "RUN_SUCCEEDED", "RUN_WITH_FAILURES"]


class PlanReport(msgspec.Struct, kw_only=True):
    stats: IngestStats
    chunks: list[Chunk]
    estimates: dict[str, Estimate]
    summary: PlanSummary
    deadline_at: float = 0.0
    quality: list[dict[str, Any]] = []  # the quality guard: each alias's targets and gates


def _estimates_by_model(chunker: Chunker) -> dict[str, Estimate]:
    return {f"{backend}:{model}": est for (backend, model), est in chunker.estimates.items()}


def plan_file(
    svc: Services,
    source: str,
    options: dict[str, Any],
    on_progress: Callable[[IngestStats], None] | None = None,
    *,
    deadline_at: float | None = None,
    now: float | None = None,
) -> PlanReport:
    """Dry run: everything `submit` does before the first vendor call; nothing is written."""
    now = time.time() if now is None else now
    deadline = deadline_at or now + svc.settings.default_deadline_h * 3600
    chunker = dry_chunker(svc, svc.settings, deadline, now, "")
    stats = ingest_source(svc, source, options, chunker, "plan", None, on_progress)
    chunks = chunker.finish()
    if uses_endpoint(svc, options):  # what the run's embedding step would buy (nothing here)
        scan = scanner(svc, source, options, svc.settings, deadline, now, "")
        texts = embed_step.missing_texts(svc, options, "plan", scan)
        stats.semantic_embedding = {"texts_to_embed": len(texts)}
    return PlanReport(
        stats=stats,
        chunks=chunks,
        estimates=_estimates_by_model(chunker),
        summary=chunker.summary,
        deadline_at=deadline,
        quality=chunker.guard.view(svc.router, list(svc.settings.models)),
    )


def ingest_run(
    svc: Services, run: Run, on_progress: Callable[[IngestStats], None] | None = None
) -> Run:
    """Ingest step: lines parts + chunk files, then chunks and stats in one store change.

    A run canceled before its ingest finished ends here (nothing of it was sent).
    """
    if run.cancel_requested:
        return end_run(svc, run, RUN_CANCELED, "canceled before its input was read; no results")
    settings = run_settings(svc.settings, run.options)
    now = run.created_at or None
    scan = scanner(svc, run.source, run.options, settings, run.deadline_at, now, run.run_id)
    embedding = embed_step.prepare(svc, run, scan)  # endpoint vectors: a batch of the run first
    if embedding is not None:
        return embedding
    blobs = svc.blobs(run.run_id)
    blobs.remove_tree("chunks")  # leftovers of an ingest killed half-way
    chunker = Chunker(
        run.run_id,
        settings,
        svc.prices,
        svc.backends,
        blobs.open_write,
        run_deadline_at=run.deadline_at,
        prompt_cache=not run.options.get("no_prompt_cache"),
        router=svc.router,
        observations=Observations(svc.store.observations()),
        now=embed_step.ended_at(svc, run) or now,  # after an embedding step: from its end
        committed_gpu_s=committed_gpu_s(svc, run.run_id),
    )
    with blobs.writer(LINES_PATH) as out, pq.ParquetWriter(out, LINES_SCHEMA) as writer:
        semantic = semantic_for_run(svc, run.options, run.run_id)
        stats = ingest_source(
            svc,
            run.source,
            run.options,
            chunker,
            run.run_id,
            writer.write_batch,
            on_progress,
            semantic,
        )
    chunks = chunker.finish()
    svc.store.add_chunks(chunks)
    return svc.store.update_run(
        run.run_id,
        state=RUN_DISPATCHING,
        stats={
            **(run.stats or {}),  # the embedding step's, if it had one
            "ingest": msgspec.to_builtins(stats),
            "estimates": msgspec.to_builtins(_estimates_by_model(chunker)),
            "plan": msgspec.to_builtins(chunker.summary),
        },
    )


def run_settings(settings: Settings, options: dict[str, Any]) -> Settings:
    """The run's own chunk limits (fixed at submit) win over this process's settings."""
    replace = msgspec.structs.replace
    openai = replace(
        settings.openai,
        max_lines_per_chunk=options.get("chunk_lines", settings.openai.max_lines_per_chunk),
        max_bytes_per_chunk=options.get("chunk_bytes", settings.openai.max_bytes_per_chunk),
    )
    anthropic = replace(
        settings.anthropic,
        max_lines_per_chunk=options.get(
            "anthropic_chunk_lines", settings.anthropic.max_lines_per_chunk
        ),
        max_bytes_per_chunk=options.get(
            "anthropic_chunk_bytes", settings.anthropic.max_bytes_per_chunk
        ),
    )
    fallback = options.get("fallback", settings.fallback)
    return replace(settings, openai=openai, anthropic=anthropic, fallback=fallback)


async def dispatch_round(svc: Services, run: Run, states: tuple[str, ...] | None = None) -> bool:
    """One pass of every open chunk's next step. True when every chunk is collected.

    A step that raises is retried with backoff; after `max_step_failures` its chunk's lines
    end `failed` with the reason, never silently dropped. Once the run is canceled, a step
    runs without waiting for its backoff, and if it fails its chunk's lines end `canceled`.
    Before a pending chunk is sent, the preflight checks its backend and the output.
    StaleLease (distributed mode: this process lost the run's lease) ends the round at once,
    nothing more written.
    """
    now = time.time()
    chunks = svc.store.chunks(run.run_id)
    if not run.cancel_requested:
        run = preflight.guard_dispatch(
            svc, run, [c for c in chunks if not states or c.state in states]
        )
    for chunk in chunks:
        step = STEP.get(chunk.state)
        if step is None or (states and chunk.state not in states):
            continue
        if chunk.retry_at > now and not run.cancel_requested:
            continue
        try:
            guarded = await deadline_guard.before_step(svc, run, chunk)  # None: the guard sent it
            if guarded is not None:
                await step(svc, run, guarded)
        except StaleLease:
            raise  # the run is another's now: nothing more is written
        except Exception as exc:
            if run.cancel_requested:  # canceled: a step that fails is not tried again
                await abandon_chunk(svc, run, chunk, f"{type(exc).__name__}: {exc}")
            elif isinstance(exc, BatchdError):
                raise  # the user must act (e.g. a refused API key): stop, the run resumes later
            else:
                await step_failed(svc, run, chunk, exc)
    chunks = svc.store.chunks(run.run_id)
    if not all(c.state == CHUNK_COLLECTED for c in chunks):
        return False
    more = judge_step.add_judge_work(svc, run, chunks)  # judge: more batch work
    # an endpoint's embeddings of the answers finalize compares: one more batch
    return not (answer_embed_step.add_answer_work(svc, run, chunks) or more)


def finalize_step(svc: Services, run: Run) -> Run:
    """finalize_run as a retried step that ends the run when it gives up (run.endings)."""
    return retried_step(svc, run, "finalize", finalize_run)


def finalize_run(svc: Services, run: Run) -> Run:
    """Join lines with outcomes into results.parquet and costs.parquet under output/run_id.

    The output may be a local directory or an s3:// prefix; each file appears under its
    final name only once complete, results.parquet last, then the finished manifest. A
    folder holding another run's outputs is never replaced (run.destination).
    """
    blobs = svc.blobs(run.run_id)
    run, out, manifest = destination.claim(svc, run)  # never another run's outputs
    export = run.options.get("export") == "openai-jsonl"
    observer = Observer(svc.settings.backends.vllm.gpu_type)
    with tempfile.TemporaryDirectory(dir=scratch_dir(svc)) as tmp, ExitStack() as files:
        index = outcome_index(svc, run, Path(tmp), observer)
        files.callback(index.close)
        summary = CostSummary(run.run_id, svc.prices.version)
        verifier = verifier_for_run(svc, run.stats or {})
        assembler = RowAssembler(
            run.run_id,
            svc.prices,
            index.find,
            summary,
            baseline_model=svc.router.baseline_model,
            semantic_verdicts=verifier.verdicts if verifier else None,
        )
        results_file = files.enter_context(out.writer("results.parquet"))
        writer = files.enter_context(results_writer(results_file))
        export_file = files.enter_context(out.writer("results.openai.jsonl")) if export else None
        lines = pq.ParquetFile(files.enter_context(blobs.local(LINES_PATH)))
        # each batch written (Parquet encoding, compression: no GIL) while the next is made,
        # and the next one's lines read and outcomes found (Arrow takes: no GIL) meanwhile
        pool = files.enter_context(ThreadPoolExecutor(1, thread_name_prefix="results-writer"))
        finder = files.enter_context(ThreadPoolExecutor(1, thread_name_prefix="results-finder"))
        written: Future[None] | None = None
        batches = lines.iter_batches(batch_size=FINALIZE_BATCH_ROWS)
        for batch, outcomes in ahead(batches, assembler.outcomes, finder):
            rows = assembler.finish(batch, outcomes)
            if written is not None:
                written.result()
            written = pool.submit(writer.write_batch, rows, RESULTS_ROW_GROUP_ROWS)
            if export_file is not None:
                write_openai_jsonl(rows, export_file, batch)
        if written is not None:
            written.result()
        writer.close()
        embedding = embed_step.add_costs(svc, run, summary)  # the batched embeddings' row
        with out.writer("costs.parquet") as costs_file:
            pq.write_table(summary.table(), costs_file)
        guard = run_quality(  # the quality guard's shadow samples and probes (batchd.quality)
            run.run_id,
            lambda p: blobs.read_bytes(p) if blobs.exists(p) else None,
            index.lookup,
            svc.settings,
            svc.store.observations(),
        )
        if guard is not None:
            with out.writer("quality.parquet") as quality_file:
                pq.write_table(guard[0], quality_file)
        # Leaving the block completes results.openai.jsonl, then results.parquet.
    measured = {**observer.sums(), **(guard[1] if guard else {})}
    svc.store.add_observations(measured)  # what this run measured, for later plans
    counts = assembler.status_counts
    if run.cancel_requested and counts.get(CANCELED):  # else nothing was left to cancel
        outcome = RUN_CANCELED
    elif set(counts) <= {SUCCEEDED}:
        outcome = RUN_SUCCEEDED
    else:
        outcome = RUN_WITH_FAILURES
    stats = dict(run.stats)
    stats["status_counts"] = counts
    stats["tiers"] = assembler.tiers  # lines and cost per serving tier (batch, flex, ...)
    stats["cost_usd"] = summary.total("cost_usd")
    stats["baseline_cost_usd"] = summary.total("baseline_cost_usd")
    stats["prompt_cache_savings_usd"] = summary.total("prompt_cache_savings_usd")
    if embedding is not None:
        stats[embed_step.STATS_KEY] = embedding
    if guard is not None:
        stats["quality"] = guard[0].drop_columns(["run_id"]).to_pylist()
    if verifier is not None:  # semantic cache: verified hits, false ones, labels learned
        stats["semantic"] = {
            "verified": verifier.verified,
            "false_hits": verifier.false_hits,
            "unverified": verifier.unverified,  # an answer had no vector (its embedding failed)
            **verifier.embedder.spend.as_dict(),  # answers embedded to compare them
        }
    write_manifest(
        out,
        finished(
            manifest,
            rows=sum(counts.values()),
            cost_usd=stats["cost_usd"],
            baseline_cost_usd=stats["baseline_cost_usd"],
            status_counts=dict(counts),
            outcome=outcome,
            price_book=svc.prices.version,
        ),
    )  # last: the folder's outputs are complete
    if not svc.settings.retain_work:  # prompts: not needed by a finalize that runs again
        blobs.remove_tree("chunks")
        blobs.remove_tree(embed_step.EMBED_DIR)
        blobs.remove_tree("input")
    done = svc.store.update_run(run.run_id, state=RUN_DONE, outcome=outcome, stats=stats)
    follow_ups.fire(svc, done)  # e.g. a dropped file: move it to done/ with its report
    return done


async def drive(
    svc: Services,
    run_id: str,
    on_progress: Callable[[Run, list[Chunk], IngestStats | None], None] | None = None,
) -> Run:
    """Run every step of one run until it is done (embedded mode)."""
    while True:
        run = svc.store.get_run(run_id)
        if run is None:
            raise BatchdError(f"No run {run_id}.", "List runs with `batchd status`.")
        if run.state == RUN_INGESTING:

            def ingest_progress(stats: IngestStats, run: Run = run) -> None:
                if on_progress is not None:
                    on_progress(run, [], stats)

            ingest_run(svc, run, ingest_progress)
            continue
        if run.state == RUN_DISPATCHING:
            done = await dispatch_round(svc, run)
            if on_progress is not None:
                on_progress(run, svc.store.chunks(run_id), None)
            if done:  # finalizing, or ingesting after the embedding step (run.embed_step)
                svc.store.update_run(run_id, state=embed_step.after_dispatch(run))
                continue
            await until_next_round(svc, run)
            continue
        if run.state == RUN_FINALIZING:
            run = finalize_step(svc, run)
            if run.state != RUN_DONE:  # failed: retried after its backoff
                await asyncio.sleep(max(0.0, min(run.retry_at - time.time(), 60.0)))
                continue
        if on_progress is not None:
            on_progress(run, svc.store.chunks(run_id), None)
        return run
