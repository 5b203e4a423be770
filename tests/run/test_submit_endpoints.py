"""`batchd submit` with every endpoint (embeddings, Responses, completions, chat in the
Mistral / Together shape) against the OpenAI Batch emulator, and Responses lines for Claude
against the Anthropic emulator (real SDKs, embedded mode)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest

from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.emulators.openai_endpoints import vector
from tests.support.helpers import Batchd, write_jsonl

SMALL, LARGE = "text-embedding-3-small", "text-embedding-3-large"
MINI = "gpt-5.4-mini"  # a reasoning model: its Responses usage has reasoning tokens
HAIKU = "claude-haiku-4-5"


def line(cid: str, url: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": cid, "method": "POST", "url": f"/v1/{url}", "body": body}


def parts(text: str) -> list[dict[str, Any]]:
    """Responses input items: one user message of one input_text part."""
    return [{"role": "user", "content": [{"type": "input_text", "text": text}]}]


def _file(path: Path) -> Path:
    return write_jsonl(
        path,
        [
            line("e1", "embeddings", model=SMALL, input="alpha doc"),
            line(
                "e2",
                "embeddings",
                model=LARGE,
                input="beta doc",
                dimensions=256,
                encoding_format="base64",
            ),
            # line e1 in the native format, its input a one-item list: the same request
            {"id": "e3", "endpoint": "embeddings", "model": SMALL, "input": ["alpha doc"]},
            line(
                "r1",
                "responses",
                model=MINI,
                input="gamma",
                instructions="be brief",
                reasoning={"effort": "low"},
            ),
            {"id": "r2", "endpoint": "responses", "model": MINI, "input": parts("delta")},
            line(
                "c1", "completions", model="gpt-3.5-turbo-instruct", prompt="epsilon", max_tokens=5
            ),
            {"id": "c2", "endpoint": "completions", "model": "davinci-002", "prompt": "zeta"},
            {
                "custom_id": "m1",
                "body": {
                    "model": "gpt-5.4-nano",
                    "max_tokens": 20,
                    "messages": [{"role": "user", "content": "mistral shape"}],
                },
            },
            # chat on the Responses line's model: the same model, another endpoint, own chunk
            line("m2", "chat/completions", model=MINI, messages=[{"role": "user", "content": "x"}]),
            # several inputs / prompts on one line: one row each, answers in order
            line("e4", "embeddings", model=SMALL, input=["one", "two", "alpha doc"]),
            line(
                "e5", "embeddings", model=SMALL, input=[[1, 2, 3], [4, 5]], encoding_format="base64"
            ),
            line(
                "c3",
                "completions",
                model="gpt-3.5-turbo-instruct",
                prompt=["first prompt", "second one here now", "third"],
                max_tokens=3,
                n=2,
            ),
            line("bad1", "embeddings", model=SMALL, input=["x"] * 2049),
            line("bad2", "responses", model=MINI, input="x", max_tokens=5),
            line("bad3", "embeddings", model=SMALL, input="x", encoding_format="int8"),
            {"id": "bad4", "endpoint": "embeddings", "model": SMALL, "prompt": "x"},
        ],
    )


def _cost(tokens_in: int, tokens_out: int, in_per_mtok: float, out_per_mtok: float) -> float:
    return (tokens_in * in_per_mtok + tokens_out * out_per_mtok) / 1e6


def _f32(values: list[float]) -> list[float]:
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


def test_every_endpoint_runs_priced_and_a_rerun_is_all_cache(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    src = _file(tmp_path / "endpoints.jsonl")
    proc = batchd.submit(src, "--export", "openai-jsonl")
    assert proc.returncode == 3, proc.stderr  # finished, with invalid lines
    rows = {r["custom_id"]: r for r in batchd.results()}
    assert len(batchd.results()) == 16  # one row per line, several inputs or not
    ok = ("e1", "e2", "e3", "e4", "e5", "r1", "r2", "c1", "c2", "c3", "m1", "m2")
    assert {c: rows[c]["status"] for c in ok} == dict.fromkeys(ok, "succeeded")

    # Embeddings: the model's size, or body.dimensions; floats although e2 asked for base64.
    e1, e2, e3 = rows["e1"], rows["e2"], rows["e3"]
    assert len(e1["embedding"]) == 1536 and len(e2["embedding"]) == 256
    assert e1["embedding"] == _f32(vector(SMALL, "alpha doc", 1536))
    assert e2["embedding"] == _f32(vector(LARGE, "beta doc", 256))
    assert math.isclose(sum(x * x for x in e2["embedding"]), 1.0, rel_tol=1e-5)
    assert e1["output_text"] is None and e1["output_tokens"] == 0 and e1["input_tokens"] > 0
    assert e3["cache"] == "in_run" and e3["embedding"] == e1["embedding"]
    assert e3["request_key"] == e1["request_key"]
    assert e1["cost_usd"] == pytest.approx(_cost(e1["input_tokens"], 0, 0.02, 0) / 2)
    assert e1["baseline_cost_usd"] == pytest.approx(_cost(e1["input_tokens"], 0, 0.02, 0))
    assert e2["cost_usd"] == pytest.approx(_cost(e2["input_tokens"], 0, 0.13, 0) / 2)

    # Responses: output_text from the message item, reasoning tokens billed as output.
    r1, r2 = rows["r1"], rows["r2"]
    assert r1["output_text"] == "echo: gamma" and r2["output_text"] == "echo: delta"
    assert r1["reasoning_tokens"] == 4 and r2["reasoning_tokens"] == 8  # low; medium default
    assert r1["output_tokens"] == 4 + 2 and r1["finish_reason"] == "stop"
    assert r1["cost_usd"] == pytest.approx(
        _cost(r1["input_tokens"], r1["output_tokens"], 0.75, 4.50) / 2
    )
    assert r1["embedding"] is None

    # Completions: choices[0].text; davinci-002 with OpenAI's default max_tokens of 16.
    c1, c2 = rows["c1"], rows["c2"]
    assert c1["output_text"] == "echo: epsilon" and c1["finish_reason"] == "stop"
    assert c2["output_text"] == "echo: zeta" and c2["model_used"] == "davinci-002"
    assert c1["cost_usd"] == pytest.approx(
        _cost(c1["input_tokens"], c1["output_tokens"], 1.50, 2.00) / 2
    )
    assert c2["cost_usd"] == pytest.approx(
        _cost(c2["input_tokens"], c2["output_tokens"], 2.00, 2.00) / 2
    )
    # The Mistral / Together shape is a chat request.
    assert rows["m1"]["output_text"] == "echo: mistral shape"
    assert rows["m1"]["reasoning_tokens"] == 0

    # Several inputs: every vector in input order in `embeddings`, `embedding` NULL; one
    # request to OpenAI, its usage summed over the inputs.
    e4, e5, c3 = rows["e4"], rows["e5"], rows["c3"]
    assert e4["embedding"] is None and e4["output_text"] is None
    assert e4["embeddings"] == [_f32(vector(SMALL, t, 1536)) for t in ("one", "two", "alpha doc")]
    assert e4["embeddings"][2] == e1["embedding"]
    assert e4["input_tokens"] == 1 + 1 + 3  # the emulator: len // 4 + 1 per input
    assert e4["cost_usd"] == pytest.approx(_cost(5, 0, 0.02, 0) / 2)
    assert e5["embeddings"] == [_f32(vector(SMALL, t, 1536)) for t in ("t1 t2 t3", "t4 t5")]
    assert e1["embeddings"] is None and c1["output_texts"] is None
    # Several prompts: each prompt's first choice in `output_texts`, `output_text` NULL;
    # finish_reason the first that is not stop (prompt 2 was cut at max_tokens).
    assert c3["output_text"] is None
    assert c3["output_texts"] == ["echo: first prompt", "echo: second one", "echo: third"]
    assert c3["finish_reason"] == "length"
    assert c3["output_tokens"] == 2 * (3 + 3 + 2)  # n=2 choices per prompt
    assert c3["cost_usd"] == pytest.approx(
        _cost(c3["input_tokens"], c3["output_tokens"], 1.50, 2.00) / 2
    )
    c3_body = next(
        s["body"] for s in emulator.requests_seen() if s["custom_id"] and s["body"].get("n") == 2
    )
    assert c3_body["prompt"] == ["first prompt", "second one here now", "third"]
    # The OpenAI export: OpenAI's exact shape, data items and choices with their index.
    (export,) = batchd.run_dirs()
    exported = {
        x["custom_id"]: x
        for x in map(json.loads, (export / "results.openai.jsonl").read_text().splitlines())
    }
    body4 = exported["e4"]["response"]["body"]
    assert [d["index"] for d in body4["data"]] == [0, 1, 2]
    assert [d["embedding"] for d in body4["data"]] == [
        vector(SMALL, t, 1536) for t in ("one", "two", "alpha doc")
    ]
    assert all(isinstance(d["embedding"], str) for d in exported["e5"]["response"]["body"]["data"])
    choices = exported["c3"]["response"]["body"]["choices"]
    assert [c["index"] for c in choices] == list(range(6))
    assert [c["text"] for c in choices[::2]] == c3["output_texts"]
    assert exported["bad1"]["response"]["status_code"] == 400

    # Invalid bodies say what to fix.
    reasons = {c: (rows[c]["error_type"], rows[c]["error_message"]) for c in rows if "bad" in c}
    assert reasons["bad1"][0] == "too_many_inputs" and "2,048" in reasons["bad1"][1]
    assert reasons["bad2"][0] == "bad_body" and "max_output_tokens" in reasons["bad2"][1]
    assert reasons["bad3"][0] == "bad_encoding_format" and '"base64"' in reasons["bad3"][1]
    assert reasons["bad4"][0] == "bad_body" and "'input'" in reasons["bad4"][1]

    # One endpoint per batch, every line's url the batch's own.
    batches = emulator.batches()
    assert sorted((b["endpoint"], b["model"]) for b in batches) == [
        ("/v1/chat/completions", "gpt-5.4-mini"),
        ("/v1/chat/completions", "gpt-5.4-nano"),
        ("/v1/completions", "davinci-002"),
        ("/v1/completions", "gpt-3.5-turbo-instruct"),
        ("/v1/embeddings", LARGE),
        ("/v1/embeddings", SMALL),
        ("/v1/responses", MINI),
    ]
    assert {b["status"] for b in batches} == {"completed"}
    sent = emulator.requests_seen()
    assert len(sent) == 11  # e3 answered in run
    urls = {s["custom_id"]: s["url"] for s in sent if s["body"]["model"] == MINI}
    assert sorted(urls.values()) == ["/v1/chat/completions", "/v1/responses", "/v1/responses"]

    # A second run: every answer from the cache, vectors and reasoning tokens kept.
    again = batchd.submit(src)
    assert again.returncode == 3, again.stderr
    assert len(emulator.batches()) == len(batches)  # nothing sent
    second = next(d for d in batchd.run_dirs() if batchd.results(d)[0]["cache"] == "exact")
    rows2 = {r["custom_id"]: r for r in batchd.results(second)}
    assert {rows2[c]["cache"] for c in ok} == {"exact"}
    assert rows2["e2"]["embedding"] == e2["embedding"]
    assert rows2["e4"]["embeddings"] == e4["embeddings"] and rows2["e4"]["embedding"] is None
    assert rows2["c3"]["output_texts"] == c3["output_texts"]
    assert rows2["r1"]["output_text"] == "echo: gamma"
    assert all(rows2[c]["cost_usd"] == 0 and rows2[c]["baseline_cost_usd"] > 0 for c in ok)


def test_responses_lines_run_on_claude_translated_or_refused_by_name(
    batchd: Batchd, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    src = write_jsonl(
        tmp_path / "claude.jsonl",
        [
            line(
                "ok1",
                "responses",
                model=HAIKU,
                input="hello claude",
                instructions="be kind",
                max_output_tokens=40,
            ),
            {"id": "ok2", "endpoint": "responses", "model": HAIKU, "input": parts("parts too")},
            line("web", "responses", model=HAIKU, input="news?", tools=[{"type": "web_search"}]),
            line("prev", "responses", model=HAIKU, input="more", previous_response_id="resp_1"),
            line("emb", "embeddings", model=HAIKU, input="vector please"),
        ],
    )
    proc = batchd.submit(src)
    assert proc.returncode == 3, proc.stderr
    rows = {r["custom_id"]: r for r in batchd.results()}
    assert rows["ok1"]["status"] == "succeeded" and rows["ok1"]["backend"] == "anthropic"
    assert rows["ok1"]["output_text"] == "echo: hello claude"
    assert rows["ok2"]["output_text"] == "echo: parts too"
    sent = [r["params"] for r in claude.requests_seen()]
    assert len(sent) == 2  # the refused lines never reach the vendor
    params = next(p for p in sent if p.get("system") == "be kind")
    assert params["messages"] == [{"role": "user", "content": "hello claude"}]
    assert params["max_tokens"] == 40
    for cid, kind, words in (
        ("web", "unsupported_parameter", ("web_search", "Claude", "OpenAI")),
        ("prev", "unsupported_parameter", ("previous_response_id", "Claude")),
        # the capability table: the target, what it cannot serve, and a model that can
        ("emb", "unsupported_endpoint", ("embeddings", "claude", " can")),
    ):
        assert rows[cid]["status"] == "invalid", rows[cid]
        assert rows[cid]["error_type"] == kind, rows[cid]
        assert all(w in rows[cid]["error_message"] for w in words), rows[cid]["error_message"]
