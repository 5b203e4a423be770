"""Plans that know the deadline guard: a line due before the batch turnaround percentile is
planned straight to flex / realtime at their price; only a line no venue can finish is
`deadline_unmeetable`; `plan` shows the worst case if the guard fires."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchd.config.pricing import Usage, load_price_book
from batchd.config.settings import Settings
from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import Batchd, chat, write_jsonl

NOW = "2026-11-23T12:00:00Z"
PRICES = load_price_book(Settings())


def _plan(batchd: Batchd, src: Path, *args: str, **env: str) -> dict[str, Any]:
    proc = batchd.run("plan", str(src), "--json", "--now", NOW, *args, **env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def _claude(cid: str, text: str) -> dict[str, Any]:
    params = {
        "model": "claude-haiku-4-5",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": text}],
    }
    return {"custom_id": cid, "params": params}


def test_ten_minute_deadline_is_planned_to_flex_and_realtime(batchd: Batchd) -> None:
    lines = [chat(f"o{i}", f"quick {i}", max_tokens=20) for i in range(3)]
    lines += [_claude(f"c{i}", f"quick {i}") for i in range(2)]
    src = write_jsonl(batchd.tmp / "j.jsonl", lines)
    relaxed = _plan(batchd, src, "--within", "12h")["targets"]
    tight = _plan(batchd, src, "--within", "10m")  # OpenAI's prior p90 is 35 min
    nano, haiku = (
        tight["targets"]["openai:gpt-5.4-nano"],
        tight["targets"]["anthropic:claude-haiku-4-5"],
    )
    assert not tight["unmeetable"]
    assert nano["sync_requests"] == 3 and haiku["sync_requests"] == 0  # Claude's p90 is < 5 min
    assert relaxed["openai:gpt-5.4-nano"]["sync_requests"] == 0
    # Flex is billed at the batch price: the same estimate as a batch.
    assert nano["cost_usd"] == pytest.approx(relaxed["openai:gpt-5.4-nano"]["cost_usd"])
    # The worst case if the guard fires: the standard tier's list price (twice the batch).
    assert nano["guard_worst_usd"] == pytest.approx(2 * nano["cost_usd"])
    assert haiku["guard_worst_usd"] == pytest.approx(2 * haiku["cost_usd"])
    assert tight["totals"]["guard_worst_usd"] == pytest.approx(
        nano["guard_worst_usd"] + haiku["guard_worst_usd"]
    )
    # Claude due in 3 minutes: before its batch p90, so the Messages API at the list price.
    claude_3m = _plan(batchd, src, "--within", "3m")["targets"]["anthropic:claude-haiku-4-5"]
    assert claude_3m["sync_requests"] == 2
    assert claude_3m["cost_usd"] == pytest.approx(2 * haiku["cost_usd"])
    table = batchd.run("plan", str(src), "--now", NOW, "--within", "10m")
    assert "3 requests are due before a batch would finish" in table.stdout
    assert "worst case if the deadline guard fires" in table.stdout


def test_submit_due_in_ten_minutes_is_sent_synchronously(
    batchd: Batchd, emulator: OpenAIBatchEmulator, claude: AnthropicBatchEmulator
) -> None:
    lines = [chat(f"o{i}", f"soon {i}", max_tokens=20) for i in range(3)]
    lines.append(chat("dup", "soon 0", max_tokens=20))  # an in-run duplicate of o0
    lines += [_claude(f"c{i}", f"soon {i}") for i in range(2)]
    src = write_jsonl(batchd.tmp / "j.jsonl", lines)
    proc = batchd.submit(src, "--within", "3m")
    assert proc.returncode == 0, proc.stderr
    rows = {r["custom_id"]: r for r in batchd.results()}
    assert {r["status"] for r in rows.values()} == {"succeeded"}
    assert not emulator.batches() and not claude.batches()  # no batch could finish in time
    assert {rows[f"o{i}"]["tier"] for i in range(3)} == {"flex"}
    assert rows["dup"]["tier"] == "flex" and rows["dup"]["cost_usd"] == 0  # its leader's tier
    assert {rows[f"c{i}"]["tier"] for i in range(2)} == {"realtime"}
    for cid, r in rows.items():
        if cid == "dup":
            continue
        model = "claude-haiku-4-5" if cid.startswith("c") else "gpt-5.4-nano"
        usage = Usage(r["input_tokens"], 0, 0, r["output_tokens"])
        want = PRICES.cost_usd(PRICES.require(model), usage, batch=r["tier"] == "flex")
        assert r["cost_usd"] == pytest.approx(want) and want > 0
    assert len(emulator.sync_calls) == 3 and len(claude.sync_calls) == 2


def test_only_a_line_no_venue_can_finish_is_unmeetable(batchd: Batchd) -> None:
    src = write_jsonl(batchd.tmp / "j.jsonl", [chat("a", "late", max_tokens=5)])
    assert not _plan(batchd, src, "--within", "10m")["unmeetable"]
    off = _plan(batchd, src, "--within", "10m", "--fallback", "none")
    assert off["unmeetable"] == {"gpt-5.4-nano": 1}
    assert _plan(batchd, src, "--within", "10m", BATCHD_FALLBACK="none") == off
    assert _plan(batchd, src, "--within", "30s")["unmeetable"] == {"gpt-5.4-nano": 1}
    proc = batchd.submit(src, "--within", "10m", "--fallback", "none")
    assert proc.returncode == 3
    (row,) = batchd.results()
    assert (row["status"], row["error_type"], row["tier"]) == (
        "failed",
        "deadline_unmeetable",
        None,
    )
    assert "p90, prior" in row["error_message"] and "--fallback realtime" in row["error_message"]
    assert "failed deadline_unmeetable: 1 lines no venue can finish" in proc.stdout


_TEXTS = st.sampled_from(
    ["fine", "[[error:400]] nope", "[[finish:content_filter]] hmm", "one two three four", "é ü 😀"]
)


@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(texts=st.lists(_TEXTS, min_size=1, max_size=8), dup=st.booleans())
def test_every_line_sent_synchronously_ends_as_one_row(
    tmp_path_factory: pytest.TempPathFactory,
    emulator: OpenAIBatchEmulator,
    claude: AnthropicBatchEmulator,
    texts: list[str],
    dup: bool,
) -> None:
    batchd = Batchd(tmp_path_factory.mktemp("sync"), emulator, claude)
    lines: list[Any] = [chat(f"h{i}", t, max_tokens=3) for i, t in enumerate(texts)]
    if dup:
        lines.append(chat("again", texts[0], max_tokens=3))
    lines.append(b"{not json")
    src = write_jsonl(batchd.tmp / "h.jsonl", lines)
    proc = batchd.submit(src, "--within", "3m", "--no-cache")
    assert proc.returncode in (0, 3), proc.stderr
    rows = batchd.results()
    assert [r["line_no"] for r in rows] == list(range(1, len(lines) + 1))
    for r in rows[:-1]:
        text = texts[int(r["custom_id"][1:])] if r["custom_id"] != "again" else texts[0]
        want = "failed" if "[[error:400]]" in text else "succeeded"
        assert r["status"] == want, r
        assert r["tier"] == "flex" and (r["error_message"] is None) == (want == "succeeded")
        if "[[finish:content_filter]]" in text:
            assert r["finish_reason"] == "content_filter"
    assert rows[-1]["status"] == "invalid" and rows[-1]["tier"] is None
