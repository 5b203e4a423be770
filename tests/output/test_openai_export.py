"""`--export openai-jsonl`: every row as OpenAI's batch output file holds it, whoever answered.

Rows of OpenAI, Claude and Gemini come from real runs against the emulators (real SDKs);
vLLM-shaped rows from the vLLM backend's own outcome builder; endpoints the emulators do not
serve yet from rows in the common answer shape. Each line is read back with the `openai`
SDK's types.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response
from openai.types.shared import ErrorObject

from batchd.backends.vllm.answers import outcome_of
from batchd.backends.vllm.engine import GenResult
from batchd.backends.vllm.prompts import plan_of
from batchd.outcome import CANCELED, EXPIRED, SUCCEEDED, Outcome
from batchd.output.openai_export import export_line
from batchd.output.results import RESULTS_SCHEMA, write_openai_jsonl
from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.gemini_batch import GeminiBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import Batchd, chat, write_jsonl

ENVELOPE = {"id", "custom_id", "response", "error"}


def _check_envelope(line: dict[str, Any]) -> None:
    assert set(line) == ENVELOPE
    assert isinstance(line["id"], str) and isinstance(line["custom_id"], str)
    assert (line["response"] is None) != (line["error"] is None)
    if line["response"] is not None:
        assert set(line["response"]) == {"status_code", "request_id", "body"}
        if line["response"]["status_code"] != 200:
            ErrorObject.model_validate(line["response"]["body"]["error"])
    else:
        assert set(line["error"]) == {"code", "message"}


def test_a_mixed_run_exports_every_row_as_openai_writes_it(
    batchd: Batchd,
    emulator: OpenAIBatchEmulator,
    claude: AnthropicBatchEmulator,
    gemini: GeminiBatchEmulator,
) -> None:
    src = write_jsonl(
        batchd.tmp / "mixed.jsonl",
        [
            chat("gpt", "openai question"),
            chat("claude", "claude question", model="claude-haiku-4-5", max_tokens=50),
            chat("gem", "gemini question", model="gemini-2.5-flash"),
            chat("gpt-bad", "[[error:400]] bad", model="gpt-5.4-nano"),
            chat("claude-bad", "[[errored:invalid]] x", model="claude-haiku-4-5"),
            chat("refused", "x", model="claude-haiku-4-5", logprobs=True),
        ],
    )
    proc = batchd.submit(src, "--export", "openai-jsonl")
    assert proc.returncode == 3, proc.stderr
    rows = {r["custom_id"]: r for r in batchd.results()}
    text = (batchd.only_run_dir() / "results.openai.jsonl").read_text()
    export = {e["custom_id"]: e for e in map(json.loads, text.splitlines())}
    assert list(export) == list(rows)
    for line in export.values():
        _check_envelope(line)
    for cid in ("gpt", "claude", "gem"):
        body = ChatCompletion.model_validate(export[cid]["response"]["body"])
        assert body.object == "chat.completion"
        assert body.choices[0].message.content == rows[cid]["output_text"]
        assert body.choices[0].finish_reason == rows[cid]["finish_reason"] == "stop"
        assert export[cid]["response"]["request_id"] == rows[cid]["request_id"]
        assert rows[cid]["request_id"]  # every vendor gave its own id for the request
    # OpenAI's own answer is exported as it came; the others are built from the common columns.
    assert export["gpt"]["response"]["body"] == json.loads(rows["gpt"]["response_json"])
    claude_body = ChatCompletion.model_validate(export["claude"]["response"]["body"])
    assert claude_body.model == "claude-haiku-4-5"
    assert claude_body.usage is not None
    assert claude_body.usage.prompt_tokens == rows["claude"]["input_tokens"]
    assert claude_body.usage.completion_tokens == rows["claude"]["output_tokens"]
    assert rows["claude"]["request_id"].startswith("msg_")
    gem = ChatCompletion.model_validate(export["gem"]["response"]["body"])
    assert gem.choices[0].message.content == "echo: gemini question"
    # Failures: the vendor's HTTP status and error, batchd's refusals as a 400.
    assert export["gpt-bad"]["response"]["status_code"] == 400
    assert export["gpt-bad"]["response"]["request_id"].startswith("req_")
    assert export["claude-bad"]["response"]["status_code"] == 400
    assert export["claude-bad"]["response"]["body"]["error"]["code"] == "invalid_request_error"
    refused = export["refused"]["response"]
    assert refused["status_code"] == 400 and refused["request_id"] is None
    assert refused["body"]["error"]["code"] == "unsupported_parameter"
    assert "cannot return logprobs" in refused["body"]["error"]["message"]


def _row(o: Outcome, line_no: int = 1, **extra: Any) -> dict[str, Any]:
    """A result row holding an outcome (the columns the export reads)."""
    row = {name: None for name in RESULTS_SCHEMA.names}
    row.update(
        {k: v for k, v in msgspec.structs.asdict(o).items() if k in RESULTS_SCHEMA.names},
        run_id="run-x",
        line_no=line_no,
        custom_id=f"c{line_no}",
        request_key="ab" * 16,
        model_requested="m",
        **extra,
    )
    return row


def test_vllm_rows() -> None:
    gen = GenResult(text="hello", output_tokens=2, prompt_tokens=5, finish_reason="length")
    chat = plan_of(
        "chat",
        {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
        "generate",
        "",
        "tiny",
    )
    chat_row = _row(outcome_of("vid", "tiny", chat, gen, 2.0), backend="vllm")
    body = ChatCompletion.model_validate(export_line(chat_row, "chat", None)["response"]["body"])
    assert body.choices[0].message.content == "hello" and body.choices[0].finish_reason == "length"
    text = plan_of("completions", {"model": "tiny", "prompt": "hi"}, "generate", "", "tiny")
    text_row = _row(outcome_of("vid", "tiny", text, gen, 2.0), backend="vllm")
    line = export_line(text_row, "completions", None)
    done = Completion.model_validate(line["response"]["body"])
    assert done.choices[0].text == "hello" and done.usage is not None
    assert done.usage.prompt_tokens == 5


def test_responses_completions_and_tool_calls_from_the_common_columns() -> None:
    calls = [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]
    o = Outcome(
        status=SUCCEEDED,
        backend="anthropic",
        model_used="claude-haiku-4-5",
        output_text="",
        finish_reason="tool_calls",
        tool_calls=json.dumps(calls),
        response_json='{"type": "message", "content": []}',
        input_tokens=10,
        output_tokens=4,
        reasoning_tokens=1,
        request_id="msg_1",
    )
    line = export_line(_row(o), "chat", None)
    body = ChatCompletion.model_validate(line["response"]["body"])
    message = body.choices[0].message
    assert message.tool_calls is not None and message.content is None
    call: Any = message.tool_calls[0]
    assert call.function.name == "f" and json.loads(call.function.arguments) == {"a": 1}
    assert body.choices[0].finish_reason == "tool_calls"
    assert line["response"]["request_id"] == "msg_1"
    resp = Response.model_validate(export_line(_row(o), "responses", None)["response"]["body"])
    assert resp.status == "completed" and resp.output[0].type == "function_call"
    assert resp.usage is not None and resp.usage.output_tokens_details.reasoning_tokens == 1
    cut = msgspec.structs.replace(o, output_text="partial", finish_reason="length", tool_calls=None)
    resp = Response.model_validate(export_line(_row(cut), "responses", None)["response"]["body"])
    assert resp.status == "incomplete" and resp.output_text == "partial"
    assert resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_output_tokens"


def test_embeddings_floats_or_base64() -> None:
    vector = [0.25, -1.5, 3.0]
    o = Outcome(status=SUCCEEDED, backend="vllm", model_used="minilm", embedding=vector)
    line = export_line(_row(o, input_tokens=3), "embeddings", None)
    body = CreateEmbeddingResponse.model_validate(line["response"]["body"])
    assert body.data[0].embedding == vector and body.usage.prompt_tokens == 3
    raw = export_line(_row(o), "embeddings", "base64")["response"]["body"]["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(raw), dtype="<f4")
    assert decoded.tolist() == vector


def test_lines_that_never_ran() -> None:
    expired = Outcome(status=EXPIRED, backend="anthropic", error_type="expired")
    line = export_line(_row(expired), "chat", None)
    _check_envelope(line)
    assert line["error"]["code"] == "batch_expired"
    canceled = Outcome(status=CANCELED, backend="gemini", error_type="canceled")
    assert export_line(_row(canceled), "chat", None)["error"]["code"] == "batch_cancelled"


def test_write_openai_jsonl_reads_the_endpoint_from_the_lines_part() -> None:
    o = Outcome(status=SUCCEEDED, backend="vllm", model_used="minilm", embedding=[1.0])
    rows = pa.RecordBatch.from_pylist([_row(o)], schema=RESULTS_SCHEMA)
    lines = pa.RecordBatch.from_pylist(
        [{"endpoint": "embeddings", "encoding_format": None}],
        schema=pa.schema([("endpoint", pa.string()), ("encoding_format", pa.string())]),
    )
    out = io.BytesIO()
    write_openai_jsonl(rows, out, lines)
    (line,) = [json.loads(x) for x in out.getvalue().splitlines()]
    assert CreateEmbeddingResponse.model_validate(line["response"]["body"]).data[0].embedding == [
        1.0
    ]
