"""The OpenAI emulator's embeddings, Responses and completions endpoints (real SDK)."""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.emulators.test_openai_emulator import jsonl, run_to_end, upload


@pytest.fixture
def client() -> Iterator[openai.OpenAI]:
    with OpenAIBatchEmulator() as emu:
        yield openai.OpenAI(api_key="sk-test", base_url=emu.base_url, max_retries=0)


def _line(cid: str, url: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": cid, "method": "POST", "url": url, "body": body}


def _run(client: openai.OpenAI, endpoint: str, lines: list[dict[str, Any]]) -> Any:
    file_id = upload(client, jsonl(lines))
    batch = client.batches.create(
        input_file_id=file_id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
    )
    return run_to_end(client, batch.id)


def _outputs(client: openai.OpenAI, batch: Any) -> dict[str, Any]:
    text = client.files.content(batch.output_file_id).text
    return {o["custom_id"]: o["response"] for o in map(json.loads, text.splitlines())}


def test_a_file_mixing_urls_fails_validation_as_openai_does(client: openai.OpenAI) -> None:
    lines = [
        _line("a", "/v1/embeddings", model="text-embedding-3-small", input="x"),
        _line("b", "/v1/chat/completions", model="gpt-4o-mini", messages=[]),
    ]
    batch = _run(client, "/v1/embeddings", lines)
    assert batch.status == "failed"
    errors = batch.errors.data
    assert [(e.code, e.line) for e in errors] == [("invalid_url", 2)]


def _errors(client: openai.OpenAI, batch: Any) -> dict[str, int]:
    text = client.files.content(batch.error_file_id).text
    records = [json.loads(x) for x in text.splitlines()]
    return {o["custom_id"]: o["response"]["status_code"] for o in records}


def test_embeddings_sizes_dimensions_and_base64(client: openai.OpenAI) -> None:
    emb = "/v1/embeddings"
    batch = _run(client, emb, [_line("s", emb, model="text-embedding-3-small", input="hello")])
    small = _outputs(client, batch)["s"]["body"]
    assert small["object"] == "list" and len(small["data"][0]["embedding"]) == 1536
    assert small["usage"]["prompt_tokens"] > 0
    large = [
        _line(
            "l",
            emb,
            model="text-embedding-3-large",
            input="hi",
            dimensions=64,
            encoding_format="base64",
        ),
        _line("too_big", emb, model="text-embedding-3-large", input="hi", dimensions=4000),
    ]
    batch = _run(client, emb, large)
    raw = base64.b64decode(_outputs(client, batch)["l"]["body"]["data"][0]["embedding"])
    vec = struct.unpack("<64f", raw)
    assert math.isclose(sum(x * x for x in vec), 1.0, rel_tol=1e-5)
    assert _errors(client, batch) == {"too_big": 400}
    ada = _line("ada", emb, model="text-embedding-ada-002", input="x", dimensions=8)
    assert _errors(client, _run(client, emb, [ada])) == {"ada": 400}
    chat = _line("chat", emb, model="gpt-4o-mini", input="x")
    assert _errors(client, _run(client, emb, [chat])) == {"chat": 400}


def test_responses_reasoning_usage_and_completions_default_length(client: openai.OpenAI) -> None:
    resp = "/v1/responses"
    lines = [_line("r", resp, model="gpt-5.4-mini", input="one two", max_output_tokens=9)]
    r = _outputs(client, _run(client, resp, lines))["r"]["body"]
    assert [i["type"] for i in r["output"]] == ["reasoning", "message"]
    assert r["usage"]["output_tokens_details"]["reasoning_tokens"] == 8
    assert r["status"] == "incomplete" and r["output"][1]["content"][0]["text"] == "echo:"
    lines = [_line("q", resp, model="gpt-4o-mini", input="plain")]
    q = _outputs(client, _run(client, resp, lines))["q"]["body"]
    assert q["usage"]["output_tokens_details"]["reasoning_tokens"] == 0
    assert q["output"][0]["content"][0]["text"] == "echo: plain"
    words = " ".join(f"w{i}" for i in range(30))
    lines = [_line("c", "/v1/completions", model="gpt-3.5-turbo-instruct", prompt=words)]
    c = _outputs(client, _run(client, "/v1/completions", lines))["c"]["body"]
    assert c["object"] == "text_completion" and c["choices"][0]["finish_reason"] == "length"
    assert c["usage"]["completion_tokens"] == 16  # OpenAI's default max_tokens
