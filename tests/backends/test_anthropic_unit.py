"""Claude request translation, result mapping and the automatic prompt-cache planner."""

from __future__ import annotations

from typing import Any

import pytest
from anthropic.types.messages import MessageBatchIndividualResponse

from batchd.backends.anthropic_batch import parse_result, to_claude_params
from batchd.backends.base import UnsupportedRequest
from batchd.backends.prompt_cache import CACHE_CONTROL, plan_prompt_cache, saving_in_input_units
from batchd.config.pricing import load_price_book
from batchd.config.settings import load_settings
from batchd.requests import Request, parse_request

MODEL = "claude-sonnet-4-5"
PRICES = load_price_book(load_settings(environ={}))


def _req(obj: dict[str, Any]) -> Request:
    r = parse_request(obj, 1, "default")
    assert isinstance(r, Request), r
    return r


def test_openai_style_chat_becomes_claude_params() -> None:
    r = _req(
        {
            "custom_id": "a",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": MODEL,
                "messages": [
                    {"role": "system", "content": "Be terse."},
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": [{"type": "text", "text": "again"}]},
                ],
                "stop": "END",
                "temperature": 0.2,
                "top_p": 0.9,
                "user": "u-1",
                "stream": False,
                "n": 1,
            },
        }
    )
    p = to_claude_params(r, default_max_tokens=777)
    assert p == {
        "model": MODEL,
        "system": "Be terse.",
        "max_tokens": 777,
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": [{"type": "text", "text": "again"}]},
        ],
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "top_p": 0.9,
        "metadata": {"user_id": "u-1"},
    }


def test_max_completion_tokens_and_native_claude_params() -> None:
    r = _req(
        {"model": MODEL, "prompt": "x", "max_completion_tokens": 12, "top_k": 5, "system": "sys"}
    )
    p = to_claude_params(r, default_max_tokens=999)
    assert p["max_tokens"] == 12 and p["top_k"] == 5 and p["system"] == "sys"


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"seed": 3}, "seed"),
        ({"response_format": {"type": "regex"}}, "response_format"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"n": 2}, "n"),
        ({"temperature": 1.5}, "temperature above 1"),
    ],
)
def test_unsupported_parameters_are_named(extra: dict[str, Any], named: str) -> None:
    r = _req(
        {
            "custom_id": "a",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": "q"}], **extra},
        }
    )
    with pytest.raises(UnsupportedRequest, match=named):
        to_claude_params(r, 100)


def test_tool_turns_and_images_are_unsupported() -> None:
    tool = _req(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}],
        }
    )
    with pytest.raises(UnsupportedRequest, match="tool"):
        to_claude_params(tool, 100)
    image = _req(
        {
            "model": MODEL,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "http://x"}}],
                }
            ],
        }
    )
    with pytest.raises(UnsupportedRequest, match="image_url"):
        to_claude_params(image, 100)


def test_anthropic_format_passes_through_unchanged() -> None:
    params = {
        "model": MODEL,
        "max_tokens": 5,
        "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "q"}],
        "thinking": {"type": "disabled"},
        "some_future_param": 1,
    }
    r = _req({"custom_id": "a", "params": params})
    assert to_claude_params(r, 100) is params


def _message_result(**usage: Any) -> Any:
    return MessageBatchIndividualResponse.model_validate(
        {
            "custom_id": "k",
            "result": {
                "type": "succeeded",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": MODEL,
                    "content": [
                        {"type": "text", "text": "hello "},
                        {"type": "text", "text": "there"},
                    ],
                    "stop_reason": "max_tokens",
                    "stop_sequence": None,
                    "usage": {"input_tokens": 10, "output_tokens": 4, **usage},
                },
            },
        }
    ).result


