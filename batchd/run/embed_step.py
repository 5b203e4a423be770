"""The semantic cache's endpoint embeddings as a batched step of the run (issue 19).

With cache.semantic.embedding = "openai:<model>", the vectors the ingest lookups need are
bought through the OpenAI Batch API at the batch price, before the run is planned:

1. `prepare` (at the start of ingest_run) runs a read-only pass of the ingest (the caller's
   `scan`) whose embedder only reads the result cache and records the texts it lacks: the
   compared texts of lines whose scope has entries, and those entries stored without a vector
   (exactly what SemanticCache.lookup would embed).
2. Those texts become the run's embedding chunk (`<run>-embed`, one /v1/embeddings line per
   text, custom_id its request key in the SEMANTIC_SCOPE tenant, under `embeddings/`, which
   ingest's cleanup does not touch): the run goes to dispatching with only that chunk. It
   passes the same preflight as any chunk, and collect puts each vector in the result cache
   under its key, like any answer.
3. With every chunk collected and no ingest yet, the run goes back to ingesting
   (`after_dispatch`, in embedded and distributed mode alike); `prepare` finds the collected
   chunk and the real ingest reads every vector from the cache. A text whose embedding
   failed has none: its line is not matched (sent to the model), nothing is bought
   synchronously.

The chunk id is fixed per run, so a re-ingested run never buys twice. The chunk's cost (its
outcomes, at the batch price) is a row of costs.parquet (`add_costs`), in the run's cost,
together with the chunk `<run>-embed2` of the answers compared at finalize
(run.answer_embed_step, which writes it with `write_chunk`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from batchd.backends.openai_embedder import SEMANTIC_SCOPE, OpenAIEmbedder
from batchd.cache.semantic.matcher import SemanticCache
from batchd.config.pricing import Usage
from batchd.errors import BatchdError
from batchd.intake.vendor_ids import vendor_id
from batchd.outcome import SUCCEEDED
from batchd.output.cost_summary import CostSummary
from batchd.requests import EMBEDDINGS, Request
from batchd.run.semantic_step import endpoint_embedder, semantic_for_run, uses_endpoint
from batchd.run.services import Services
from batchd.state.base import (
    CHUNK_COLLECTED,
    RUN_DISPATCHING,
    RUN_FINALIZING,
    RUN_INGESTING,
    Chunk,
    Run,
)
from batchd.storage.chunk_outcomes import read_outcome_batches

log = logging.getLogger("batchd.embed")

EMBED_DIR = "embeddings"  # the chunk file's folder (not under chunks/: ingest clears that)
STATS_KEY = "embedding"  # run.stats: the embedding step's texts (set when it has a chunk)
BACKEND = "openai"


def embed_chunk_id(run_id: str) -> str:
    return f"{run_id}-embed"


def answers_chunk_id(run_id: str) -> str:
    """The chunk of the answers compared at finalize (run.answer_embed_step)."""
    return f"{run_id}-embed2"


def step_chunks(base: str, chunks: list[Chunk]) -> list[Chunk]:
    """The chunk `base` and its retry children (`<id>.<n>`)."""
    return [c for c in chunks if c.chunk_id == base or c.chunk_id.startswith(base + ".")]


def embed_chunks(run_id: str, chunks: list[Chunk]) -> list[Chunk]:
    """The run's embedding chunk (the ingest lookups') and its retry children."""
    return step_chunks(embed_chunk_id(run_id), chunks)


def after_dispatch(run: Run) -> str:
    """Where a run goes once every chunk is collected: back to ingesting when those were
    its embedding step's (no ingest yet), else finalizing."""
    stats = run.stats or {}
    return RUN_INGESTING if STATS_KEY in stats and "ingest" not in stats else RUN_FINALIZING


def ended_at(svc: Services, run: Run) -> float | None:
    """When the run's embedding step ended (None: it had none): the run's lines are planned
    from then, not from its creation, as that much of its time is gone (the same on every
    ingest of the run)."""
    if STATS_KEY not in (run.stats or {}):
        return None
    mine = embed_chunks(run.run_id, svc.store.chunks(run.run_id))
    return max((c.ended_at or 0.0 for c in mine), default=0.0) or None


