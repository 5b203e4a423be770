"""`batchd submit` with cache.semantic.embedding = "openai:<model>", end to end: the OpenAI
emulator answers both the Batch API and the embeddings calls (real SDK). Plumbing, not
meaning (the emulator's vectors are meaning-free): only the texts the lookup needs are sent,
each once, a later run does not embed them again, the cost shows in `batchd report`, and a
missing key stops the run before anything is sent or bought."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import Batchd, chat, write_jsonl

BASE = ["How do I reset my password?", "Where can I download my invoices?"]
LEARN = ["I forgot my password, how do I reset it?", "How can I get copies of my invoices?"]
NEW = "Can I pause my subscription for a month?"
ENV = {
    "BATCHD_CACHE_SEMANTIC_EMBEDDING": "openai:text-embedding-3-small",
    "BATCHD_CACHE_SEMANTIC_VERIFY_SHARE": "0",
}


def _file(path: Path, texts: list[str], prefix: str) -> Path:
    return write_jsonl(path, [chat(f"{prefix}{i}", t, max_tokens=64) for i, t in enumerate(texts)])


def _submit(batchd: Batchd, path: Path, **env: str) -> Any:
    args = ("submit", str(path), "--output", str(batchd.out), "--semantic-cache")
    return batchd.run(*args, timeout=300, **{**ENV, **env})


def _embedded(emu: OpenAIBatchEmulator, since: int = 0) -> list[str]:
    calls = [c for c in emu.sync_calls[since:] if c.get("url") == "/v1/embeddings"]
    return [t for c in calls for t in c["body"]["input"]]


def _report(batchd: Batchd, before: set[Path]) -> tuple[dict, str]:
    (run_dir,) = set(batchd.run_dirs()) - before
    doc = json.loads(batchd.run("report", run_dir.name, "--json").stdout)
    text = " ".join(batchd.run("report", run_dir.name, COLUMNS="200").stdout.split())
    return doc, text


def test_embeddings_come_from_the_endpoint_once_and_are_accounted(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    first = _submit(batchd, _file(tmp_path / "base.jsonl", BASE, "b"))
    assert first.returncode == 0, first.stderr
    assert _embedded(emulator) == []  # no cached entries yet: nothing to compare with
    doc, _ = _report(batchd, set())
    assert doc["semantic_cache_embedding"] is None

    before, calls = set(batchd.run_dirs()), len(emulator.sync_calls)
    second = _submit(batchd, _file(tmp_path / "learn.jsonl", LEARN, "l"))
    assert second.returncode == 0, second.stderr
    sent = _embedded(emulator, calls)
    assert set(BASE + LEARN) <= set(sent)  # the entries (stored without vectors) and the lines
    assert len([t for t in sent if t in BASE + LEARN]) == 4  # each once
    doc, text = _report(batchd, before)
    spend = doc["semantic_cache_embedding"]
    assert spend["embedded_texts"] == len(sent) and spend["embedding_calls"] >= 2
    assert spend["embedding_tokens"] > 0 and spend["embedding_cost_usd"] > 0
    assert f"semantic cache embeddings: {len(sent)} texts" in text, text
    assert "synchronous calls at list price" in text

    before, calls = set(batchd.run_dirs()), len(emulator.sync_calls)
    third = _submit(batchd, _file(tmp_path / "again.jsonl", [*LEARN, NEW], "a"))
    assert third.returncode == 0, third.stderr
    rows = batchd.results(next(iter(set(batchd.run_dirs()) - before)))
    assert [r["cache"] for r in rows[:2]] == ["exact", "exact"]  # exact hits come first
    again = _embedded(emulator, calls)
    assert NEW in again and not set(again) & set(BASE + LEARN)  # entries keep their vectors

    # Another scope (max_tokens differs) with the same texts: new entries, stored without
    # vectors, and new lines to look up; every vector is in the result cache, by its key.
    def other(name: str, texts: list[str]) -> Path:
        return write_jsonl(
            tmp_path / name, [chat(f"o{i}", t, max_tokens=32) for i, t in enumerate(texts)]
        )

    assert _submit(batchd, other("o1.jsonl", BASE)).returncode == 0
    before, calls = set(batchd.run_dirs()), len(emulator.sync_calls)
    fourth = _submit(batchd, other("o2.jsonl", LEARN))
    assert fourth.returncode == 0, fourth.stderr
    assert _embedded(emulator, calls) == []  # nothing bought again
    doc, _ = _report(batchd, before)
    assert doc["semantic_cache_embedding"] is None


def test_a_missing_key_stops_the_run_before_anything_is_sent(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    run = _submit(batchd, _file(tmp_path / "base.jsonl", BASE, "b"), OPENAI_API_KEY="")
    assert run.returncode != 0
    assert "OPENAI_API_KEY is not set" in run.stderr, run.stderr
    assert "cache.semantic.embedding" in run.stderr
    assert emulator.sync_calls == [] and emulator.batches() == [] and emulator.files() == []
    assert batchd.run_dirs() == []  # refused before the run was created

    off = batchd.submit(_file(tmp_path / "off.jsonl", BASE, "o"), **ENV, OPENAI_API_KEY="")
    assert off.returncode != 0  # without the semantic cache the embedding key is not asked
    assert "cache.semantic.embedding" not in off.stderr and "Batch API" in off.stderr, off.stderr
