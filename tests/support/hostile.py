"""Hostile input for the intake tests: hypothesis strategies that put arbitrary JSON values,
huge numbers, deep nesting and odd strings at every field of the three input formats, and
an in-process ingest that returns one row per line."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
from hypothesis import strategies as st

from batchd.config.settings import load_settings
from batchd.intake.ingest import IngestStats, ingest
from batchd.intake.lines import open_source
from batchd.planning.chunking import Chunker
from batchd.run.services import Services, open_services
from batchd.storage.chunk_outcomes import read_outcome_batches

OPENAI_MODEL = "gpt-5.4-nano"
CLAUDE_MODEL = "claude-haiku-4-5"
EMBEDDING_MODEL = "text-embedding-3-small"
COMPLETION_MODEL = "gpt-3.5-turbo-instruct"
ODD_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ufeff",
    "\ufeffx",
    "\ud800",
    "x\udfff",
    "\ud83d\ude00",
    "\u2028\u2029",
    "\\u0000",
    '"',
    "\\",
    "{",
    "]" * 50,
    "é" * 3,
    "\U0010ffff",
]
HUGE_NUMBERS = [
    0,
    -1,
    2**31,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63) - 1,
    10**20,
    10**40,
    1e308,
    -1e308,
    5e-324,
    1796112511000,
]

odd_text = st.one_of(
    st.sampled_from(ODD_STRINGS),
    st.text(alphabet=st.characters(blacklist_categories=()), max_size=12),
)
numbers = st.one_of(
    st.sampled_from(HUGE_NUMBERS),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, odd_text)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(odd_text, inner, max_size=4)
    ),
    max_leaves=12,
)


def _messages(text: str = "hi") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# The other endpoints: (body of a valid request, the models a line of it may name; a Claude
# model exercises the translation or its refusal).
ENDPOINT_BODIES: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "embeddings": (
        {"input": "doc", "dimensions": 256, "encoding_format": "base64"},
        (EMBEDDING_MODEL, CLAUDE_MODEL),
    ),
    "completions": ({"prompt": "once upon", "max_tokens": 8}, (COMPLETION_MODEL, CLAUDE_MODEL)),
    "responses": (
        {
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "q"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            ],
            "instructions": "be brief",
            "max_output_tokens": 8,
            "reasoning": {"effort": "low"},
            "text": {"format": {"type": "json_schema", "name": "n", "schema": {}}},
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "tool_choice": "auto",
        },
        (OPENAI_MODEL, CLAUDE_MODEL),
    ),
}
_ENDPOINT_PATHS = [
    ("input",),
    ("input", 0),
    ("input", 0, "content"),
    ("input", 0, "content", 0),
    ("input", 0, "content", 0, "text"),
    ("input", 0, "role"),
    ("input", 1),
    ("input", 1, "name"),
    ("input", 1, "arguments"),
    ("input", 2, "output"),
    ("prompt",),
    ("prompt", 0),
    ("dimensions",),
    ("encoding_format",),
    ("instructions",),
    ("max_output_tokens",),
    ("max_tokens",),
    ("reasoning",),
    ("reasoning", "effort"),
    ("reasoning", "summary"),
    ("text",),
    ("text", "format"),
    ("text", "format", "schema"),
    ("tools",),
    ("tools", 0),
    ("tools", 0, "type"),
    ("tools", 0, "parameters"),
    ("tool_choice",),
    ("previous_response_id",),
    ("messages",),
    ("stream",),
]


def endpoint_line(fmt: str, endpoint: str, model: str, n: int) -> dict[str, Any]:
    """A valid line of another endpoint: OpenAI format (url) or native ("endpoint")."""
    body = {"model": model, **ENDPOINT_BODIES[endpoint][0]}
    if fmt == "openai":
        url = f"/v1/{endpoint}"
        return {"custom_id": f"r{n}", "method": "POST", "url": url, "body": body}
    return {"id": f"r{n}", "endpoint": endpoint, **body, "metadata": {"tenant": "t"}}


def base_line(fmt: str, model: str, n: int) -> dict[str, Any]:
    """A valid line of one format; `n` keeps ids and prompts apart."""
    if fmt == "mistral":  # Mistral / Together: custom_id and body, no method, no url
        return {"custom_id": f"r{n}", "body": {"model": model, "messages": _messages(f"q{n}")}}
    if fmt == "openai":
        return {
            "custom_id": f"r{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": _messages(f"q{n}"), "max_tokens": 8},
        }
    if fmt == "anthropic":
        return {
            "custom_id": f"r{n}",
            "params": {"model": model, "max_tokens": 8, "messages": _messages(f"q{n}")},
        }
    return {
        "id": f"r{n}",
        "model": model,
        "messages": _messages(f"q{n}"),
        "max_tokens": 8,
        "deadline": "2099-01-01T00:00:00Z",
        "metadata": {"tenant": "t", "tags": {"k": "v"}},
    }


# Every field of each format (a path of keys and indexes) a hostile value may replace.
FIELD_PATHS: dict[str, list[tuple[Any, ...]]] = {
    "openai": [
        ("custom_id",),
        ("method",),
        ("url",),
        ("body",),
        ("body", "model"),
        ("body", "messages"),
        ("body", "messages", 0),
        ("body", "messages", 0, "role"),
        ("body", "messages", 0, "content"),
        ("body", "max_tokens"),
        ("body", "temperature"),
        ("body", "stop"),
        ("body", "tools"),
        ("body", "tool_choice"),
        ("body", "stream"),
        ("body", "user"),
        ("body", "seed"),
        ("body", "max_completion_tokens"),
    ],
    "anthropic": [
        ("custom_id",),
        ("params",),
        ("params", "model"),
        ("params", "max_tokens"),
        ("params", "messages"),
        ("params", "messages", 0),
        ("params", "messages", 0, "content"),
        ("params", "system"),
        ("params", "stream"),
        ("params", "tools"),
        ("params", "temperature"),
    ],
    "mistral": [
        ("custom_id",),
        ("body",),
        ("body", "model"),
        ("body", "messages"),
        ("body", "messages", 0, "content"),
        ("body", "input"),
        ("url",),
        ("method",),
    ],
    "native": [
        ("endpoint",),
        ("id",),
        ("model",),
        ("messages",),
        ("messages", 0),
        ("messages", 0, "role"),
        ("messages", 0, "content"),
        ("prompt",),
        ("system",),
        ("max_tokens",),
        ("deadline",),
        ("cache",),
        ("metadata",),
        ("metadata", "tenant"),
        ("metadata", "tags"),
        ("temperature",),
        ("stop",),
        ("tools",),
        ("tool_choice",),
        ("stream",),
        ("top_k",),
    ],
}


def put(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    """`obj` with the value at `path` replaced (containers made on the way as needed)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, dict):
        return {**obj, head: put(obj.get(head), rest, value)}
    if isinstance(obj, list) and isinstance(head, int) and head < len(obj):
        return [*obj[:head], put(obj[head], rest, value), *obj[head + 1 :]]
    return put({}, path, value) if isinstance(head, str) else [put(None, rest, value)]


