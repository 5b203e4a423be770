"""The answers compared at finalize, embedded as a batched step of the run (issue 19).

With cache.semantic.embedding = "openai:<model>", finalize's Verifier
(cache.semantic.answer_check) compares each verification sample's and candidate's fresh
answer with the cached answer of the entry it matched, by their embeddings where the texts
differ and the rules agree. Those vectors are bought through the Batch API too:

1. Once every chunk of an ingested run is collected, the dispatch round's last check
   (run.pipeline.dispatch_round, beside run.judge_step) calls `add_answer_work`: the lines
   part's samples and candidates, their answers from the chunks' outcome parts, and the
   cached answers they are compared with give the texts to embed (answer_check.pairs and
   texts_to_embed, the Verifier's own selection); those whose vectors the result cache lacks
   become the chunk `<run>-embed2` (run.embed_step.write_chunk), dispatched, polled and
   collected like any other, in embedded and distributed mode alike (the coordinator's
   dispatch round is the same function).
2. At finalize the Verifier's embedder only reads the cache (`OpenAIEmbedder(buy=False)`): a
   text with no vector there (its embedding failed) leaves its row `unverified`, with no
   label; nothing is bought synchronously.

The chunk id is fixed per run, so the texts are added once and a finalize run again buys
nothing. Its cost is in the run's embedding row of costs.parquet (embed_step.add_costs).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pyarrow.parquet as pq

from batchd.cache.semantic.answer_check import pairs, texts_to_embed
from batchd.cache.semantic.matcher import CANDIDATE, VERIFY
from batchd.intake.ingest import CACHED, LINES_PATH
from batchd.outcome import FAILED, SUCCEEDED
from batchd.run.answer_index import succeeded_texts
from batchd.run.embed_step import answers_chunk_id, step_chunks, write_chunk
from batchd.run.semantic_step import endpoint_embedder, uses_endpoint
from batchd.run.services import Services
from batchd.state.base import Chunk, Run

log = logging.getLogger("batchd.embed")

COLUMNS = ["request_key", "state", "sem_check", "sem_source_key"]
CHECK_BLOCK = 4096  # texts looked up in the result cache at a time


def add_answer_work(svc: Services, run: Run, chunks: list[Chunk]) -> bool:
    """Add the run's answer embedding chunk (True), or False when it needs none or has it."""
    if run.cancel_requested or not uses_endpoint(svc, run.options):
        return False
    if not ((run.stats or {}).get("ingest") or {}).get("semantic_checks"):
        return False  # not ingested yet (the ingest lookups' step), or nothing to compare
    chunk_id = answers_chunk_id(run.run_id)
    if step_chunks(chunk_id, chunks):
        return False
    texts = answer_texts(svc, run, chunks)
    embedder = endpoint_embedder(svc, buy=False)
    for start in range(0, len(texts), CHECK_BLOCK):  # reads the cache: records what it lacks
        embedder.embed(texts[start : start + CHECK_BLOCK])
    missing = list(embedder.missing)
    if not missing:
        return False
    svc.store.add_chunks([write_chunk(svc, run, embedder, missing, chunk_id)])
    log.info("run %s: %d answers to embed as a batch before finalize", run.run_id, len(missing))
    return True


def answer_texts(svc: Services, run: Run, chunks: list[Chunk]) -> list[str]:
    """The distinct answers finalize's Verifier will embed for this run, in order."""
    checks, sources, keys = [], [], []
    for cols in _checked_rows(svc, run):
        checks += cols["sem_check"]
        sources += cols["sem_source_key"]
        keys += cols["request_key"]
    answers = succeeded_texts(svc, run, chunks, set(keys))
    outputs = [answers.get(k) for k in keys]
    statuses = [SUCCEEDED if o is not None else FAILED for o in outputs]
    return texts_to_embed(pairs(svc.cache, checks, sources, statuses, outputs))


def _checked_rows(svc: Services, run: Run) -> Iterator[dict[str, list]]:
    """The lines part's samples and candidates that were sent (a cached line never is)."""
    blobs = svc.blobs(run.run_id)
    with blobs.local(LINES_PATH) as path:
        for batch in pq.ParquetFile(path).iter_batches(columns=COLUMNS):
            cols = batch.to_pydict()
            keep = [
                i
                for i, (c, s) in enumerate(zip(cols["sem_check"], cols["state"], strict=True))
                if c in (VERIFY, CANDIDATE) and s != CACHED
            ]
            yield {name: [cols[name][i] for i in keep] for name in COLUMNS}
