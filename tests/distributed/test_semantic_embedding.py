"""Distributed mode with cache.semantic.embedding = "openai:<model>": the coordinator sends the
run's embedding step as a Batch API job, then takes the run back to ingesting (not to
finalizing), and the run ends with the embeddings in its costs (real Redis, coordinator
processes, the OpenAI emulator through the real SDK)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import chat, write_jsonl
from tests.support.stack import Stack

BASE = ["How do I reset my password?", "Where can I download my invoices?"]
LEARN = ["I forgot my password, how do I reset it?", "How can I get copies of my invoices?"]
MODEL = "text-embedding-3-small"
ENV = {
    "BATCHD_CACHE_SEMANTIC_EMBEDDING": f"openai:{MODEL}",
    "BATCHD_CACHE_SEMANTIC_VERIFY_SHARE": "0",
}


@pytest.fixture
def stack(tmp_path: Path, emulator: OpenAIBatchEmulator) -> Iterator[Stack]:
    s = Stack(tmp_path, emulator)
    yield s
    s.stop()


def _submit(stack: Stack, path: Path) -> str:
    args = ("submit", str(path), "--output", str(stack.out), "--no-wait", "--semantic-cache")
    proc = stack.cli(*args, **ENV)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_the_coordinator_embeds_as_a_batch_then_ingests_the_run(
    stack: Stack, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    stack.start_coordinator(**ENV)
    texts = [chat(f"b{i}", t, max_tokens=64) for i, t in enumerate(BASE)]
    stack.wait_done(_submit(stack, write_jsonl(tmp_path / "base.jsonl", texts)))
    assert not [b for b in emulator.batches() if b["endpoint"] == "/v1/embeddings"]

    texts = [chat(f"l{i}", t, max_tokens=64) for i, t in enumerate(LEARN)]
    run_id = _submit(stack, write_jsonl(tmp_path / "learn.jsonl", texts))
    run = stack.wait_done(run_id)
    assert run.outcome == "succeeded", stack.describe(run_id)
    embed = [b for b in emulator.batches() if b["endpoint"] == "/v1/embeddings"]
    assert [b["metadata"]["batchd_chunk"] for b in embed] == [f"{run_id}-embed"]
    lines = [r for r in emulator.requests_seen() if r.get("url") == "/v1/embeddings"]
    assert sorted(r["body"]["input"] for r in lines) == sorted(BASE + LEARN)
    assert not [c for c in emulator.sync_calls if c.get("url") == "/v1/embeddings"]
    assert [r["custom_id"] for r in stack.rows(run_id)] == ["l0", "l1"]  # ingested after
    costs = pq.read_table(stack.out / run_id / "costs.parquet").to_pylist()
    (row,) = [r for r in costs if r["model"] == MODEL]
    assert row["requests"] == 4 and row["cost_usd"] > 0
    assert run.stats["embedding"]["embedded_texts"] == 4
    assert run.stats["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in costs))
