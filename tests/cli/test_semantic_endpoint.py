"""`batchd submit` with cache.semantic.embedding = "openai:<model>", end to end: the OpenAI
emulator answers both the Batch API and the embeddings lines (real SDK). Plumbing, not
meaning (the emulator's vectors are meaning-free): only the texts the lookup needs are
embedded, each once, as a Batch API job of the run (never a synchronous call), a later run
does not embed them again, the cost is a row of costs.parquet and in the manifest's cost
(`batchd report` shows it), and a missing key stops the run before anything is sent or
bought."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchd.config.pricing import PER_MTOK, load_price_book
from batchd.config.settings import Settings, load_settings
from batchd.run.services import open_services
from tests.cache.semantic_support import seed_endpoint_vectors
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import Batchd, chat, write_jsonl

BASE = ["How do I reset my password?", "Where can I download my invoices?"]
LEARN = ["I forgot my password, how do I reset it?", "How can I get copies of my invoices?"]
NEW = "Can I pause my subscription for a month?"
MODEL = "text-embedding-3-small"
ENV = {
    "BATCHD_CACHE_SEMANTIC_EMBEDDING": f"openai:{MODEL}",
    "BATCHD_CACHE_SEMANTIC_VERIFY_SHARE": "0",
}
EMBEDDINGS_URL = "/v1/embeddings"


def _file(path: Path, texts: list[str], prefix: str) -> Path:
    return write_jsonl(path, [chat(f"{prefix}{i}", t, max_tokens=64) for i, t in enumerate(texts)])


def _submit(batchd: Batchd, path: Path, **env: str) -> Any:
    args = ("submit", str(path), "--output", str(batchd.out), "--semantic-cache")
    return batchd.run(*args, timeout=300, **{**ENV, **env})


def _synchronous(emu: OpenAIBatchEmulator) -> list[Any]:
    return [c for c in emu.sync_calls if c.get("url") == EMBEDDINGS_URL]


def _batched(emu: OpenAIBatchEmulator, since: int = 0) -> list[str]:
    """The texts of the /v1/embeddings lines of every batch created after the first `since`."""
    lines = emu.requests_seen()[since:]
    return [line["body"]["input"] for line in lines if line.get("url") == EMBEDDINGS_URL]


def _report(batchd: Batchd, before: set[Path]) -> tuple[Path, dict, str]:
    (run_dir,) = set(batchd.run_dirs()) - before
    doc = json.loads(batchd.run("report", run_dir.name, "--json").stdout)
    text = " ".join(batchd.run("report", run_dir.name, COLUMNS="200").stdout.split())
    return run_dir, doc, text


def test_embeddings_are_a_batch_of_the_run_bought_once_and_accounted(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    first = _submit(batchd, _file(tmp_path / "base.jsonl", BASE, "b"))
    assert first.returncode == 0, first.stderr
    assert _batched(emulator) == []  # no cached entries yet: nothing to compare with
    run_dir, doc, _ = _report(batchd, set())
    assert doc["semantic_cache_embedding"] is None
    assert doc["semantic_cache_embedding_batch"] is None
    assert all(r["model"] != MODEL for r in batchd.costs(run_dir))

    before, seen = set(batchd.run_dirs()), len(emulator.requests_seen())
    n_batches = len(emulator.batches())
    second = _submit(batchd, _file(tmp_path / "learn.jsonl", LEARN, "l"))
    assert second.returncode == 0, second.stderr
    sent = _batched(emulator, seen)
    # the entries (stored without vectors) and the lines, each once, in one batch of its own
    assert sorted(sent) == sorted(BASE + LEARN)
    new_batches = emulator.batches()[n_batches:]
    assert [b["endpoint"] for b in new_batches].count(EMBEDDINGS_URL) == 1
    assert new_batches[0]["endpoint"] == EMBEDDINGS_URL  # before the run's own requests
    assert _synchronous(emulator) == []  # never a synchronous purchase

    run_dir, doc, text = _report(batchd, before)
    costs = batchd.costs(run_dir)
    (row,) = [r for r in costs if r["model"] == MODEL]
    assert row["backend"] == "openai" and row["requests"] == 4 and row["succeeded"] == 4
    assert row["input_tokens"] > 0 and row["resolved"] == 0
    price = load_price_book(Settings()).require(MODEL)
    list_usd = row["input_tokens"] * price.input_per_mtok / PER_MTOK
    assert row["cost_usd"] == pytest.approx(list_usd / 2)  # the batch price
    assert row["baseline_cost_usd"] == pytest.approx(list_usd)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in costs))
    rows = batchd.results(run_dir)
    assert manifest["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows) + row["cost_usd"])
    batch = doc["semantic_cache_embedding_batch"]
    assert batch["embedded_texts"] == 4 and batch["failed_texts"] == 0
    assert batch["embedding_cost_usd"] == pytest.approx(row["cost_usd"])
    assert doc["semantic_cache_embedding"] is None  # nothing bought synchronously
    assert "semantic cache embeddings: 4 texts embedded as a batch" in text, text
    assert len(rows) == len(LEARN)  # the embeddings are no result rows

    before, seen = set(batchd.run_dirs()), len(emulator.requests_seen())
    third = _submit(batchd, _file(tmp_path / "again.jsonl", [*LEARN, NEW], "a"))
    assert third.returncode == 0, third.stderr
    rows = batchd.results(next(iter(set(batchd.run_dirs()) - before)))
    assert [r["cache"] for r in rows[:2]] == ["exact", "exact"]  # exact hits come first
    assert _batched(emulator, seen) == [NEW]  # entries keep their vectors

    # Another scope (max_tokens differs) with the same texts: new entries, stored without
    # vectors, and new lines to look up; every vector is in the result cache, by its key.
    def other(name: str, texts: list[str]) -> Path:
        return write_jsonl(
            tmp_path / name, [chat(f"o{i}", t, max_tokens=32) for i, t in enumerate(texts)]
        )

    assert _submit(batchd, other("o1.jsonl", BASE)).returncode == 0
    before, seen = set(batchd.run_dirs()), len(emulator.requests_seen())
    fourth = _submit(batchd, other("o2.jsonl", LEARN))
    assert fourth.returncode == 0, fourth.stderr
    assert _batched(emulator, seen) == []  # nothing bought again
    run_dir, doc, _ = _report(batchd, before)
    assert doc["semantic_cache_embedding_batch"] is None
    assert all(r["model"] != MODEL for r in batchd.costs(run_dir))
    assert _synchronous(emulator) == []


def test_plan_counts_the_texts_to_embed_and_buys_nothing(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    assert _submit(batchd, _file(tmp_path / "base.jsonl", BASE, "b")).returncode == 0
    seen, files = len(emulator.requests_seen()), len(emulator.files())
    plan = batchd.run(
        "plan",
        str(_file(tmp_path / "learn.jsonl", LEARN, "l")),
        "--json",
        **ENV,
        BATCHD_CACHE_SEMANTIC_ENABLED="true",
    )
    assert plan.returncode == 0, plan.stderr
    doc = json.loads(plan.stdout)
    assert doc["stats"]["semantic_embedding"] == {"texts_to_embed": 4}
    assert len(emulator.requests_seen()) == seen and len(emulator.files()) == files
    assert _synchronous(emulator) == []


def test_a_text_whose_embedding_failed_is_sent_to_the_model_not_bought_again(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    assert _submit(batchd, _file(tmp_path / "base.jsonl", BASE, "b")).returncode == 0
    before, seen = set(batchd.run_dirs()), len(emulator.requests_seen())
    failing = "How do I reset my password? [[error:400]]"  # the emulator answers it HTTP 400
    run = _submit(batchd, _file(tmp_path / "learn.jsonl", [LEARN[0], failing], "l"))
    assert run.returncode == 3, run.stderr  # finished with failures: l1's own 400
    assert sorted(_batched(emulator, seen)) == sorted([*BASE, LEARN[0], failing])
    assert _synchronous(emulator) == []  # the failure is not bought synchronously
    run_dir, doc, text = _report(batchd, before)
    rows = {r["custom_id"]: r for r in batchd.results(run_dir)}
    assert set(rows) == {"l0", "l1"}  # every line one row
    assert rows["l1"]["cache"] != "semantic"  # not matched: sent to the model
    assert rows["l1"]["status"] == "failed" and "400" in (rows["l1"]["error_message"] or "")
    batch = doc["semantic_cache_embedding_batch"]
    assert batch["embedded_texts"] == 3 and batch["failed_texts"] == 1
    assert "1 failed (their lines were not matched)" in text, text
    (row,) = [r for r in batchd.costs(run_dir) if r["model"] == MODEL]
    assert row["requests"] == 4 and row["succeeded"] == 3 and row["not_succeeded"] == 1


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


# Verification through the batch: lookup vectors that carry meaning (real MiniLM embeddings,
# zero-padded to the endpoint model's size: cosines unchanged) are put in the result cache
# under each text's key, as an earlier embedding batch would have left them; the emulator's
# own (meaning-free) vectors answer whatever the run buys.
PAIRS = [  # (cached request, rewording): each a hit, all sampled for verification
    ("How do I reset my password?", "I forgot my password, how do I reset it?"),
    ("Where can I download my invoices?", "How can I get copies of my invoices?"),
    ("How do I reset my password?", "how do I reset my password"),  # same answer, normalized
]
VERIFY_ENV = {
    "BATCHD_CACHE_SEMANTIC_VERIFY_SHARE": "1",
    "BATCHD_CACHE_SEMANTIC_PRIOR_THRESHOLD": "0.8",
}


def _seed_vectors(batchd: Batchd, texts: list[str]) -> None:
    svc = open_services(load_settings(environ={**batchd.env, **ENV}))
    try:
        seed_endpoint_vectors(svc.cache, MODEL, texts)
    finally:
        svc.close()


def test_answers_compared_at_finalize_are_a_batch_of_the_run_and_verdicts_come_out(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    cached = list(dict.fromkeys(a for a, _ in PAIRS))
    first = _submit(batchd, _file(tmp_path / "base.jsonl", cached, "b"), **VERIFY_ENV)
    assert first.returncode == 0, first.stderr
    rewordings = [b for _, b in PAIRS]
    answer = {t: f"echo: {t}" for t in cached + rewordings}
    # the lookups' vectors, and those of the first pair's answers: already embedded
    _seed_vectors(batchd, cached + rewordings + [answer[PAIRS[0][0]], answer[PAIRS[0][1]]])

    before, seen = set(batchd.run_dirs()), len(emulator.requests_seen())
    n_batches = len(emulator.batches())
    run = _submit(batchd, _file(tmp_path / "learn.jsonl", [*rewordings, NEW], "l"), **VERIFY_ENV)
    assert run.returncode == 0, run.stderr
    new_batches = emulator.batches()[n_batches:]
    endpoints = [b["endpoint"] for b in new_batches]
    # the lookup of NEW (its vector not cached) first, the run's lines, then the answers
    assert endpoints[0] == endpoints[-1] == EMBEDDINGS_URL and endpoints.count(EMBEDDINGS_URL) == 2
    # only the second pair's answers: the first's vectors were cached, the third's answers
    # are the same text (compared without embeddings)
    assert sorted(_batched(emulator, seen)) == sorted(
        [NEW, answer[PAIRS[1][0]], answer[PAIRS[1][1]]]
    )
    assert _synchronous(emulator) == []  # never a synchronous purchase

    run_dir, doc, text = _report(batchd, before)
    rows = {r["custom_id"]: r for r in batchd.results(run_dir)}
    assert [rows[f"l{i}"]["semantic_verified"] for i in range(3)] == [
        "agreed",
        "disagreed",
        "agreed",
    ]
    assert rows["l3"]["semantic_verified"] is None  # NEW: not a hit
    semantic = doc["semantic_cache"]
    assert semantic["verified"] == 3 and semantic["false_hits"] == 1 and semantic["unverified"] == 0
    assert "3 verified by the model, 1 false" in text, text
    (row,) = [r for r in batchd.costs(run_dir) if r["model"] == MODEL]
    assert row["requests"] == 3 and row["succeeded"] == 3  # NEW's vector and two answers'
    batch = doc["semantic_cache_embedding_batch"]
    assert batch["embedded_texts"] == 3 and batch["answer_texts"] == 2
    assert batch["embedding_cost_usd"] == pytest.approx(row["cost_usd"])
    assert doc["semantic_cache_embedding"] is None  # nothing bought synchronously
    assert "2 of the texts were answers compared at finalize" in text, text
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in batchd.costs(run_dir)))
