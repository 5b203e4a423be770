"""`batchd submit` with the semantic cache, end to end: the OpenAI Batch emulator (real SDK),
real MiniLM embeddings, SQLite state. Run 1 fills the cache; run 2's paraphrases are only
candidates in a scope with no labels (sent; their answers compared and learned from); run 3's
paraphrases are answered from the cache, its near-miss is not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import Batchd, chat, write_jsonl

BASE = [
    "How do I reset my password?",
    "What is the refund policy for order 1234?",
    "Which plans include free shipping?",
    "What were total sales in March 2025?",
    "How long does shipping to Canada take?",
    "How do I change the email address on my account?",
    "Can I pause my subscription for a month?",
    "Where can I download my invoices?",
]
LEARN = [  # rewordings below the prior threshold: candidates, labelled at finalize
    "I forgot my password, how do I reset it?",
    "Could you describe the refund rules for order 1234?",
    "Which subscription plans have free shipping?",
    "Tell me total sales for March 2025.",
    "How many days does shipping to Canada take?",
    "How can I update the email address of my account?",
    "Is there a way to put my subscription on hold for a month?",
    "How can I get copies of my invoices?",
]
SERVE = [
    "What are the steps to reset my password?",
    "What is the refund policy for order 1243?",  # near-miss: one digit
]
# A loose bound, so that 8 labels are enough evidence (with 0.02 it takes ~135).
ENV = {
    "BATCHD_CACHE_SEMANTIC_MAX_ERROR_RATE": "0.3",
    "BATCHD_CACHE_SEMANTIC_VERIFY_SHARE": "0",
}


def _file(path: Path, texts: list[str], prefix: str) -> Path:
    return write_jsonl(path, [chat(f"{prefix}{i}", t, max_tokens=64) for i, t in enumerate(texts)])


def _submit(batchd: Batchd, path: Path, *extra: str) -> Any:
    """A submit that loads MiniLM in its own process: slower than the helpers' default."""
    return batchd.run("submit", str(path), "--output", str(batchd.out), *extra, timeout=600, **ENV)


def _rows(batchd: Batchd, before: set[Path]) -> tuple[str, list[dict]]:
    (new,) = set(batchd.run_dirs()) - before
    return new.name, batchd.results(new)


def test_second_run_learns_third_run_answers_a_paraphrase_from_the_cache(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    first = _submit(batchd, _file(tmp_path / "base.jsonl", BASE, "b"), "--semantic-cache")
    assert first.returncode == 0, first.stderr
    _, base_rows = _rows(batchd, set())

    before = set(batchd.run_dirs())
    second = _submit(batchd, _file(tmp_path / "learn.jsonl", LEARN, "l"), "--semantic-cache")
    assert second.returncode == 0, second.stderr
    _, learn_rows = _rows(batchd, before)
    assert {r["cache"] for r in learn_rows} == {"none"}  # no labels yet: all sent
    assert all(r["cache_source_key"] is None and r["similarity"] is None for r in learn_rows)

    off_file = _file(tmp_path / "off.jsonl", ["Please list the steps to reset my password."], "o")
    before = set(batchd.run_dirs())
    off = _submit(batchd, off_file, "--no-semantic-cache")
    assert off.returncode == 0, off.stderr
    _, off_rows = _rows(batchd, before)
    assert [r["cache"] for r in off_rows] == ["none"]  # the run said no
    answer_of = {r["request_key"]: r["output_text"] for r in base_rows + learn_rows + off_rows}

    emulator_batches = len(emulator.batches())
    serve = _file(tmp_path / "serve2.jsonl", [*SERVE, "Where can I find my invoices?"], "t")
    before = set(batchd.run_dirs())
    third = _submit(batchd, serve, "--semantic-cache")
    assert third.returncode == 0, third.stderr
    run_id, rows = _rows(batchd, before)
    hit, near_miss, invoices = rows
    assert hit["cache"] == "semantic" and hit["status"] == "succeeded"
    assert hit["output_text"] == answer_of[hit["cache_source_key"]]  # the cached answer
    assert "password" in hit["output_text"] and hit["output_text"] != "echo: " + SERVE[0]
    assert 0.9 < hit["similarity"] < 1.0
    assert (hit["cost_usd"], hit["input_tokens"], hit["output_tokens"]) == (0.0, 0, 0)
    assert hit["baseline_cost_usd"] > 0 and hit["tier"] is None
    assert near_miss["cache"] == "none" and near_miss["cache_source_key"] is None
    assert near_miss["output_text"] == "echo: What is the refund policy for order 1243?"
    assert invoices["cache"] in ("semantic", "none")
    assert len(emulator.batches()) == emulator_batches + 1  # the near-miss was sent

    report = batchd.run("report", run_id, "--json")
    assert report.returncode == 0, report.stderr
    semantic = json.loads(report.stdout)["semantic_cache"]
    hits = sum(r["cache"] == "semantic" for r in rows)
    assert semantic["hits"] == hits >= 1 and semantic["saved_usd"] > 0
    text = " ".join(batchd.run("report", run_id, COLUMNS="200").stdout.split())
    assert f"semantic cache: {hits} rows answered by a similar request" in text, text
    assert "none verified in this run" in text, text
