"""Quota-aware submission: the vendor's enqueued-token cap per model (run.quota).

The OpenAI emulator enforces a cap per model the way OpenAI documents it: a batch whose
prompt tokens, with those of the batches in progress, pass the cap ends `failed` at
validation with `token_limit_exceeded`. batchd's own estimate of a chunk's tokens (its bytes
/ 4) is above the emulator's count (a quarter token per character of text), so a cap that
batchd keeps is kept by the vendor too.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchd.backends.base import stated_limit_tokens
from batchd.config.settings import Settings, load_settings
from batchd.errors import BatchdError
from batchd.planning.observations import Observations, quota_key
from batchd.run.quota import configured_limit, limit_tokens
from batchd.state.sqlite_store import SqliteStore
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import Batchd, chat, write_jsonl

MODEL = "gpt-5.4-nano"
TEXT = "quota " * 33  # ~200 characters: 54 emulator tokens, ~83 batchd tokens per line
FOUR_PER_CHUNK = {"BATCHD_OPENAI_MAX_LINES_PER_CHUNK": "4"}


def _lines(prefix: str, n: int) -> list[dict[str, Any]]:
    return [chat(f"{prefix}{i}", f"{TEXT}{prefix}{i}") for i in range(n)]


def _failed_for_cap(emulator: OpenAIBatchEmulator) -> list[dict[str, Any]]:
    return [
        b
        for b in emulator.batches()
        if b["status"] == "failed" and b["errors"]["data"][0]["code"] == "token_limit_exceeded"
    ]


def _chunks(batchd: Batchd) -> list[Any]:
    store = SqliteStore(batchd.home / "state.db")
    try:
        run = store.list_runs(1)[0]
        return store.chunks(run.run_id)
    finally:
        store.close()


def _observations(batchd: Batchd) -> dict[str, tuple[float, float]]:
    store = SqliteStore(batchd.home / "state.db")
    try:
        return store.observations()
    finally:
        store.close()


def test_the_cap_keeps_chunks_pending_and_every_line_succeeds(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.enqueued_token_limits[MODEL] = 400  # one chunk of 4 lines at a time (216 each)
    src = write_jsonl(tmp_path / "q.jsonl", _lines("q", 12))
    done = batchd.submit(src, BATCHD_OPENAI_ENQUEUED_TOKEN_LIMIT="400", **FOUR_PER_CHUNK)
    assert done.returncode == 0, done.stderr
    rows = batchd.results()
    assert Counter(r["status"] for r in rows) == {"succeeded": 12}
    batches = emulator.batches()
    assert len(batches) == 3 and {b["status"] for b in batches} == {"completed"}
    # the chunks waited their turn: never two batches of the model enqueued at once
    assert emulator.peak_enqueued_tokens[MODEL] == 216


def test_a_batch_failed_for_the_cap_is_resubmitted_and_the_cap_learned(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.enqueued_token_limits[MODEL] = 400  # batchd is not told: it learns it
    src = write_jsonl(tmp_path / "q.jsonl", _lines("q", 12))
    done = batchd.submit(src, **FOUR_PER_CHUNK)
    assert done.returncode == 0, done.stderr
    assert Counter(r["status"] for r in batchd.results()) == {"succeeded": 12}
    failed = _failed_for_cap(emulator)
    assert failed, "the emulator never refused a batch: the test proves nothing"
    assert "Limit: 400 enqueued tokens" in failed[0]["errors"]["data"][0]["message"]
    assert emulator.peak_enqueued_tokens[MODEL] <= 400
    chunks = _chunks(batchd)
    requeued = [c for c in chunks if c.quota_failures]
    assert requeued and all(c.attempt == 1 for c in chunks)  # no attempt used
    assert Observations(_observations(batchd)).enqueued_token_limit("openai", MODEL) == 400

    # a later run keeps under the learned cap from the start: nothing more is refused
    refused = len(failed)
    src2 = write_jsonl(tmp_path / "q2.jsonl", _lines("r", 12))
    done = batchd.run("submit", str(src2), "--output", str(tmp_path / "out2"), **FOUR_PER_CHUNK)
    assert done.returncode == 0, done.stderr
    assert len(_failed_for_cap(emulator)) == refused
    rows = batchd.results(next((tmp_path / "out2").iterdir()))
    assert Counter(r["status"] for r in rows) == {"succeeded": 12}


def test_a_chunk_alone_over_the_cap_is_split(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.enqueued_token_limits[MODEL] = 200  # two lines (108 tokens) at a time
    src = write_jsonl(tmp_path / "q.jsonl", _lines("s", 8))
    done = batchd.submit(src, BATCHD_OPENAI_ENQUEUED_TOKEN_LIMIT="200", **FOUR_PER_CHUNK)
    assert done.returncode == 0, done.stderr
    rows = batchd.results()
    assert Counter(r["status"] for r in rows) == {"succeeded": 8}
    assert all(r["output_text"] == f"echo: {TEXT.strip()} {r['custom_id']}" for r in rows)
    batches = emulator.batches()
    assert {b["status"] for b in batches} == {"completed"}
    assert [b["request_counts"]["total"] for b in batches] == [2, 2, 2, 2]
    sent = Counter(line["custom_id"] for line in emulator.requests_seen())
    assert set(sent.values()) == {1} and len(sent) == 8  # each line sent once
    split = [c for c in _chunks(batchd) if c.counts.get("moved")]
    assert len(split) == 2  # the two planned chunks, each split in two


# --- the cap's settings and the vendor's words ------------------------------------------------


def test_cap_settings_per_model_and_for_every_model(tmp_path: Path) -> None:
    toml = tmp_path / "batchd.toml"
    toml.write_text(
        "[openai]\nenqueued_token_limit = 90000\n"
        '[openai.enqueued_token_limits]\n"gpt-5.4-nano" = 2000000\n"o3*" = 0\n'
    )
    s = load_settings(environ={}, config_path=toml)
    assert configured_limit(s, "openai", "gpt-5.4-nano") == 2_000_000
    assert configured_limit(s, "openai", "o3-mini") is None  # 0: no cap for these
    assert configured_limit(s, "openai", "gpt-4.1") == 90_000
    assert configured_limit(s, "anthropic", "claude-haiku-4-5") is None
    learned = Observations({quota_key("anthropic", "claude-haiku-4-5"): (5000.0, 1.0)})
    assert limit_tokens(s, learned, "anthropic", "claude-haiku-4-5") == 5000
    assert limit_tokens(s, learned, "openai", "gpt-4.1") == 90_000  # settings win
    env = {"BATCHD_OPENAI_ENQUEUED_TOKEN_LIMIT": "12345"}
    assert load_settings(environ=env).openai.enqueued_token_limit == 12345
    assert Settings().openai.enqueued_token_limit == 0  # no cap unless told or learned


@pytest.mark.parametrize("value", ["-1", "1e13", "lots"])
def test_a_bad_cap_is_refused_with_its_range(value: str) -> None:
    with pytest.raises(BatchdError) as err:
        load_settings(environ={"BATCHD_OPENAI_ENQUEUED_TOKEN_LIMIT": value})
    assert "openai.enqueued_token_limit" in err.value.message


def test_per_model_caps_come_from_the_file_only() -> None:
    with pytest.raises(BatchdError) as err:
        load_settings(environ={"BATCHD_OPENAI_ENQUEUED_TOKEN_LIMITS": "5"})
    assert "[openai.enqueued_token_limits]" in err.value.hint


def test_the_stated_cap_is_read_from_the_vendors_words() -> None:
    openai = (
        "Enqueued token limit reached for gpt-4o-mini in organization org-x. "
        "Limit: 2,000,000 enqueued tokens. Please try again once some in_progress batches "
        "have been completed."
    )
    azure = (
        "The number of enqueued tokens has surpassed the configured limit of 30K for the "
        "deployment 'gpt-4.1-batch'. Please either increase the limit or try again."
    )
    assert stated_limit_tokens(openai) == 2_000_000
    assert stated_limit_tokens(azure) == 30_000
    assert stated_limit_tokens("Enqueued token limit reached.") is None
    assert stated_limit_tokens("Limit: 0 enqueued tokens") is None


@given(st.text(max_size=300))
def test_reading_the_cap_never_fails_on_hostile_words(message: str) -> None:
    got = stated_limit_tokens(message)
    assert got is None or 1 <= got <= 10**15
    assert stated_limit_tokens(f"{message} Limit: 1,234 enqueued tokens") in (got, 1234)
