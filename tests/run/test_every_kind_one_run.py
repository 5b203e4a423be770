"""One file of every request kind in one run (issue 15, point 7), then the same file again.

Chat, structured outputs (json_schema), tools, images, n > 1, logprobs, seed,
reasoning_effort, Responses, completions and embeddings lines (one input or several) across
OpenAI, Claude and Gemini (the emulators, driven through the real SDKs) and the vLLM worker
(the tiny random model for chat / completions / schema / tools, MiniLM for embeddings) in
one `drive`: every line one row, each row's columns right; the second run is answered wholly
from the cache (no vendor batch, no engine request). Random weights say nothing predictable,
so the vLLM rows are checked for what guided decoding guarantees and for shapes.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from batchd.backends.vllm.runner import GpuRunner
from tests.backends.vllm.test_vllm import run_file, services
from tests.backends.vllm.test_vllm_requests import (  # noqa: F401 (runner: the fixture)
    PAIRS,
    VERDICT,
    WEATHER,
    cosine,
    runner,
)
from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.gemini_batch import GeminiBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import Batchd, write_jsonl

# the engines start inside this test when it runs alone (minutes on a loaded CPU)
pytestmark = pytest.mark.timeout(1500)

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
SCHEMA = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": VERDICT}}
NANO, MINI, VISION = "gpt-5.4-nano", "gpt-5.4-mini", "gpt-4.1-mini"
HAIKU, FLASH = "claude-haiku-4-5", "gemini-2.5-flash-lite"


def chat(cid: str, model: str, text: str, **body: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": text}]
    return {"id": cid, "model": model, "messages": messages, "max_tokens": 60, **body}


def openai(cid: str, url: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": cid, "method": "POST", "url": f"/v1/{url}", "body": body}


def image(cid: str, model: str) -> dict[str, Any]:
    parts = [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    return {"id": cid, "model": model, "messages": [{"role": "user", "content": parts}]}


def required_tool(cid: str, model: str, **extra: Any) -> dict[str, Any]:
    return chat(cid, model, "weather in Paris", tools=[WEATHER], tool_choice="required", **extra)


LINES = [
    # OpenAI
    chat("o-chat", NANO, "plain question"),
    chat("o-schema", MINI, "classify", response_format=SCHEMA),
    required_tool("o-tool", NANO),
    image("o-image", VISION),
    chat("o-n-seed", NANO, "two please", n=2, seed=7),
    chat("o-logprobs", VISION, "odds", logprobs=True, top_logprobs=2),
    chat("o-reason", MINI, "ponder", reasoning_effort="low"),
    openai("o-resp", "responses", model=MINI, input="respond", instructions="be brief"),
    openai("o-compl", "completions", model="gpt-3.5-turbo-instruct", prompt="once", max_tokens=5),
    openai(
        "o-compl2",
        "completions",
        model="gpt-3.5-turbo-instruct",
        prompt=["first", "second"],
        max_tokens=5,
    ),
    openai("o-emb", "embeddings", model="text-embedding-3-small", input="alpha"),
    openai("o-emb2", "embeddings", model="text-embedding-3-small", input=["alpha", "beta"]),
    # Claude
    chat("c-chat", HAIKU, "hello claude"),
    chat("c-schema", HAIKU, "classify", response_format=SCHEMA),
    required_tool("c-tool", HAIKU),
    image("c-image", HAIKU),
    chat("c-reason", HAIKU, "ponder this", reasoning_effort="low", max_tokens=100),
    {"id": "c-resp", "endpoint": "responses", "model": HAIKU, "input": "respond claude"},
    # Gemini
    chat("g-chat", FLASH, "hello gemini"),
    chat("g-schema", FLASH, "classify", response_format=SCHEMA),
    required_tool("g-tool", FLASH),
    chat("g-seed", FLASH, "seeded", seed=3),
    # vLLM: the tiny random model, and MiniLM for embeddings
    chat("v-chat", "tiny", "hello", max_tokens=6),
    chat("v-schema", "tiny", "classify", max_tokens=80, response_format=SCHEMA),
    required_tool("v-tool", "tiny", max_tokens=120, parallel_tool_calls=False),
    chat("v-n", "tiny", "sample", max_tokens=4, n=2, seed=5, logprobs=True, top_logprobs=2),
    {"id": "v-compl", "model": "tiny", "endpoint": "completions", "prompt": "the", "max_tokens": 4},
    {
        "id": "v-compl2",
        "model": "tiny",
        "endpoint": "completions",
        "prompt": ["the quick", "a lazy dog"],
        "max_tokens": 3,
    },
    {"id": "v-emb", "model": "minilm", "endpoint": "embeddings", "input": PAIRS[0]},
    {"id": "v-emb2", "model": "minilm", "endpoint": "embeddings", "input": PAIRS},
]


def _vendor_env(batchd: Batchd, monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulators' URLs and keys, as the CLI tests give them (the backends read them)."""
    for k, v in batchd.env.items():
        if k.startswith(("OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_")):
            monkeypatch.setenv(k, v)