def encode(obj: Any) -> bytes:
    """JSON as another tool would write it: lone surrogates as \\u escapes, NaN as NaN."""
    return json.dumps(obj).encode()


@st.composite
def hostile_lines(
    draw: st.DrawFn,
    models: tuple[str, ...] = (OPENAI_MODEL, CLAUDE_MODEL),
    endpoints: tuple[str, ...] = ("chat", "chat", *ENDPOINT_BODIES),
) -> bytes:
    """One line: a valid request of some format with one field hostile, or raw damage.

    `endpoints`: what the OpenAI-format and native lines ask for (chat, or another endpoint).
    """
    fmt = draw(
        st.sampled_from(sorted(FIELD_PATHS) if "chat" in endpoints else ["openai", "native"])
    )
    n = draw(st.integers(0, 10**6))
    paths = FIELD_PATHS[fmt]
    endpoint = draw(st.sampled_from(endpoints))
    if fmt in ("openai", "native") and endpoint != "chat":
        line = endpoint_line(fmt, endpoint, draw(st.sampled_from(ENDPOINT_BODIES[endpoint][1])), n)
        inside = ("body",) if fmt == "openai" else ()
        paths = [p for p in paths if len(p) == 1] + [(*inside, *p) for p in _ENDPOINT_PATHS]
    else:
        line = base_line(fmt, draw(st.sampled_from(models)), n)
    kind = draw(st.sampled_from(["field", "field", "field", "deep", "raw", "valid"]))
    if kind == "valid":
        return encode(line)
    if kind == "field":
        path = draw(st.sampled_from(paths))
        return encode(put(line, path, draw(json_values)))
    if kind == "deep":
        depth = draw(st.sampled_from([2, 100, 127, 128, 129, 1000, 5000]))
        path = draw(st.sampled_from(paths))
        text = encode(put(line, path, "@@"))
        return text.replace(b'"@@"', b"[" * depth + b"]" * depth, 1)
    damage = draw(
        st.sampled_from(
            [
                b"\xef\xbb\xbf",  # a BOM before the line
                b"   ",
                b"\x00",
                b"\xed\xa0\x80",  # a raw surrogate (not UTF-8)
                b"\xff",
                b"}",
                b"\r",
            ]
        )
    )
    text = encode(line)
    at = draw(st.integers(0, len(text)))
    return text[:at] + damage + text[at:]


