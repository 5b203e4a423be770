"""The planner places an alias line only on targets that can serve it (capability table).

Placement with a vLLM target is read from `batchd plan --json` (nothing is sent); runs with
vendor targets go through the emulators and the real SDKs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.emulators.gemini_batch import GeminiBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import Batchd, chat, write_jsonl

NOW = "2026-11-23T12:00:00Z"
VLLM = """
[backends.vllm]
model = "model"
served_model_name = "tiny"
reference_model = "gpt-4.1-mini"
gpu_hourly_usd = 0.01
admit_margin_s = 0
throughput_tokens_per_s = 100000
[planner]
gpu_reserved = true
"""
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
CAN = "gpt-4.1-nano can"
WEB_IMAGE = [
    {"type": "text", "text": "what is it?"},
    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
]


def _plan(batchd: Batchd, lines: list[dict[str, Any]]) -> dict[str, Any]:
    src = write_jsonl(batchd.tmp / "jobs.jsonl", lines)
    proc = batchd.run("plan", str(src), "--json", "--now", NOW, "--within", "24h")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def _config(tmp: Path, body: str) -> None:
    (tmp / "model").mkdir(exist_ok=True)
    (tmp / "batchd.toml").write_text(body)


def _line(i: int, model: str = "mix", **body: Any) -> dict[str, Any]:
    return {"id": f"l{i}", "model": model, "prompt": f"question {i}", "max_tokens": 16, **body}


def test_mixed_alias_places_what_vllm_cannot_serve_on_the_vendor(batchd: Batchd) -> None:
    _config(batchd.tmp, VLLM + '[models.mix]\ntargets = ["vllm:tiny", "openai:gpt-4.1-mini"]\n')
    plain = [_line(i) for i in range(5)]
    plain.append(_line(5, tools=[TOOL], tool_choice="required"))  # guided decoding serves it
    plain.append(_line(6, response_format=SCHEMA))
    plan = _plan(batchd, plain)
    assert plan["targets"]["vllm:tiny"]["requests"] == 7  # the reserved GPU takes them all
    assert "openai:gpt-4.1-mini" not in plan["targets"]
    vendor_only = [
        _line(10, tools=[TOOL]),  # tool_choice auto: no tool parser for the vLLM model
        {"id": "img", "model": "mix", "messages": [{"role": "user", "content": WEB_IMAGE}]},
        _line(12, reasoning_effort="high", model="mix2"),  # only gpt-5.4-nano reasons
    ]
    (batchd.tmp / "batchd.toml").write_text(
        VLLM
        + '[models.mix]\ntargets = ["vllm:tiny", "openai:gpt-4.1-mini"]\n'
        + '[models.mix2]\ntargets = ["vllm:tiny", "openai:gpt-5.4-nano"]\n'
    )
    plan = _plan(batchd, plain + vendor_only)
    assert plan["targets"]["vllm:tiny"]["requests"] == 7
    assert plan["targets"]["openai:gpt-4.1-mini"]["requests"] == 2
    assert plan["targets"]["openai:gpt-5.4-nano"]["requests"] == 1
    assert plan["stats"]["invalid"] == 0


def test_line_no_target_of_the_alias_can_serve_is_invalid(batchd: Batchd) -> None:
    _config(
        batchd.tmp, VLLM + '[models.mix]\ntargets = ["vllm:tiny", "anthropic:claude-haiku-4-5"]\n'
    )
    lines = [
        _line(1, tools=[TOOL], logprobs=True),  # nobody can
        _line(2, tools=[TOOL]),  # Claude chooses tools itself; vLLM has no tool parser
        _line(3, logprobs=True),  # vLLM returns logprobs
    ]
    plan = _plan(batchd, lines)
    assert plan["stats"]["invalid_by_type"] == {"unsupported_parameter": 1}
    (_, custom_id, kind, message) = plan["stats"]["invalid_examples"][0]
    assert (custom_id, kind) == ("l1", "unsupported_parameter")
    assert message == (
        "no target of 'mix' can serve this line: vllm:tiny cannot choose tools itself "
        "(tool_choice auto); claude-haiku-4-5 cannot return logprobs; "
        "gpt-4.1-nano can (add it to [models.mix].targets, or ask for it by name)"
    )
    assert plan["targets"]["vllm:tiny"]["requests"] == 1
    assert plan["targets"]["anthropic:claude-haiku-4-5"]["requests"] == 1


def test_alias_of_two_vendors_none_able_names_one_that_can(batchd: Batchd) -> None:
    (batchd.tmp / "batchd.toml").write_text(
        '[models.mix]\ntargets = ["anthropic:claude-haiku-4-5", "gemini:gemini-2.5-flash"]\n'
    )
    plan = _plan(batchd, [_line(1, logprobs=True, n=2)])
    (_, _, kind, message) = plan["stats"]["invalid_examples"][0]
    assert kind == "unsupported_parameter"
    assert "claude-haiku-4-5 cannot return several choices (n > 1) or return logprobs" in message
    assert "gemini-2.5-flash cannot return several choices (n > 1) or return logprobs" in message
    assert "gpt-4.1-nano can (add it to [models.mix].targets, or ask for it by name)" in message


def test_single_target_invalid_names_the_target_and_one_that_can(batchd: Batchd) -> None:
    plan = _plan(
        batchd,
        [
            _line(1, model="claude-sonnet-4-5", logprobs=True),
            _line(2, model="gpt-5.4-nano", logprobs=True),
            _line(3, model="gemini-2.5-flash", seed=3),
        ],
    )
    examples = {e[1]: (e[2], e[3]) for e in plan["stats"]["invalid_examples"]}
    assert examples == {
        "l1": (
            "unsupported_parameter",
            "claude-sonnet-4-5 cannot return logprobs; gpt-4.1-nano can",
        ),
        "l2": ("unsupported_parameter", "gpt-5.4-nano cannot return logprobs; gpt-4.1-nano can"),
    }


def test_alias_run_sends_each_line_where_it_can_run(
    batchd: Batchd, emulator: OpenAIBatchEmulator, gemini: GeminiBatchEmulator
) -> None:
    # Gemini flash-lite is the cheaper target; it has no logprobs, no n and fetches no web
    # images, so those lines go to gpt-4.1-mini (vision, logprobs), and the rest to Gemini.
    (batchd.tmp / "batchd.toml").write_text(
        '[models.mix]\ntargets = ["gemini:gemini-2.5-flash-lite", "openai:gpt-4.1-mini"]\n'
    )
    lines = [
        chat("plain", "plain words", model="mix"),
        chat("schema", "structured", model="mix", response_format=SCHEMA),
        chat("logprobs", "with logprobs", model="mix", logprobs=True),
        chat("n", "two choices", model="mix", n=2),
        {
            "custom_id": "image",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "mix", "messages": [{"role": "user", "content": WEB_IMAGE}]},
        },
    ]
    proc = batchd.submit(write_jsonl(batchd.tmp / "mix.jsonl", lines))
    assert proc.returncode == 0, proc.stderr
    rows = {r["custom_id"]: r for r in batchd.results()}
    assert {k: (r["backend"], r["model_used"]) for k, r in rows.items()} == {
        "plain": ("gemini", "gemini-2.5-flash-lite"),
        "schema": ("gemini", "gemini-2.5-flash-lite"),
        "logprobs": ("openai", "gpt-4.1-mini"),
        "n": ("openai", "gpt-4.1-mini"),
        "image": ("openai", "gpt-4.1-mini"),
    }
    assert all(r["status"] == "succeeded" for r in rows.values())
    assert len(emulator.batches()) == len(gemini.batches()) == 1
