"""Reading a run's input: one ingest pass over its source, with the cache, tenant and worker
count its options call for (pipeline.ingest_run and plan_file), and the dry passes that plan
and write nothing (`batchd plan`, the semantic cache's embedding pre-pass, run.embed_step).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from batchd.cache.semantic.matcher import SemanticCache
from batchd.config.settings import Settings
from batchd.errors import BatchdError
from batchd.intake.decode import auto_workers
from batchd.intake.ingest import IngestStats, ingest
from batchd.intake.lines import open_source
from batchd.planning.chunking import Chunker
from batchd.planning.observations import Observations
from batchd.run.services import Services
from batchd.state.base import CHUNK_COLLECTED, RUN_DONE
from batchd.storage.s3 import is_s3


def dry_chunker(
    svc: Services, settings: Settings, deadline: float, now: float | None, run_id: str
) -> Chunker:
    """A chunker that plans and writes nothing (plan, and the embedding pre-pass)."""
    return Chunker(
        "plan",
        settings,
        svc.prices,
        svc.backends,
        lambda _: None,
        run_deadline_at=deadline,
        router=svc.router,
        observations=Observations(svc.store.observations()),
        now=now,
        dry_run=True,
        committed_gpu_s=committed_gpu_s(svc, run_id),
    )


def scanner(
    svc: Services,
    source: str,
    options: dict[str, Any],
    settings: Settings,
    deadline: float,
    now: float | None,
    run_id: str,
) -> Callable[[SemanticCache], None]:
    """A dry ingest of `source` with a given (read-only) semantic cache: its lookups."""

    def scan(semantic: SemanticCache) -> None:
        chunker = dry_chunker(svc, settings, deadline, now, run_id)
        ingest_source(svc, source, options, chunker, "plan", None, None, semantic)

    return scan


ACTIVE_RUNS_SCANNED = 200


def committed_gpu_s(svc: Services, own_run_id: str) -> float:
    """GPU-seconds other unfinished runs planned for vLLM and have not finished yet."""
    if not svc.settings.backends.vllm.enabled:
        return 0.0
    total = 0.0
    for run in svc.store.list_runs(ACTIVE_RUNS_SCANNED):
        if run.state == RUN_DONE or run.run_id == own_run_id:
            continue
        for c in svc.store.chunks(run.run_id):
            if c.backend == "vllm" and c.state != CHUNK_COLLECTED:
                total += c.est_gpu_s
    return total


def ingest_source(
    svc: Services,
    source: str,
    options: dict[str, Any],
    chunker: Chunker,
    run_salt: str,
    write_rows: Callable[[pa.RecordBatch], None] | None,
    on_progress: Callable[[IngestStats], None] | None,
    semantic: SemanticCache | None = None,
) -> IngestStats:
    """Ingest one source with the cache, tenant and worker count its options call for."""
    with open_input(svc, source) as stream:
        return ingest(
            stream,
            router=svc.router,
            chunker=chunker,
            cache=None if options.get("no_cache") else svc.cache,
            default_tenant=options.get("tenant") or svc.settings.default_tenant,
            run_salt=run_salt,
            write_rows=write_rows,
            on_progress=on_progress,
            workers=workers(svc, source),
            semantic=semantic,
            dedup_memory_bytes=svc.settings.ingest_dedup_memory_mb << 20,
        )


def workers(svc: Services, source: str) -> int:
    if svc.settings.ingest_workers > 0:
        return svc.settings.ingest_workers
    try:
        if is_s3(source):
            head = svc.s3.head(source)
            size = int(head["ContentLength"]) if head else 0
        else:
            size = os.path.getsize(source)
    except OSError:
        return 1
    return auto_workers(size)


def open_input(svc: Services, source: str) -> Any:
    if is_s3(source):  # streamed from S3, never whole in memory or on disk
        return svc.s3.open(source, decompress=True)
    try:
        return open_source(source)
    except FileNotFoundError as exc:
        raise BatchdError(f"Input file {source} does not exist.", "Check the path.") from exc