def open_test_services(tmp: Path, **env: str) -> Services:
    return open_services(load_settings(environ={"BATCHD_HOME": str(tmp / "home"), **env}))


class _Keep(io.BytesIO):
    def close(self) -> None:  # keep the bytes readable after the chunker closes the file
        pass


def ingest_rows(
    svc: Services,
    data: bytes,
    workers: int = 1,
    dry_run: bool = False,
    source: Path | None = None,
    **options: Any,
) -> tuple[IngestStats, list[dict[str, Any]], dict[str, bytes]]:
    """ingest() as pipeline.ingest_run wires it (chunk files in memory); the lines rows and
    every chunk file's bytes, after the chunker finished. With `source`, data is written
    there and read from the file (as a local input is), not from memory."""
    files: dict[str, io.BytesIO] = {}

    def open_file(rel: str) -> io.BytesIO | None:
        if dry_run:
            return None
        files[rel] = _Keep()
        return files[rel]

    chunker = Chunker(
        "hostile",
        svc.settings,
        svc.prices,
        svc.backends,
        open_file,
        run_deadline_at=float("inf"),
        router=svc.router,
        dry_run=dry_run,
    )
    batches: list[pa.RecordBatch] = []
    if source is not None:
        source.write_bytes(data)
    stream = open_source(source) if source is not None else io.BytesIO(data)
    with stream:
        stats = _ingest_rows(svc, chunker, stream, batches, workers, **options)
    chunks = chunker.finish()
    rows = pa.Table.from_batches(batches).to_pylist() if batches else []
    return stats, rows, {c.path: files[c.path].getvalue() for c in chunks if c.path in files}


def _ingest_rows(
    svc: Services,
    chunker: Chunker,
    stream: Any,
    batches: list[pa.RecordBatch],
    workers: int,
    **options: Any,
) -> IngestStats:
    return ingest(
        stream,
        router=svc.router,
        chunker=chunker,
        cache=svc.cache,
        default_tenant="t",
        run_salt="salt",
        write_rows=batches.append,
        workers=workers,
        **options,
    )