def test_succeeded_result_maps_tokens_and_finish() -> None:
    o = parse_result(
        _message_result(
            cache_read_input_tokens=0,
            cache_creation_input_tokens=3000,
            cache_creation={"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 3000},
        ),
        MODEL,
    )
    assert o.status == "succeeded" and o.output_text == "hello there"
    assert o.finish_reason == "length"  # OpenAI's word, as in every row
    assert (o.input_tokens, o.cached_input_tokens, o.cache_write_tokens) == (3010, 0, 3000)
    assert o.cache_write_1h_tokens == 3000 and o.output_tokens == 4
    read = parse_result(
        _message_result(cache_read_input_tokens=3000, cache_creation_input_tokens=0), MODEL
    )
    assert (read.input_tokens, read.cached_input_tokens, read.cache_write_tokens) == (3010, 3000, 0)


@pytest.mark.parametrize(
    ("error_type", "retryable"),
    [("overloaded_error", True), ("api_error", True), ("invalid_request_error", False)],
)
def test_errored_results_retry_only_transient_types(error_type: str, retryable: bool) -> None:
    result = MessageBatchIndividualResponse.model_validate(
        {
            "custom_id": "k",
            "result": {
                "type": "errored",
                "error": {"type": "error", "error": {"type": error_type, "message": "m"}},
            },
        }
    ).result
    o = parse_result(result, MODEL)
    assert o.status == "failed" and o.error_type == error_type and o.retryable is retryable


def test_expired_and_canceled_results() -> None:
    for kind, status, retry in (("expired", "expired", True), ("canceled", "canceled", False)):
        result = MessageBatchIndividualResponse.model_validate(
            {"custom_id": "k", "result": {"type": kind}}
        ).result
        o = parse_result(result, MODEL)
        assert (o.status, o.retryable) == (status, retry)


# --- prompt-cache planner ---------------------------------------------------------------
LONG = "policy " * 1200  # ~8,400 bytes ~ 2,100 estimated tokens: over Sonnet 4.5's 1,024


def _r(cid: str, question: str, system: str | None = LONG, **params: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 10,
        "messages": [{"role": "user", "content": question}],
        **params,
    }
    if system is not None:
        p["system"] = system
    return {"custom_id": cid, "params": p}


def test_shared_long_system_is_marked_and_grouped() -> None:
    price = PRICES.require(MODEL)
    reqs = [
        _r("a1", "q1"),
        _r("b1", "other", system="short"),
        _r("a2", "q2"),
        _r("b2", "other2", system="short"),
        _r("a3", "q3"),
    ]
    out = plan_prompt_cache(reqs, price)
    assert sorted(r["custom_id"] for r in out) == sorted(r["custom_id"] for r in reqs)
    marked = [r for r in out if isinstance(r["params"]["system"], list)]
    assert [r["custom_id"] for r in marked] == ["a1", "a2", "a3"]
    ids = [r["custom_id"] for r in out]
    assert ids.index("a3") - ids.index("a1") == 2  # the group sits together
    for r in marked:
        assert r["params"]["system"] == [
            {"type": "text", "text": LONG, "cache_control": CACHE_CONTROL}
        ]
    assert CACHE_CONTROL == {"type": "ephemeral", "ttl": "1h"}
    assert reqs[0]["params"]["system"] == LONG  # the input is not mutated


def test_not_marked_when_it_does_not_pay_or_is_too_short() -> None:
    price = PRICES.require(MODEL)
    two = plan_prompt_cache([_r("a", "q1"), _r("b", "q2")], price)  # 2 sharers: 2.1P > 2P
    assert all(isinstance(r["params"]["system"], str) for r in two)
    assert saving_in_input_units(2, 1000, price) < 0 < saving_in_input_units(3, 1000, price)
    short = plan_prompt_cache([_r(f"s{i}", f"q{i}", system="tiny") for i in range(9)], price)
    assert all(r["params"]["system"] == "tiny" for r in short)
    haiku = PRICES.require("claude-haiku-4-5")  # 4,096-token minimum
    hk = plan_prompt_cache(
        [
            {
                "custom_id": f"h{i}",
                "params": {**_r("x", f"q{i}")["params"], "model": "claude-haiku-4-5"},
            }
            for i in range(5)
        ],
        haiku,
    )
    assert all(isinstance(r["params"]["system"], str) for r in hk)


def test_requests_with_their_own_cache_control_are_untouched() -> None:
    price = PRICES.require(MODEL)
    own = {
        "custom_id": "own",
        "params": {
            "model": MODEL,
            "max_tokens": 5,
            "system": [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "q"}],
        },
    }
    out = plan_prompt_cache([own, _r("a", "q1"), _r("b", "q2"), _r("c", "q3")], price)
    got = next(r for r in out if r["custom_id"] == "own")
    assert got == own


def test_shared_document_in_first_message_is_marked_there() -> None:
    price = PRICES.require(MODEL)
    doc = "contract clause " * 800

    def ask(cid: str, q: str) -> dict[str, Any]:
        return {
            "custom_id": cid,
            "params": {
                "model": MODEL,
                "max_tokens": 5,
                "system": "Be exact.",
                "messages": [
                    {"role": "user", "content": doc},
                    {"role": "assistant", "content": "Read it."},
                    {"role": "user", "content": q},
                ],
            },
        }

    out = plan_prompt_cache([ask(f"d{i}", f"question {i}") for i in range(4)], price)
    for r in out:
        first = r["params"]["messages"][0]["content"]
        assert first == [{"type": "text", "text": doc, "cache_control": CACHE_CONTROL}]
        assert r["params"]["system"] == "Be exact."
        assert r["params"]["messages"][2]["content"].startswith("question")