def _check_rows(by_id: dict[str, dict[str, Any]]) -> None:
    backends = {"o": "openai", "c": "anthropic", "g": "gemini", "v": "vllm"}
    for cid, r in by_id.items():
        assert r["status"] == "succeeded", r
        assert r["backend"] == backends[cid[0]], r
        assert r["input_tokens"] > 0, r
        if cid[0] == "v":
            assert r["gpu_seconds"] > 0, r
        else:
            assert r["cost_usd"] > 0 and r["baseline_cost_usd"] > r["cost_usd"], r
        text_rows = not cid.endswith(("emb", "emb2", "compl2", "tool"))
        assert (r["output_text"] is not None) == text_rows, r
        assert (r["embedding"] is not None) == cid.endswith("-emb"), r
        assert (r["embeddings"] is not None) == cid.endswith("-emb2"), r
        assert (r["output_texts"] is not None) == cid.endswith("-compl2"), r
        assert (r["schema_valid"] is not None) == cid.endswith("-schema"), r
        assert (r["tool_calls"] is not None) == cid.endswith("-tool"), r
    for vendor in ("o", "c", "g"):
        assert by_id[f"{vendor}-chat"]["output_text"].startswith("echo: hello") or vendor == "o"
        assert by_id[f"{vendor}-chat"]["finish_reason"] == "stop"
    for cid in ("o-schema", "c-schema", "g-schema", "v-schema"):  # v: guided decoding
        assert by_id[cid]["schema_valid"] is True, by_id[cid]
        jsonschema.validate(json.loads(by_id[cid]["output_text"]), VERDICT)
    for cid in ("o-tool", "c-tool", "g-tool", "v-tool"):
        (call,) = json.loads(by_id[cid]["tool_calls"])
        assert call["type"] == "function" and call["function"]["name"] == "get_weather"
        assert isinstance(json.loads(call["function"]["arguments"])["city"], str)
        assert by_id[cid]["finish_reason"] == "tool_calls" and by_id[cid]["output_text"] is None
    assert by_id["c-image"]["output_text"] == "echo: describe"
    assert by_id["o-image"]["output_text"] == "echo: describe"
    for cid in ("o-n-seed", "v-n"):
        assert len(json.loads(by_id[cid]["response_json"])["choices"]) == 2
    v_n = json.loads(by_id["v-n"]["response_json"])["choices"][0]["logprobs"]["content"]
    assert all(len(p["top_logprobs"]) == 2 for p in v_n)
    for cid in ("o-reason", "c-reason"):
        r = by_id[cid]
        assert r["reasoning_tokens"] > 0 and r["output_tokens"] > r["reasoning_tokens"], r
    assert by_id["o-resp"]["output_text"] == "echo: respond"
    assert by_id["c-resp"]["output_text"] == "echo: respond claude"
    assert by_id["o-compl"]["output_text"] == "echo: once"
    assert by_id["o-compl2"]["output_texts"] == ["echo: first", "echo: second"]
    v_texts = by_id["v-compl2"]["output_texts"]
    choices = json.loads(by_id["v-compl2"]["response_json"])["choices"]
    assert [c["index"] for c in choices] == [0, 1] and v_texts == [c["text"] for c in choices]
    assert len(by_id["o-emb"]["embedding"]) == 1536
    assert by_id["o-emb2"]["embeddings"][0] == by_id["o-emb"]["embedding"]
    v_vectors = by_id["v-emb2"]["embeddings"]
    assert [len(v) for v in v_vectors] == [384] * len(PAIRS)
    assert cosine(v_vectors[0], by_id["v-emb"]["embedding"]) > 0.999  # real MiniLM weights
    assert cosine(v_vectors[0], v_vectors[1]) > cosine(v_vectors[0], v_vectors[2]) + 0.3


def test_every_kind_in_one_run_then_the_whole_file_from_the_cache(
    runner: GpuRunner,  # noqa: F811
    batchd: Batchd,
    emulator: OpenAIBatchEmulator,
    claude: AnthropicBatchEmulator,
    gemini: GeminiBatchEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _vendor_env(batchd, monkeypatch)
    src = write_jsonl(tmp_path / "every.jsonl", LINES)
    _, rows = run_file(services(tmp_path, runner), src, tmp_path / "out")
    assert [r["custom_id"] for r in rows] == [x.get("id", x.get("custom_id")) for x in LINES]
    by_id = {r["custom_id"]: r for r in rows}
    _check_rows(by_id)
    assert {r["cache"] for r in rows} == {"none"}

    sent = (len(emulator.batches()), len(claude.batches()), len(gemini.batches()))
    assert all(sent)
    feeders = (runner.feeder_for("tiny"), runner.feeder_for("minilm"))
    admitted = [f.admitted_total for f in feeders]
    _, again = run_file(services(tmp_path, runner), src, tmp_path / "again")
    assert [r["custom_id"] for r in again] == [r["custom_id"] for r in rows]
    assert {r["cache"] for r in again} == {"exact"}
    assert (len(emulator.batches()), len(claude.batches()), len(gemini.batches())) == sent
    assert [f.admitted_total for f in feeders] == admitted  # no engine request either
    for first, cached in zip(rows, again, strict=True):
        for col in ("output_text", "output_texts", "tool_calls", "schema_valid", "embedding"):
            assert cached[col] == first[col], (first["custom_id"], col)
        assert cached["embeddings"] == first["embeddings"]
        assert cached["cost_usd"] == 0 and cached["baseline_cost_usd"] == first["baseline_cost_usd"]
