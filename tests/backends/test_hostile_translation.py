"""Every backend's translation of generated hostile requests either gives the vendor's
shape or refuses the request with a reason (UnsupportedRequest / Refused); nothing else
escapes. vLLM prompts are built with the tiny model's real tokenizer, without an engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchd.backends.anthropic_batch import to_claude_params
from batchd.backends.base import UnsupportedRequest
from batchd.backends.openai_batch import OpenAIBatchBackend
from batchd.backends.vllm.prompts import Plan, Refused, plan_of, prompts_of
from batchd.config.settings import load_settings
from batchd.intake.screen import huge_int, too_deep
from batchd.requests import ENDPOINT_URLS, Request, parse_request
from tests.support.hostile import CLAUDE_MODEL, OPENAI_MODEL, hostile_lines

pytestmark = pytest.mark.timeout(300)
SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _requests(lines: list[bytes]) -> list[Request]:
    """The lines that get past decode and validation, as ingest would see them."""
    out = []
    for raw in lines:
        if too_deep(raw) is not None:
            continue
        try:
            obj = msgspec.json.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError):
            continue
        if huge_int(raw, obj) is not None:
            continue
        r = parse_request(obj, 1, "t")
        if isinstance(r, Request):
            out.append(r)
    return out


@pytest.fixture(scope="module")
def openai_backend() -> OpenAIBatchBackend:
    s = load_settings(environ={})
    return OpenAIBatchBackend(s.openai)


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))


@SETTINGS
@given(lines=st.lists(hostile_lines((OPENAI_MODEL,)), min_size=1, max_size=8))
def test_openai_lines_are_json_with_the_vendor_id(
    openai_backend: OpenAIBatchBackend, lines: list[bytes]
) -> None:
    for r in _requests(lines):
        out = json.loads(openai_backend.encode_line("k" * 32, r))
        assert out["custom_id"] == "k" * 32 and out["url"] == ENDPOINT_URLS[r.endpoint]
        assert out["body"]["model"] == r.model


@SETTINGS
@given(lines=st.lists(hostile_lines((CLAUDE_MODEL,), ("chat",)), min_size=1, max_size=8))
def test_claude_params_or_a_named_refusal(lines: list[bytes]) -> None:
    for r in _requests(lines):
        try:
            params = to_claude_params(r, 64)
        except UnsupportedRequest as exc:
            assert str(exc)
            continue
        msgspec.json.encode(params)  # it can be sent
        if r.source_params is None:
            assert params["model"] == r.model and params["max_tokens"] >= 1
            assert params["messages"] and all(
                m["role"] in ("user", "assistant") for m in params["messages"]
            )


@SETTINGS
@given(lines=st.lists(hostile_lines(("tiny",), ("chat",)), min_size=1, max_size=8))
def test_vllm_prompt_and_sampling_or_a_named_refusal(tokenizer: Any, lines: list[bytes]) -> None:
    for r in _requests(lines):
        try:
            plan = _plan(r.body)
            prompt = prompts_of(plan, r.body, tokenizer)[0]
            sampling = plan.sampling
        except Refused as exc:
            assert exc.error_type and str(exc)
            continue
        assert isinstance(prompt, str) and isinstance(sampling["max_tokens"], int)


def _plan(body: dict[str, Any]) -> Plan:
    """The vLLM backend's plan for a chat body on a generate model (no tool parser)."""
    return plan_of("chat", body, "generate", "", "tiny")


def _prompt(body: dict[str, Any], tokenizer: Any) -> Any:
    return prompts_of(_plan(body), body, tokenizer)[0]


def test_vllm_refuses_tool_calls_it_would_drop(tokenizer: Any) -> None:
    body = {
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]},
        ]
    }
    with pytest.raises(Refused, match="tool call needs a function"):
        _prompt(body, tokenizer)
    with pytest.raises(Refused, match="text"):
        _prompt(
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, tokenizer
        )
    with pytest.raises(Refused, match="temperature"):
        _plan({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"})
    assert _prompt({"messages": [{"role": "user", "content": "hi"}]}, tokenizer)
