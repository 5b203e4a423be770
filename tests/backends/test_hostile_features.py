"""Hostile tools, schemas and images: the Claude translation gives params the Anthropic
emulator's create-time checks accept, or refuses with a reason (UnsupportedRequest); the
schema check never raises whatever the schema and the answer; and through `batchd submit`
every such line ends as exactly one row, a failed or invalid one with its reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from batchd.backends.anthropic_batch import to_claude_params
from batchd.backends.base import UnsupportedRequest
from batchd.backends.schema_check import check_outcome, is_valid, line_schema
from batchd.outcome import SUCCEEDED, Outcome
from batchd.requests import Request, parse_request
from tests.emulators import anthropic_batch as claude_emulator
from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import Batchd, write_jsonl

pytestmark = pytest.mark.timeout(300)
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MODELS = ("claude-sonnet-4-5", "claude-opus-4-1")
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
_schema_words = st.sampled_from(
    [
        "type",
        "object",
        "string",
        "integer",
        "array",
        "properties",
        "required",
        "items",
        "enum",
        "$ref",
        "#/$defs/x",
        "anyOf",
        "minItems",
        "pattern",
        "(a+)+",
        "additionalProperties",
    ]
)
_schemaish = st.recursive(
    _schema_words | st.booleans() | st.integers(-3, 3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_schema_words, inner, max_size=4),
    max_leaves=14,
)
_url = st.one_of(
    st.text(max_size=20),
    st.builds(
        lambda t, d: f"data:{t};base64,{d}",
        st.sampled_from(["image/png", "image/tiff", "", "image/png;x=1"]),
        st.text("AZaz09+/=@", max_size=12),
    ),
    st.builds(lambda p: f"https://{p}", st.text(max_size=10)),
    st.just("http://example.com/a.png"),
)
_part = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("image_url"), "image_url": st.fixed_dictionaries({"url": _url})}
    ),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": _json}),
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=5)}),
)
_tool = st.one_of(
    _json,
    st.fixed_dictionaries(
        {
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {"name": st.text(max_size=6), "parameters": _schemaish}
            ),
        }
    ),
)


def _body() -> Any:
    return st.fixed_dictionaries(
        {"messages": st.just([{"role": "user", "content": "q"}])},
        optional={
            "tools": st.lists(_tool, max_size=2) | _json,
            "tool_choice": st.sampled_from(["auto", "required", "none", "x"]) | _json,
            "response_format": st.fixed_dictionaries(
                {
                    "type": st.sampled_from(["json_schema", "json_object", "text", "x"]),
                    "json_schema": st.fixed_dictionaries(
                        {"name": st.just("s"), "schema": _schemaish}
                    )
                    | _json,
                }
            )
            | _json,
            "reasoning_effort": st.sampled_from(["low", "high", "none", "bogus"]) | _json,
            "parallel_tool_calls": st.booleans(),
            "temperature": st.floats(0, 1),
        },
    )


@SETTINGS
@given(body=_body(), parts=st.lists(_part, min_size=1, max_size=3), model=st.sampled_from(MODELS))
@example(  # found by hypothesis in CI: an unhashable effort raised TypeError
    body={"messages": [{"role": "user", "content": "q"}], "reasoning_effort": []},
    parts=[{"type": "text", "text": "0"}],
    model="claude-sonnet-4-5",
)
@example(  # found by hypothesis in CI: tool_choice required with no tools went to Claude as "any"
    body={"messages": [{"role": "user", "content": "q"}], "tool_choice": "required"},
    parts=[{"type": "text", "text": "0"}],
    model="claude-sonnet-4-5",
)
def test_claude_translation_is_vendor_shaped_or_refused(
    body: dict[str, Any], parts: list[Any], model: str
) -> None:
    body = {**body, "model": model, "messages": [{"role": "user", "content": parts}]}
    r = parse_request(
        {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body}, 1, "t"
    )
    if not isinstance(r, Request):
        return  # refused by parsing, with its reason
    try:
        params = to_claude_params(r, 100)
    except UnsupportedRequest as exc:
        assert str(exc)
        return
    json.dumps(params)
    problem = claude_emulator._params_problem(params, "params")  # what Anthropic would check
    assert problem is None, (problem, params)


@SETTINGS
@given(schema=_schemaish, answer=st.text(max_size=30) | _json.map(json.dumps) | st.none())
def test_schema_check_never_raises(schema: Any, answer: str | None) -> None:
    if isinstance(schema, dict):
        assert is_valid(answer, schema) in (True, False)
    for line in (
        {
            "custom_id": "a",
            "body": {"response_format": {"type": "json_schema", "json_schema": {"schema": schema}}},
        },
        {
            "custom_id": "a",
            "params": {"output_config": {"format": {"type": "json_schema", "schema": schema}}},
        },
        {"custom_id": "a", "request": {"generationConfig": {"responseJsonSchema": schema}}},
    ):
        found = line_schema(line)
        assert found == (schema if isinstance(schema, dict) else None)
        o = check_outcome(Outcome(status=SUCCEEDED, output_text=answer), json.dumps(line).encode())
        assert o.schema_valid in ((True, False) if isinstance(schema, dict) else (None,))


def test_remote_refs_are_never_fetched_and_answers_not_json_are_invalid() -> None:
    assert is_valid('{"a": 1}', {"$ref": "https://example.com/schema.json"}) is False
    assert is_valid("not json", {"type": "object"}) is False
    assert is_valid("NaN", {"type": "number"}) is False
    assert is_valid(None, {}) is False
    assert is_valid('{"a": 1}', {"type": "object", "required": ["a"]}) is True
    deep: dict[str, Any] = {"type": "object"}
    for _ in range(3000):
        deep = {"anyOf": [deep]}
    assert is_valid("{}", deep) in (True, False)


def test_hostile_lines_through_submit_each_end_as_one_row_with_a_reason(
    batchd: Batchd, emulator: OpenAIBatchEmulator, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    def line(cid: str, model: str, **body: Any) -> dict[str, Any]:
        content = body.pop("content", "q")
        return {
            "custom_id": cid,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": content}], **body},
        }

    img = lambda url: [{"type": "image_url", "image_url": {"url": url}}]  # noqa: E731
    lines = [
        line(
            "bad-schema",
            "claude-sonnet-4-5",
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": {"type": 5}},
            },
        ),
        line(
            "gpt-bad-schema",
            "gpt-5.4-mini",
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": {"type": 5}},
            },
        ),
        line(
            "array-forced",
            "claude-haiku-4-5",
            tools=[
                {"type": "function", "function": {"name": "t", "parameters": {"type": "array"}}}
            ],
        ),
        line(
            "reserved",
            "claude-sonnet-4-5",
            tools=[{"type": "function", "function": {"name": "batchd_structured_output"}}],
        ),
        line(
            "tool-none",
            "claude-sonnet-4-5",
            tool_choice={"type": "function", "function": {"name": "missing"}},
            tools=[{"type": "function", "function": {"name": "t"}}],
        ),
        line(
            "gpt-tool-none",
            "gpt-5.4-mini",
            tool_choice={"type": "function", "function": {"name": "missing"}},
            tools=[{"type": "function", "function": {"name": "t"}}],
        ),
        line("gif-as-png", "claude-sonnet-4-5", content=img("data:image/png;base64,R0lGODlhAA==")),
        line("svg", "claude-sonnet-4-5", content=img("data:image/svg+xml;base64,PHN2Zz4=")),
        line("no-comma", "claude-sonnet-4-5", content=img("data:image/png;base64")),
        line(
            "think-forced",
            "claude-sonnet-4-5",
            reasoning_effort="low",
            tool_choice="required",
            tools=[{"type": "function", "function": {"name": "t"}}],
        ),
    ]
    proc = batchd.submit(write_jsonl(tmp_path / "hostile.jsonl", lines))
    assert proc.returncode in (0, 3), proc.stderr
    rows = {r["custom_id"]: r for r in batchd.results()}
    assert len(batchd.results()) == len(lines) and set(rows) == {lin["custom_id"] for lin in lines}
    for cid, r in rows.items():
        assert r["status"] in ("failed", "invalid"), (cid, r)
        assert r["error_type"] and r["error_message"], (cid, r)


def test_a_tool_call_answer_is_not_checked_against_the_schema() -> None:
    line = {
        "custom_id": "a",
        "body": {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"schema": {"type": "object"}},
            }
        },
    }
    raw = json.dumps(line).encode()
    call = Outcome(status=SUCCEEDED, output_text=None, tool_calls='[{"id": "c"}]')
    assert check_outcome(call, raw).schema_valid is None
    assert check_outcome(Outcome(status=SUCCEEDED, output_text="{}"), raw).schema_valid is True
    assert check_outcome(Outcome(status=SUCCEEDED, output_text="[]"), raw).schema_valid is False
    assert check_outcome(Outcome(status="failed"), raw).schema_valid is None