def prepare(svc: Services, run: Run, scan: Callable[[SemanticCache], None]) -> Run | None:
    """Before the run's ingest: the run moved to dispatching its embedding chunk, or None
    when the ingest may go on (no endpoint embedder, nothing to embed, or embedded)."""
    if not uses_endpoint(svc, run.options):
        return None
    mine = embed_chunks(run.run_id, svc.store.chunks(run.run_id))
    if mine and all(c.state == CHUNK_COLLECTED for c in mine):
        return None  # bought (or failed) already: the ingest reads the cache
    if mine:  # added, but the run was not moved on (a crash): dispatch it, add nothing
        return svc.store.update_run(run.run_id, state=RUN_DISPATCHING)
    texts = missing_texts(svc, run.options, run.run_id, scan)
    if not texts:
        return None
    embedder = endpoint_embedder(svc, buy=False)
    chunk = write_chunk(svc, run, embedder, texts, embed_chunk_id(run.run_id))
    svc.store.add_chunks([chunk])
    log.info("run %s: %d texts to embed as a batch first", run.run_id, len(texts))
    stats = {**(run.stats or {}), STATS_KEY: {"texts": len(texts)}}
    return svc.store.update_run(run.run_id, state=RUN_DISPATCHING, stats=stats)


def missing_texts(
    svc: Services, options: dict[str, Any], salt: str, scan: Callable[[SemanticCache], None]
) -> list[str]:
    """The distinct texts the run's lookups need and the cache has no vector for; nothing
    is bought or stored (also what `batchd plan` reports)."""
    embedder = endpoint_embedder(svc, buy=False)
    semantic = semantic_for_run(svc, options, salt, embedder=embedder, read_only=True)
    if semantic is None:
        return []
    scan(semantic)
    return list(embedder.missing)


def write_chunk(
    svc: Services, run: Run, embedder: OpenAIEmbedder, texts: list[str], chunk_id: str
) -> Chunk:
    """The chunk `chunk_id` of the run: one /v1/embeddings line per text, under EMBED_DIR."""
    backend = svc.backends.get(BACKEND)
    if backend is None:
        raise BatchdError(
            "cache.semantic.embedding names an OpenAI model, but the openai backend is not "
            "configured here.",
            "Enable the openai backend, or set cache.semantic.embedding to a local model.",
        )
    path = f"{EMBED_DIR}/{chunk_id}.jsonl"
    n_bytes = 0
    with svc.blobs(run.run_id).writer(path) as out:
        for text in texts:
            key = embedder.key(text)
            request = Request(
                line_no=0,
                custom_id="",
                fmt="openai",
                model=embedder.model,
                tenant=SEMANTIC_SCOPE,
                tags={},
                cache_ok=True,
                deadline_at=None,
                body=embedder.request_body(text),
                key=key,
                endpoint=EMBEDDINGS,
            )
            line = backend.encode_line(vendor_id(key, cacheable=True), request) + b"\n"
            out.write(line)
            n_bytes += len(line)
    return Chunk(
        chunk_id=chunk_id,
        run_id=run.run_id,
        backend=BACKEND,
        model=embedder.model,
        path=path,
        n_requests=len(texts),
        n_bytes=n_bytes,
        deadline_at=run.deadline_at,
        endpoint=EMBEDDINGS,
    )


def add_costs(svc: Services, run: Run, summary: CostSummary) -> dict[str, float] | None:
    """The embedding steps' outcomes (the ingest lookups' and the answers compared at
    finalize, run.answer_embed_step) as one row of the run's costs (None: it had none)."""
    chunks = svc.store.chunks(run.run_id)
    answers = {c.chunk_id for c in step_chunks(answers_chunk_id(run.run_id), chunks)}
    mine = embed_chunks(run.run_id, chunks) + [c for c in chunks if c.chunk_id in answers]
    mine = [c for c in mine if c.result_path]
    if not mine:
        return None
    blobs = svc.blobs(run.run_id)
    texts = succeeded = tokens = answer_texts = failed_answers = 0
    cost_usd = 0.0
    for c in mine:
        with blobs.open(c.result_path or "") as src:
            for batch in read_outcome_batches(src):  # the columns it sums, not the vectors
                ok = sum(s == SUCCEEDED for s in batch.column("status").to_pylist())
                texts += batch.num_rows
                if c.chunk_id in answers:
                    answer_texts += batch.num_rows
                    failed_answers += batch.num_rows - ok
                succeeded += ok
                tokens += sum(batch.column("input_tokens").to_pylist())
                for cost in batch.column("cost_usd").to_pylist():  # one by one, in order
                    cost_usd += cost
    model = mine[0].model
    price = svc.prices.lookup(model)
    list_usd = svc.prices.cost_usd(price, Usage(input_tokens=tokens), batch=False) if price else 0
    summary.add_purchase(
        BACKEND,
        model,
        requests=texts,
        succeeded=succeeded,
        input_tokens=tokens,
        cost_usd=cost_usd,
        baseline_cost_usd=max(list_usd, cost_usd),
    )
    return {
        "embedded_texts": succeeded,
        "failed_texts": texts - succeeded,
        "embedding_tokens": tokens,
        "embedding_cost_usd": cost_usd,
        "answer_texts": answer_texts,  # of them: answers compared at finalize
        "failed_answer_texts": failed_answers,
    }
