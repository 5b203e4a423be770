"""Hostile files through the real CLI: `batchd submit` against both emulators ends, within a
time bound, with one results row per input line (in input order) and a reason for each bad
one, and no traceback; a hostile file over 16 MB goes through `batchd plan` (the parse pool)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.intake.test_hostile_lines import CASES, TOOL_TRANSCRIPT
from tests.support.helpers import Batchd
from tests.support.hostile import (
    CLAUDE_MODEL,
    FIELD_PATHS,
    HUGE_NUMBERS,
    ODD_STRINGS,
    OPENAI_MODEL,
    base_line,
    encode,
    put,
)

pytestmark = pytest.mark.timeout(300)
VALUES: list[Any] = [
    None,
    True,
    [],
    {},
    [[[[]]]],
    {"a": {"b": [1, "x"]}},
    *HUGE_NUMBERS[::3],
    *ODD_STRINGS[::2],
]


def every_field_hostile() -> list[bytes]:
    """Each format, each field, each hostile value: one line apiece (deterministic)."""
    lines = []
    n = 0
    for fmt in sorted(FIELD_PATHS):
        for model in (OPENAI_MODEL, CLAUDE_MODEL):
            for path in FIELD_PATHS[fmt]:
                for value in VALUES:
                    n += 1
                    lines.append(encode(put(base_line(fmt, model, n), path, value)))
    return lines


def _check_results(rows: list[dict[str, Any]], n_lines: int) -> None:
    assert [r["line_no"] for r in rows] == list(range(1, n_lines + 1))
    for r in rows:
        if r["status"] != "succeeded":
            assert r["error_type"] and r["error_message"], r


def test_submit_hostile_file_ends_with_one_row_per_line(
    batchd: Batchd, emulator: OpenAIBatchEmulator, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    good = [
        json.dumps({"id": "gpt", "model": OPENAI_MODEL, "prompt": "hello"}).encode(),
        json.dumps({"id": "agent", "model": CLAUDE_MODEL, "messages": TOOL_TRANSCRIPT}).encode(),
    ]
    hostile = [raw for raw, *_ in CASES if raw.strip()]  # blank lines: placed below
    lines = good[:1] + hostile + [b"", b"  "] + good[1:] + every_field_hostile()
    src = tmp_path / "hostile.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    # As Anthropic documents it: a bad params object is that request's error, not the batch's
    # (Anthropic-format lines are sent as they are, so some reach Claude and fail there).
    claude.params_validation = "async"
    proc = batchd.submit(src, timeout=240)
    assert proc.returncode == 3, proc.stderr  # finished, with failed and invalid lines
    assert "Traceback" not in proc.stderr + proc.stdout
    rows = batchd.results()
    _check_results(rows, len(lines))
    by_id = {r["custom_id"]: r for r in rows}
    assert by_id["gpt"]["status"] == "succeeded"
    assert by_id["agent"]["status"] == "succeeded" and by_id["agent"]["backend"] == "anthropic"
    expected = {r[1] for r in CASES}
    got = {r["error_type"] for r in rows}
    assert expected <= got, expected - got
    assert "internal_error" not in got
    # The translated tool transcript reached Claude as tool_use / tool_result blocks.
    agent = next(
        s
        for s in claude.requests_seen()
        if s["params"]["messages"][0]["content"] == "weather in Paris?"
    )
    assert agent["params"]["messages"][1]["content"][0]["type"] == "tool_use"
    assert agent["params"]["messages"][2]["content"][0]["type"] == "tool_result"


def test_plan_over_16mb_hostile_file_through_the_pool(batchd: Batchd, tmp_path: Path) -> None:
    """Over 16 MB, ingest parses in worker processes: hostile lines there too."""
    hostile = [raw for raw, *_ in CASES]
    pad = "p" * 2000
    lines: list[bytes] = []
    i = 0
    while sum(len(x) + 1 for x in lines) < 17 * 1024 * 1024:
        i += 1
        if i % 50 == 0:
            lines.append(hostile[(i // 50) % len(hostile)])
        else:
            lines.append(
                json.dumps({"id": f"r{i}", "model": OPENAI_MODEL, "prompt": f"{i}{pad}"}).encode()
            )
    src = tmp_path / "big.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    proc = batchd.run("plan", str(src), "--json", timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    stats = json.loads(proc.stdout)["stats"]
    n_hostile = len(lines) // 50
    assert stats["lines"] == len(lines)
    assert stats["valid"] == len(lines) - n_hostile
    assert stats["invalid"] == n_hostile and "internal_error" not in stats["invalid_by_type"]
    assert stats["invalid_by_type"]["nesting_too_deep"] > 0


def test_submit_single_target_alias_runs_like_its_target(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    """It used to plan every line unmeetable and die with KeyError: 0 at submit."""
    (tmp_path / "batchd.toml").write_text(f'[models.small]\ntargets = ["openai:{OPENAI_MODEL}"]\n')
    src = tmp_path / "alias.jsonl"
    src.write_text(
        "".join(
            json.dumps({"id": f"a{i}", "model": "small", "prompt": f"p{i}"}) + "\n"
            for i in range(3)
        )
    )
    plan = batchd.run("plan", str(src), "--json")
    assert plan.returncode == 0, plan.stderr
    doc = json.loads(plan.stdout)
    assert doc["unmeetable"] == {} and doc["targets"][f"openai:{OPENAI_MODEL}"]["requests"] == 3
    proc = batchd.submit(src)
    assert proc.returncode == 0, proc.stderr
    rows = batchd.results()
    assert [(r["status"], r["model_requested"], r["model_used"]) for r in rows] == [
        ("succeeded", "small", OPENAI_MODEL)
    ] * 3
    assert [r["output_text"] for r in rows] == [f"echo: p{i}" for i in range(3)]
