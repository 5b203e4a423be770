"""Cascades (issue 18 point 5) end to end on the OpenAI emulator: an alias whose cheap target
(gpt-5.4-nano) answers badly for some lines sends those lines on to its next target
(gpt-5.4-mini) as a follow-up batch of the run; the row keeps the final answer, lists the
attempts in `escalations`, and its cost is the total. Resume never pays an escalation twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from batchd.config.settings import load_settings
from batchd.errors import BatchdError
from batchd.outcome import Outcome
from batchd.planning.escalation import met_reason
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import Batchd, chat, write_jsonl

CASCADE = """
[models.cheap]
targets = ["openai:gpt-5.4-nano", "openai:gpt-5.4-mini"]
escalate_on = {on}
"""
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "minLength": 2}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}


def _sent_by_model(emulator: OpenAIBatchEmulator) -> Counter[tuple[str, str]]:
    """(line, model) of every request the vendor got (each line's text starts with its id)."""
    return Counter(
        (r["body"]["messages"][-1]["content"].split()[0], r["body"]["model"])
        for r in emulator.requests_seen()
    )


def test_schema_invalid_answers_go_on_to_the_next_target(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    (tmp_path / "batchd.toml").write_text(CASCADE.format(on='["schema_invalid"]'))
    lines = [
        chat(f"p{i}", f"p{i} person" + (" [[schema:invalid@gpt-5.4-nano]]" if i < 2 else ""))
        for i in range(4)
    ]
    lines.append(chat("p0dup", lines[0]["body"]["messages"][0]["content"]))  # in-run duplicate
    for line in lines:
        line["body"].update(model="cheap", response_format=SCHEMA)
    proc = batchd.submit(write_jsonl(tmp_path / "a.jsonl", lines))
    assert proc.returncode == 0, proc.stderr
    rows = {r["custom_id"]: r for r in batchd.results()}
    assert len(rows) == 5
    # The duplicate shares p0's final answer and paid nothing: no attempts of its own.
    dup = rows.pop("p0dup")
    assert (dup["model_used"], dup["cache"], dup["cost_usd"]) == ("gpt-5.4-mini", "in_run", 0)
    assert dup["escalations"] is None
    sent = _sent_by_model(emulator)
    assert sent == Counter(
        {(f"p{i}", "gpt-5.4-nano"): 1 for i in range(4)}
        | {("p0", "gpt-5.4-mini"): 1, ("p1", "gpt-5.4-mini"): 1}
    )
    for cid in ("p0", "p1"):
        r = rows[cid]
        assert (r["model_used"], r["schema_valid"]) == ("gpt-5.4-mini", True)
        assert r["status"] == "succeeded"
        steps = json.loads(r["escalations"])
        assert [s["target"] for s in steps] == ["openai:gpt-5.4-nano", "openai:gpt-5.4-mini"]
        assert steps[0]["met"] == "schema_invalid" and steps[0]["escalated"] is True
        assert "met" not in steps[1] and steps[0]["cost_usd"] > 0 and steps[1]["cost_usd"] > 0
        assert r["cost_usd"] == pytest.approx(steps[0]["cost_usd"] + steps[1]["cost_usd"])
        json.loads(r["output_text"])  # the final, valid answer
    for cid in ("p2", "p3"):
        assert rows[cid]["model_used"] == "gpt-5.4-nano" and rows[cid]["escalations"] is None
        assert rows[cid]["schema_valid"] is True
    costs = {(c["backend"], c["model"]): c for c in batchd.costs()}
    nano, mini = costs[("openai", "gpt-5.4-nano")], costs[("openai", "gpt-5.4-mini")]
    # The nano escalated two lines onward: they are not resolved there, and cost it.
    assert (nano["requests"], nano["resolved"], nano["escalated"]) == (2, 2, 2)
    assert (mini["requests"], mini["resolved"], mini["escalated"]) == (3, 3, 0)
    assert sum(c["cost_usd"] for c in costs.values()) == pytest.approx(
        sum(r["cost_usd"] for r in rows.values())
    )
    assert mini["cost_usd"] == pytest.approx(
        sum(json.loads(rows[c]["escalations"])[1]["cost_usd"] for c in ("p0", "p1"))
    )
    nano_attempts = sum(json.loads(rows[c]["escalations"])[0]["cost_usd"] for c in ("p0", "p1"))
    assert nano["cost_usd"] == pytest.approx(
        rows["p2"]["cost_usd"] + rows["p3"]["cost_usd"] + nano_attempts
    )


def test_length_answers_go_on_to_the_next_target(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    (tmp_path / "batchd.toml").write_text(CASCADE.format(on='["length", "refusal"]'))
    lines = [
        chat("l0", "l0 a long answer [[finish:length@gpt-5.4-nano]]", model="cheap"),
        chat("l1", "l1 a short answer", model="cheap"),
    ]
    proc = batchd.submit(write_jsonl(tmp_path / "a.jsonl", lines))
    assert proc.returncode == 0, proc.stderr
    rows = {r["custom_id"]: r for r in batchd.results()}
    assert rows["l0"]["model_used"] == "gpt-5.4-mini"
    assert rows["l0"]["finish_reason"] == "stop"
    assert rows["l0"]["output_text"] == "echo: l0 a long answer [[finish:length@gpt-5.4-nano]]"
    steps = json.loads(rows["l0"]["escalations"])
    assert [(s["target"], s.get("met")) for s in steps] == [
        ("openai:gpt-5.4-nano", "length"),
        ("openai:gpt-5.4-mini", None),
    ]
    assert rows["l1"]["escalations"] is None and rows["l1"]["model_used"] == "gpt-5.4-nano"
    assert _sent_by_model(emulator)[("l0", "gpt-5.4-mini")] == 1
    assert ("l1", "gpt-5.4-mini") not in _sent_by_model(emulator)


def test_no_time_left_keeps_the_cheap_answer_and_says_so(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    # A guard margin nearly as long as the run (and no synchronous fallback): when the batch
    # ends, the margin before the deadline has begun, so no follow-up batch is started.
    (tmp_path / "batchd.toml").write_text(CASCADE.format(on='["length"]'))
    src = write_jsonl(
        tmp_path / "a.jsonl", [chat("l0", "long [[finish:length@gpt-5.4-nano]]", model="cheap")]
    )
    proc = batchd.submit(
        src, "--within", "26h", BATCHD_GUARD_MARGIN_S="93600", BATCHD_FALLBACK="none"
    )
    assert proc.returncode == 0, proc.stderr
    (row,) = batchd.results()
    assert row["model_used"] == "gpt-5.4-nano", (row["escalations"], row["tier"], proc.stderr)
    assert row["finish_reason"] == "length"
    (step,) = json.loads(row["escalations"])
    assert step["met"] == "length" and step["escalated"] is False and "no time" in step["note"]
    assert all(r["body"]["model"] == "gpt-5.4-nano" for r in emulator.requests_seen())
    (cost,) = batchd.costs()
    assert cost["resolved"] == 0  # kept although it met escalate_on: not resolved


def test_resume_never_pays_an_escalation_twice(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    (tmp_path / "batchd.toml").write_text(CASCADE.format(on='["length"]'))
    lines = [chat(f"k{i}", f"k{i} [[finish:length@gpt-5.4-nano]]", model="cheap") for i in range(3)]
    src = write_jsonl(tmp_path / "a.jsonl", lines)
    victim: dict[str, subprocess.Popen[str]] = {}
    created: list[dict[str, Any]] = []

    def kill_on_escalation(batch: dict[str, Any]) -> None:
        created.append(batch)
        if len(created) == 2:  # the follow-up batch: kill before batchd records it
            emulator.faults.after_create = None
            os.kill(victim["proc"].pid, signal.SIGKILL)

    emulator.faults.after_create = kill_on_escalation
    victim["proc"] = batchd.popen("submit", str(src), "--output", str(batchd.out))
    victim["proc"].wait(timeout=120)
    assert victim["proc"].returncode == -signal.SIGKILL
    again = batchd.submit(src)
    assert again.returncode == 0, again.stderr
    sent = _sent_by_model(emulator)
    assert sent == Counter(
        {(f"k{i}", m): 1 for i in range(3) for m in ("gpt-5.4-nano", "gpt-5.4-mini")}
    )
    assert len(emulator.batches()) == 2
    rows = batchd.results()
    assert {r["model_used"] for r in rows} == {"gpt-5.4-mini"}
    assert all(len(json.loads(r["escalations"])) == 2 for r in rows)


def test_escalate_on_values_are_checked(tmp_path: Path) -> None:
    (tmp_path / "batchd.toml").write_text(CASCADE.format(on='["length", "slow"]'))
    with pytest.raises(BatchdError, match=r"models\.cheap\.escalate_on: 'slow'"):
        load_settings(environ={}, config_path=tmp_path / "batchd.toml")


def test_what_each_escalate_on_reason_meets() -> None:
    every = ["length", "refusal", "schema_invalid", "failed"]
    ok = Outcome(status="succeeded", finish_reason="stop", schema_valid=True)
    assert met_reason(ok, every) is None
    assert met_reason(Outcome(status="succeeded", finish_reason="length"), every) == "length"
    assert met_reason(Outcome(status="succeeded", finish_reason="content_filter"), every) == (
        "refusal"
    )
    bad = Outcome(status="succeeded", finish_reason="stop", schema_valid=False)
    assert met_reason(bad, every) == "schema_invalid"
    assert met_reason(bad, ["length"]) is None  # only the alias's own reasons
    assert met_reason(Outcome(status="failed", error_type="server_error"), every) == "failed"
    assert met_reason(Outcome(status="expired"), every) is None  # never ran: not a bad answer
