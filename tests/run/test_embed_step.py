"""The semantic cache's endpoint embeddings as a batched step of the run (run.embed_step),
through the library against the OpenAI emulator (real SDK): the step's chunk is added once
per run, a run ingested again (a crash before it was moved on) adds nothing, and a run
resumed by a new process after its embedding batch was created does not create another;
the answers compared at finalize are one more chunk (run.answer_embed_step), added once,
and a finalize run again buys nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from batchd.config.settings import load_settings
from batchd.run.embed_step import EMBED_DIR, answers_chunk_id, embed_chunk_id, ended_at
from batchd.run.identity import run_options, start_run
from batchd.run.pipeline import LINES_PATH, dispatch_round, drive, finalize_run, ingest_run
from batchd.run.services import open_services
from batchd.state.base import (
    CHUNK_SUBMITTED,
    RUN_DISPATCHING,
    RUN_DONE,
    RUN_FINALIZING,
    RUN_INGESTING,
)
from tests.cache.semantic_support import seed_endpoint_vectors
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import Batchd, chat, write_jsonl

BASE = ["How do I reset my password?", "Where can I download my invoices?"]
LEARN = ["I forgot my password, how do I reset it?", "How can I get copies of my invoices?"]
ENV = {
    "BATCHD_CACHE_SEMANTIC_EMBEDDING": "openai:text-embedding-3-small",
    "BATCHD_CACHE_SEMANTIC_VERIFY_SHARE": "0",
}


def _lines(path: Path, texts: list[str], prefix: str) -> Path:
    return write_jsonl(path, [chat(f"{prefix}{i}", t, max_tokens=64) for i, t in enumerate(texts)])


def test_a_run_ingested_again_or_resumed_does_not_buy_its_embeddings_twice(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = _lines(tmp_path / "base.jsonl", BASE, "b")
    seed = batchd.run("submit", str(base), "--output", str(batchd.out), "--semantic-cache", **ENV)
    assert seed.returncode == 0, seed.stderr  # entries to compare with, stored without vectors
    seeded = set(batchd.run_dirs())
    seed_id = next(iter(seeded)).name
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.setenv(name, batchd.env[name])
    settings = load_settings(environ={**batchd.env, **ENV})
    svc = open_services(settings)
    try:
        src = _lines(tmp_path / "learn.jsonl", LEARN, "l")
        options = run_options(svc.settings, semantic_cache=True)
        run, _ = start_run(svc, str(src), str(batchd.out), options, None)
        moved = ingest_run(svc, run)
        assert moved.state == RUN_DISPATCHING
        (chunk,) = svc.store.chunks(run.run_id)  # only the embedding step, before planning
        assert chunk.chunk_id == embed_chunk_id(run.run_id)
        assert chunk.endpoint == "embeddings" and chunk.n_requests == len(BASE + LEARN)
        assert chunk.path.startswith(f"{EMBED_DIR}/")
        assert not svc.blobs(run.run_id).exists(LINES_PATH)  # the lines are not planned yet

        # a crash before the run was moved on: ingested again, it adds nothing
        again = ingest_run(svc, svc.store.update_run(run.run_id, state=RUN_INGESTING))
        assert again.state == RUN_DISPATCHING
        assert [c.chunk_id for c in svc.store.chunks(run.run_id)] == [chunk.chunk_id]

        asyncio.run(dispatch_round(svc, again))  # its batch is created; then the process dies
        sent = svc.store.get_chunk(chunk.chunk_id)
        assert sent is not None and sent.state == CHUNK_SUBMITTED
    finally:
        svc.close()
    svc = open_services(settings)  # a new process resumes the run
    try:
        done = asyncio.run(drive(svc, run.run_id))
        assert done.state == RUN_DONE and done.outcome == "succeeded"
        ids = [c.chunk_id for c in svc.store.chunks(run.run_id)]
        assert ids.count(chunk.chunk_id) == 1 and len(ids) > 1  # then the lines' own chunks
        ended = svc.store.get_chunk(chunk.chunk_id)
        assert ended is not None and ended.ended_at is not None
        # the lines are planned from the embedding step's end, not from the run's creation
        assert ended_at(svc, done) == ended.ended_at > (done.created_at or 0)
        assert ended_at(svc, svc.store.get_run(seed_id) or done) is None
    finally:
        svc.close()
    assert emulator.batch_count_by_metadata("batchd_chunk")[chunk.chunk_id] == 1
    embedded = [r for r in emulator.requests_seen() if r.get("url") == "/v1/embeddings"]
    assert sorted(r["body"]["input"] for r in embedded) == sorted(BASE + LEARN)
    assert not [c for c in emulator.sync_calls if c.get("url") == "/v1/embeddings"]
    (run_dir,) = set(batchd.run_dirs()) - seeded
    rows = batchd.results(run_dir)
    assert sorted(r["custom_id"] for r in rows) == ["l0", "l1"]  # each line one row


def test_answers_compared_at_finalize_are_one_chunk_and_a_second_finalize_buys_nothing(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {  # every hit sampled: sent, and its answer compared at finalize
        **ENV,
        "BATCHD_CACHE_SEMANTIC_VERIFY_SHARE": "1",
        "BATCHD_CACHE_SEMANTIC_PRIOR_THRESHOLD": "0.8",
    }
    base = _lines(tmp_path / "base.jsonl", BASE, "b")
    seed = batchd.run("submit", str(base), "--output", str(batchd.out), "--semantic-cache", **env)
    assert seed.returncode == 0, seed.stderr
    seeded = set(batchd.run_dirs())
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.setenv(name, batchd.env[name])
    svc = open_services(load_settings(environ={**batchd.env, **env}))
    try:
        model = env["BATCHD_CACHE_SEMANTIC_EMBEDDING"].split(":", 1)[1]
        seed_endpoint_vectors(svc.cache, model, BASE + LEARN)  # the lookups need no batch
        src = _lines(tmp_path / "learn.jsonl", LEARN, "l")
        options = run_options(svc.settings, semantic_cache=True)
        run, _ = start_run(svc, str(src), str(batchd.out), options, None)
        done = asyncio.run(drive(svc, run.run_id))
        assert done.state == RUN_DONE and done.outcome == "succeeded"
        ids = [c.chunk_id for c in svc.store.chunks(run.run_id)]
        assert (
            embed_chunk_id(run.run_id) not in ids and ids.count(answers_chunk_id(run.run_id)) == 1
        )
        chunk = svc.store.get_chunk(answers_chunk_id(run.run_id))
        assert chunk is not None and chunk.endpoint == "embeddings" and chunk.n_requests == 4
        assert done.stats["semantic"]["verified"] == 2  # both hits sampled, both compared
        assert done.stats["semantic"]["unverified"] == 0
        # the dispatch round's last check again: the chunk is there, nothing is added
        assert asyncio.run(dispatch_round(svc, done)) is True
        assert [c.chunk_id for c in svc.store.chunks(run.run_id)] == ids
        (run_dir,) = set(batchd.run_dirs()) - seeded
        costs = batchd.costs(run_dir)
        batches, seen = len(emulator.batches()), len(emulator.requests_seen())
        again = finalize_run(svc, svc.store.update_run(run.run_id, state=RUN_FINALIZING))
        assert again.state == RUN_DONE and again.stats["semantic"] == done.stats["semantic"]
    finally:
        svc.close()
    assert len(emulator.batches()) == batches and len(emulator.requests_seen()) == seen
    assert not [c for c in emulator.sync_calls if c.get("url") == "/v1/embeddings"]
    assert batchd.costs(run_dir) == costs  # the answers' embeddings counted once
    (row,) = [r for r in costs if r["model"] == model]
    assert row["requests"] == 4 and row["succeeded"] == 4
    embedded = [
        r["body"]["input"] for r in emulator.requests_seen() if r.get("url") == "/v1/embeddings"
    ]
    assert sorted(embedded) == sorted(f"echo: {t}" for t in BASE + LEARN)  # the answers only