def vendor_lines(files: dict[str, bytes]) -> list[bytes]:
    """The lines of every chunk a vendor would receive (`.jsonl`), not the planner's part of
    the requests it failed as unmeetable (a `.parts` file of outcomes, never sent)."""
    return [x for path, b in files.items() if path.endswith(".jsonl") for x in b.splitlines()]


def planner_failures(files: dict[str, bytes]) -> int:
    """How many requests the planner failed (no target finishes them by their deadline)."""
    parts = [b for path, b in files.items() if path.endswith(".parts")]
    return sum(b.num_rows for p in parts for b in read_outcome_batches(io.BytesIO(p)))


def check_one_row_per_line(stats: IngestStats, rows: list[dict[str, Any]], n_lines: int) -> None:
    """Exactly one row per input line, in order; every invalid row says why."""
    assert stats.lines == n_lines
    assert [r["line_no"] for r in rows] == list(range(1, n_lines + 1))
    assert stats.valid + stats.invalid == n_lines
    for r in rows:
        if r["state"] == "invalid":
            assert r["error_type"] and r["error_message"], r
        else:
            assert r["error_type"] is None and r["request_key"] is not None, r


SAMPLING = ["temperature", "top_p", "top_k", "seed", "n", "stop", "presence_penalty"]
ODD_KEYS = ["stream", "user", "metadata", "max_completion_tokens", "tools", "endpoint", "name"]


@st.composite
def near_plain_lines(
    draw: st.DrawFn, models: tuple[str, ...] = (OPENAI_MODEL, CLAUDE_MODEL, "gpt-5-mini")
) -> bytes:
    """A plain chat line of some format, or one a single step away from plain: sampling
    parameters with any value, a system prompt, metadata, a deadline, cache, an extra key
    the fast path must not take, a message with a third key or non-string content."""
    fmt = draw(st.sampled_from(sorted(FIELD_PATHS)))
    line = base_line(fmt, draw(st.sampled_from(models)), draw(st.integers(0, 10**6)))
    body = {"openai": line.get("body"), "anthropic": line.get("params")}.get(fmt, line)
    assert isinstance(body, dict)
    if fmt == "native" and draw(st.booleans()):
        del line["deadline"]
    if fmt == "native" and draw(st.booleans()):
        line["prompt"] = line.pop("messages")[0]["content"]
    for name in draw(st.lists(st.sampled_from(SAMPLING), max_size=3, unique=True)):
        body[name] = draw(st.one_of(numbers, st.none(), odd_text, st.lists(odd_text, max_size=2)))
    if fmt != "openai" and draw(st.booleans()):
        body["system"] = draw(st.one_of(odd_text, st.none(), json_values))
    if fmt == "native" and draw(st.booleans()):
        line["metadata"] = draw(
            st.one_of(
                st.none(),
                st.fixed_dictionaries(
                    {"tenant": st.one_of(odd_text, st.none())},
                    optional={"tags": st.one_of(json_values, st.dictionaries(odd_text, odd_text))},
                ),
            )
        )
    if fmt == "native" and draw(st.booleans()):
        line["cache"] = draw(st.one_of(st.booleans(), scalars))
    if fmt == "native" and draw(st.booleans()):
        line["deadline"] = draw(st.one_of(numbers, odd_text, st.just("2030-01-01T00:00:00Z")))
    if draw(st.integers(0, 3)) == 0:
        body[draw(st.sampled_from(ODD_KEYS))] = draw(json_values)
    if draw(st.integers(0, 4)) == 0 and isinstance(body.get("messages"), list):
        m = dict(body["messages"][0])
        m[draw(st.sampled_from(["name", "content", "role"]))] = draw(json_values)
        body["messages"] = [m, *draw(st.lists(st.just({"role": "user", "content": "b"})))]
    if draw(st.integers(0, 4)) == 0:
        body["max_tokens"] = draw(st.one_of(numbers, st.none(), st.booleans()))
    return encode(line)
