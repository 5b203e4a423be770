"""Input side of batchd: line parsing (three formats), cache keys, line streaming,
ingest accounting, the in-run seen set, settings and the price book (DESIGN §3)."""

from __future__ import annotations

import gzip
import io
import json
import random
import re
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchd.config.pricing import PriceBook, Usage, load_price_book
from batchd.config.settings import load_settings
from batchd.errors import BatchdError
from batchd.intake.ingest import CACHE_EXACT, CACHE_IN_RUN, CACHE_NONE, CACHED, PENDING, ingest
from batchd.intake.lines import (
    MAX_LINE_BYTES,
    iter_blocks,
    iter_lines,
    lines_in,
    lines_of,
    open_source,
)
from batchd.intake.seen import HashSeen, SeenSet, _keyset
from batchd.outcome import INVALID, SUCCEEDED, Outcome
from batchd.planning.chunking import Chunker
from batchd.requests import Invalid, Request, parse_request
from batchd.run.pipeline import plan_file
from batchd.run.services import Services, open_services

CHAT = "/v1/chat/completions"
MODEL = "gpt-4o-mini"
USER = {"role": "user", "content": "Say hi"}


# ---------------------------------------------------------------------------
# helpers and fixtures


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # load_settings reads ./batchd.toml when no path is given: keep it out of the repo.
    monkeypatch.chdir(tmp_path)


def oa(body: dict[str, Any], custom_id: str | None = "r1", **extra: Any) -> dict[str, Any]:
    line: dict[str, Any] = {"method": "POST", "url": CHAT, "body": body, **extra}
    if custom_id is not None:
        line["custom_id"] = custom_id
    return line


def an(params: dict[str, Any], custom_id: str | None = "r1", **extra: Any) -> dict[str, Any]:
    line: dict[str, Any] = {"params": params, **extra}
    if custom_id is not None:
        line["custom_id"] = custom_id
    return line


def ok(obj: Any, line_no: int = 1, tenant: str = "acme") -> Request:
    r = parse_request(obj, line_no, tenant)
    assert type(r) is Request, r
    return r


def bad(obj: Any, line_no: int = 1, tenant: str = "acme") -> Invalid:
    r = parse_request(obj, line_no, tenant)
    assert type(r) is Invalid, r
    return r


def key(obj: Any, tenant: str = "acme") -> bytes:
    return ok(obj, 1, tenant).key


def settings_env(tmp_path: Path, **env: str) -> dict[str, str]:
    return {"BATCHD_HOME": str(tmp_path / "home"), **env}


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Services]:
    s = open_services(load_settings(environ=settings_env(tmp_path)))
    yield s
    s.close()


def jl(*objs: Any) -> bytes:
    """JSONL bytes; bytes items are written as they are (raw bad lines)."""
    out = []
    for o in objs:
        out.append(o if isinstance(o, bytes) else json.dumps(o).encode())
    return b"\n".join(out) + b"\n"


def run_ingest(
    svc: Services,
    data: bytes,
    *,
    cache: bool = False,
    tenant: str = "default",
    max_line_bytes: int = MAX_LINE_BYTES,
) -> tuple[Any, list[dict[str, Any]], list[Any]]:
    """ingest() wired like pipeline.plan_file (dry run), also collecting the rows."""
    chunker = Chunker(
        "plan",
        svc.settings,
        svc.prices,
        svc.backends,
        lambda _: None,
        run_deadline_at=float("inf"),
    )
    batches: list[pa.RecordBatch] = []
    stats = ingest(
        io.BytesIO(data),
        router=svc.router,
        chunker=chunker,
        cache=svc.cache if cache else None,
        default_tenant=tenant,
        run_salt="plan",
        write_rows=batches.append,
        max_line_bytes=max_line_bytes,
    )
    rows = pa.Table.from_batches(batches).to_pylist() if batches else []
    return stats, rows, chunker.finish()


def accounted(stats: Any) -> None:
    # Blank lines have rows too (invalid, blank_line): every line is valid or invalid.
    assert stats.valid + stats.invalid == stats.lines
    assert stats.invalid_by_type.get("blank_line", 0) == stats.blank
    assert sum(stats.invalid_by_type.values()) == stats.invalid
    assert stats.unique + stats.in_run_duplicates == stats.valid


# ---------------------------------------------------------------------------
# parse_request: the three formats


def test_openai_line_fields_and_body_passthrough() -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "system", "content": "Be brief."}, USER],
        "max_completion_tokens": 64,
        "temperature": 0.2,
        "logit_bias": {"50256": -100},
        "x_vendor_future_field": {"nested": [1, 2, 3]},
    }
    original = json.loads(json.dumps(body))
    r = ok(oa(body, custom_id="req-7"), line_no=7, tenant="acme")
    assert r.line_no == 7
    assert r.custom_id == "req-7"
    assert r.fmt == "openai"
    assert r.model == MODEL
    assert r.tenant == "acme"
    assert r.tags == {}
    assert r.cache_ok is True
    assert r.deadline_at is None
    assert r.body == original  # unknown fields intact, nothing added or dropped
    assert len(r.key) == 16


def test_anthropic_line_fields_system_folded_and_unknown_params_kept() -> None:
    params = {
        "model": "claude-haiku-4-5",
        "max_tokens": 100,
        "system": "You are terse.",
        "messages": [USER],
        "top_k": 5,
        "stop_sequences": ["END"],
    }
    r = ok(an(params, custom_id="ant-1"), line_no=3)
    assert (r.custom_id, r.fmt, r.model, r.line_no) == ("ant-1", "anthropic", "claude-haiku-4-5", 3)
    assert r.tenant == "acme"
    assert r.cache_ok is True
    assert "system" not in r.body
    assert r.body["messages"] == [{"role": "system", "content": "You are terse."}, USER]
    assert r.body["max_tokens"] == 100
    assert r.body["top_k"] == 5
    assert r.body["stop_sequences"] == ["END"]
    assert r.body["model"] == "claude-haiku-4-5"


def test_anthropic_line_without_system_keeps_messages() -> None:
    r = ok(an({"model": MODEL, "max_tokens": 5, "messages": [USER]}))
    assert r.body == {"model": MODEL, "max_tokens": 5, "messages": [USER]}


def test_native_line_fields() -> None:
    obj = {
        "id": "n-1",
        "model": MODEL,
        "messages": [USER],
        "max_tokens": 32,
        "temperature": 0.7,
        "seed": 11,
        "metadata": {"tenant": "team-b", "tags": {"job": "eval", "split": "test"}},
        "deadline": "2026-07-01T12:00:00Z",
        "cache": False,
    }
    r = ok(obj, line_no=12, tenant="acme")
    assert r.custom_id == "n-1"
    assert r.fmt == "native"
    assert r.model == MODEL
    assert r.tenant == "team-b"
    assert r.tags == {"job": "eval", "split": "test"}
    assert r.cache_ok is False
    assert r.deadline_at == datetime(2026, 7, 1, 12, 0, tzinfo=UTC).timestamp()
    # The vendor body: the sampling fields, none of the envelope.
    assert r.body == {
        "model": MODEL,
        "messages": [USER],
        "max_tokens": 32,
        "temperature": 0.7,
        "seed": 11,
    }


def test_native_prompt_and_system() -> None:
    r = ok({"model": MODEL, "prompt": "Hello there", "system": "Be kind."})
    assert r.body["messages"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hello there"},
    ]
    assert "prompt" not in r.body and "system" not in r.body


@pytest.mark.parametrize(
    "obj",
    [
        {"model": MODEL, "messages": [USER]},
        oa({"model": MODEL, "messages": [USER]}, custom_id=None),
        an({"model": MODEL, "max_tokens": 5, "messages": [USER]}, custom_id=None),
    ],
    ids=["native", "openai", "anthropic"],
)
def test_missing_id_defaults_to_line_number(obj: dict[str, Any]) -> None:
    assert ok(obj, line_no=42).custom_id == "line-42"
    assert ok(obj, line_no=1).custom_id == "line-1"


def test_native_metadata_defaults_and_tag_list() -> None:
    r = ok({"model": MODEL, "prompt": "x"}, tenant="fallback")
    assert (r.tenant, r.tags, r.cache_ok, r.deadline_at) == ("fallback", {}, True, None)
    r = ok({"model": MODEL, "prompt": "x", "metadata": {"tags": ["a", "b"]}}, tenant="fallback")
    assert r.tenant == "fallback"
    assert r.tags == {"a": "", "b": ""}
    r = ok({"model": MODEL, "prompt": "x", "metadata": {"tenant": "t2"}})
    assert (r.tenant, r.tags) == ("t2", {})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_780_000_000, 1_780_000_000.0),
        (1_780_000_000.5, 1_780_000_000.5),
        ("2026-07-01T12:00:00+02:00", datetime(2026, 7, 1, 10, 0, tzinfo=UTC).timestamp()),
        ("2026-07-01T12:00:00Z", datetime(2026, 7, 1, 12, 0, tzinfo=UTC).timestamp()),
    ],
)
def test_deadline_values(value: Any, expected: float) -> None:
    r = ok({"model": MODEL, "prompt": "x", "deadline": value})
    assert r.deadline_at == pytest.approx(expected)
    assert isinstance(r.deadline_at, float)


# ---------------------------------------------------------------------------
# parse_request: invalid lines


INVALID_CASES = [
    # no model
    ("no_model_native", {"id": "a", "messages": [USER]}, "missing_model"),
    ("empty_model_native", {"id": "a", "model": "", "messages": [USER]}, "missing_model"),
    ("int_model_native", {"id": "a", "model": 4, "messages": [USER]}, "missing_model"),
    ("no_model_openai", oa({"messages": [USER]}, custom_id="a"), "missing_model"),
    (
        "no_model_anthropic",
        an({"max_tokens": 5, "messages": [USER]}, custom_id="a"),
        "missing_model",
    ),
    # no messages / prompt, or empty messages
    ("no_messages_native", {"id": "a", "model": MODEL}, "missing_messages"),
    ("empty_messages_native", {"id": "a", "model": MODEL, "messages": []}, "missing_messages"),
    ("prompt_not_str_native", {"id": "a", "model": MODEL, "prompt": 5}, "missing_messages"),
    ("no_messages_openai", oa({"model": MODEL}, custom_id="a"), "missing_messages"),
    (
        "empty_messages_openai",
        oa({"model": MODEL, "messages": []}, custom_id="a"),
        "missing_messages",
    ),
    (
        "empty_messages_anthropic",
        an({"model": MODEL, "max_tokens": 5, "messages": []}, custom_id="a"),
        "missing_messages",
    ),
    ("message_not_object", {"id": "a", "model": MODEL, "messages": ["hi"]}, "bad_messages"),
    (
        "message_without_role",
        {"id": "a", "model": MODEL, "messages": [{"content": "hi"}]},
        "bad_messages",
    ),
    # OpenAI envelope
    (
        "wrong_url",
        {
            "custom_id": "a",
            "method": "POST",
            "url": "/v1/moderations",
            "body": {"model": MODEL, "input": "x"},
        },
        "bad_url",
    ),
    (
        "chat_body_on_embeddings_url",
        {
            "custom_id": "a",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": MODEL, "messages": [USER]},
        },
        "bad_body",
    ),
    (
        "wrong_method",
        {
            "custom_id": "a",
            "method": "GET",
            "url": CHAT,
            "body": {"model": MODEL, "messages": [USER]},
        },
        "bad_method",
    ),
    (
        "missing_method",
        {"custom_id": "a", "url": CHAT, "body": {"model": MODEL, "messages": [USER]}},
        "bad_method",
    ),
    ("body_not_object", {"custom_id": "a", "method": "POST", "url": CHAT, "body": "x"}, "bad_body"),
    ("params_not_object", {"custom_id": "a", "params": ["x"]}, "bad_params"),
    # max_tokens not a positive integer
    (
        "max_tokens_zero",
        {"id": "a", "model": MODEL, "prompt": "x", "max_tokens": 0},
        "bad_max_tokens",
    ),
    (
        "max_tokens_negative",
        {"id": "a", "model": MODEL, "prompt": "x", "max_tokens": -5},
        "bad_max_tokens",
    ),
    (
        "max_tokens_string",
        {"id": "a", "model": MODEL, "prompt": "x", "max_tokens": "10"},
        "bad_max_tokens",
    ),
    (
        "max_tokens_float",
        {"id": "a", "model": MODEL, "prompt": "x", "max_tokens": 10.0},
        "bad_max_tokens",
    ),
    (
        "max_tokens_bool",
        {"id": "a", "model": MODEL, "prompt": "x", "max_tokens": True},
        "bad_max_tokens",
    ),
    (
        "max_tokens_null",
        {"id": "a", "model": MODEL, "prompt": "x", "max_tokens": None},
        "bad_max_tokens",
    ),
    (
        "max_completion_tokens_zero_openai",
        oa({"model": MODEL, "messages": [USER], "max_completion_tokens": 0}, custom_id="a"),
        "bad_max_tokens",
    ),
    (
        "max_tokens_float_openai",
        oa({"model": MODEL, "messages": [USER], "max_tokens": 1.5}, custom_id="a"),
        "bad_max_tokens",
    ),
    (
        "max_tokens_string_anthropic",
        an({"model": MODEL, "max_tokens": "5", "messages": [USER]}, custom_id="a"),
        "bad_max_tokens",
    ),
    (
        "max_tokens_missing_anthropic",
        an({"model": MODEL, "messages": [USER]}, custom_id="a"),
        "bad_max_tokens",
    ),
    # metadata
    (
        "metadata_string",
        {"id": "a", "model": MODEL, "prompt": "x", "metadata": "t"},
        "bad_metadata",
    ),
    (
        "metadata_list",
        {"id": "a", "model": MODEL, "prompt": "x", "metadata": ["t"]},
        "bad_metadata",
    ),
    (
        "tenant_int",
        {"id": "a", "model": MODEL, "prompt": "x", "metadata": {"tenant": 3}},
        "bad_metadata",
    ),
    (
        "tenant_empty",
        {"id": "a", "model": MODEL, "prompt": "x", "metadata": {"tenant": ""}},
        "bad_metadata",
    ),
    (
        "tags_string",
        {"id": "a", "model": MODEL, "prompt": "x", "metadata": {"tags": "x"}},
        "bad_metadata",
    ),
    # deadline
    (
        "deadline_words",
        {"id": "a", "model": MODEL, "prompt": "x", "deadline": "tomorrow"},
        "bad_deadline",
    ),
    (
        "deadline_no_zone",
        {"id": "a", "model": MODEL, "prompt": "x", "deadline": "2026-07-01T12:00:00"},
        "bad_deadline",
    ),
    ("deadline_bool", {"id": "a", "model": MODEL, "prompt": "x", "deadline": True}, "bad_deadline"),
    (
        "deadline_object",
        {"id": "a", "model": MODEL, "prompt": "x", "deadline": {"h": 1}},
        "bad_deadline",
    ),
]


@pytest.mark.parametrize(
    ("obj", "error_type"), [c[1:] for c in INVALID_CASES], ids=[c[0] for c in INVALID_CASES]
)
def test_invalid_lines(obj: Any, error_type: str) -> None:
    inv = bad(obj, line_no=9)
    assert inv.error_type == error_type
    assert inv.line_no == 9
    assert inv.custom_id == "a"  # the line's own id is kept when it is usable
    assert inv.error_message


@pytest.mark.parametrize("obj", [[1, 2], "text", 5, None, True], ids=repr)
def test_non_object_line(obj: Any) -> None:
    inv = bad(obj, line_no=4)
    assert inv.error_type == "not_an_object"
    assert inv.custom_id == "line-4"


@pytest.mark.parametrize(
    "obj",
    [
        oa({"model": MODEL, "messages": [USER]}, custom_id=5),  # type: ignore[arg-type]
        oa({"model": MODEL, "messages": [USER]}, custom_id=""),
        an({"model": MODEL, "max_tokens": 5, "messages": [USER]}, custom_id=["x"]),  # type: ignore[arg-type]
        {"id": 17, "model": MODEL, "messages": [USER]},
        {"id": {"a": 1}, "model": MODEL, "messages": [USER]},
    ],
    ids=["openai_int", "openai_empty", "anthropic_list", "native_int", "native_object"],
)
def test_bad_custom_id(obj: Any) -> None:
    inv = bad(obj, line_no=6)
    assert inv.error_type == "bad_custom_id"
    assert inv.custom_id == "line-6"


def test_parse_never_raises_on_odd_shapes() -> None:
    # A grab bag of odd but JSON-decodable lines: each is a Request or an Invalid.
    odd = [
        {},
        {"params": None},
        {"body": None, "method": "POST", "url": CHAT},
        {"model": MODEL, "messages": None},
        {"model": MODEL, "messages": "hi"},
        {"model": MODEL, "messages": [{"role": 1, "content": "x"}]},
        {"model": [MODEL], "prompt": "x"},
        {"model": MODEL, "prompt": "x", "metadata": {"tags": {"n": 3, "l": [1]}}},
    ]
    for i, obj in enumerate(odd, 1):
        r = parse_request(obj, i, "t")
        assert type(r) in (Request, Invalid), obj


@pytest.mark.parametrize(
    "obj",
    [
        oa({"model": MODEL, "prompt": "hi"}),
        an({"model": MODEL, "max_tokens": 5, "prompt": "hi"}),
        an({"model": MODEL, "max_tokens": 5, "messages": None, "prompt": "hi"}),
    ],
    ids=["openai_body_prompt", "anthropic_params_prompt", "anthropic_messages_null_prompt"],
)
def test_prompt_in_openai_or_anthropic_envelope_does_not_raise(obj: Any) -> None:
    r = parse_request(obj, 1, "t")  # currently raises
    assert type(r) in (Request, Invalid)
    if type(r) is Request:
        assert r.body["messages"] == [{"role": "user", "content": "hi"}]


# ---------------------------------------------------------------------------
# cache key


SYSTEM = "You answer in one word."


def test_key_same_across_three_formats() -> None:
    k_openai = key(
        oa(
            {
                "model": MODEL,
                "max_tokens": 20,
                "messages": [{"role": "system", "content": SYSTEM}, USER],
            }
        )
    )
    k_anthropic = key(an({"model": MODEL, "max_tokens": 20, "system": SYSTEM, "messages": [USER]}))
    k_native = key({"model": MODEL, "max_tokens": 20, "system": SYSTEM, "messages": [USER]})
    k_native_msgs = key(
        {
            "model": MODEL,
            "max_tokens": 20,
            "messages": [{"role": "system", "content": SYSTEM}, USER],
        }
    )
    assert k_openai == k_anthropic == k_native == k_native_msgs


def test_key_text_parts_equal_plain_string() -> None:
    plain = key({"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}]})
    parts = key(
        oa(
            {
                "model": MODEL,
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "Say hi"}]},
                ],
            }
        )
    )
    assert plain == parts
    # An Anthropic system given as a list of text blocks equals a plain system string.
    a_blocks = key(
        an(
            {
                "model": MODEL,
                "max_tokens": 9,
                "messages": [USER],
                "system": [{"type": "text", "text": SYSTEM}],
            }
        )
    )
    a_plain = key(an({"model": MODEL, "max_tokens": 9, "messages": [USER], "system": SYSTEM}))
    assert a_blocks == a_plain


def test_key_prompt_equals_single_user_message() -> None:
    assert key({"model": MODEL, "prompt": "Say hi"}) == key({"model": MODEL, "messages": [USER]})


def test_key_max_completion_tokens_equals_max_tokens() -> None:
    a = key(oa({"model": MODEL, "messages": [USER], "max_completion_tokens": 77}))
    b = key(oa({"model": MODEL, "messages": [USER], "max_tokens": 77}))
    c = key({"model": MODEL, "messages": [USER], "max_tokens": 77})
    d = key(an({"model": MODEL, "messages": [USER], "max_tokens": 77}))
    assert a == b == c == d
    assert a != key({"model": MODEL, "messages": [USER], "max_tokens": 78})


def test_key_ignores_ids_tags_deadline_and_field_order() -> None:
    base = {"model": MODEL, "messages": [USER], "temperature": 0}
    k = key(base)
    assert key({**base, "id": "other"}) == k
    assert key({**base, "metadata": {"tags": {"a": "b"}}}) == k
    assert key({**base, "metadata": {"tags": ["x", "y"]}}) == k
    assert key({**base, "deadline": "2030-01-01T00:00:00Z"}) == k
    assert key({**base, "deadline": 1}) == k
    assert key({**base, "cache": False}) == k  # opt-out is applied per run, by ingest
    assert key(dict(reversed(list(base.items())))) == k
    o = oa({"model": MODEL, "messages": [USER], "temperature": 0}, custom_id="x1")
    assert key(o) == k
    assert key({**o, "custom_id": "x2"}) == k
    assert ok({**o, "custom_id": "x2"}, line_no=99).key == k


def test_key_ignores_openai_user_and_body_metadata() -> None:
    body = {"model": MODEL, "messages": [USER]}
    k = key(oa(body))
    assert key(oa({**body, "user": "u-123"})) == k
    assert key(oa({**body, "metadata": {"purpose": "eval"}})) == k


def test_key_tenant_scoped() -> None:
    obj = {"model": MODEL, "messages": [USER]}
    assert key(obj, tenant="a") != key(obj, tenant="b")
    assert key({**obj, "metadata": {"tenant": "b"}}, tenant="a") == key(obj, tenant="b")
    assert key({**obj, "metadata": {"tenant": "c"}}, tenant="a") != key(obj, tenant="a")


@pytest.mark.parametrize(
    "change",
    [
        {"model": "gpt-4o"},
        {"temperature": 0.5},
        {"temperature": 1.0},
        {"top_p": 0.9},
        {"stop": ["\n"]},
        {"seed": 2},
        {"max_tokens": 5},
        {"n": 2},
        {"response_format": {"type": "json_object"}},
        {"messages": [{"role": "user", "content": "Say hello"}]},
        {"messages": [{"role": "assistant", "content": "Say hi"}]},
        {"messages": [USER, {"role": "assistant", "content": "hi"}, USER]},
        {"messages": [{"role": "system", "content": "x"}, USER]},
        {"system": "x"},
    ],
    ids=lambda c: next(iter(c)) + "=" + json.dumps(next(iter(c.values())))[:20],
)
def test_key_changes_with_output_affecting_fields(change: dict[str, Any]) -> None:
    base = {"model": MODEL, "messages": [USER]}
    assert key({**base, **change}) != key(base)


def test_key_different_system_prompts_differ() -> None:
    a = key(an({"model": MODEL, "max_tokens": 9, "messages": [USER], "system": "A"}))
    b = key(an({"model": MODEL, "max_tokens": 9, "messages": [USER], "system": "B"}))
    c = key(an({"model": MODEL, "max_tokens": 9, "messages": [USER]}))
    assert len({a, b, c}) == 3


def test_key_ignores_cache_control_marks() -> None:
    eph = {"type": "ephemeral"}
    plain = key(an({"model": MODEL, "max_tokens": 9, "system": SYSTEM, "messages": [USER]}))
    marked = key(
        an(
            {
                "model": MODEL,
                "max_tokens": 9,
                "system": [{"type": "text", "text": SYSTEM, "cache_control": eph}],
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "text",
                                "text": "Say hi",
                                "cache_control": {"type": "ephemeral", "ttl": "1h"},
                            },
                        ],
                    }
                ],
            }
        )
    )
    assert marked == plain
    # Mixed content (an image part too): the mark on the text part still does not count.
    img = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    mixed = {
        "model": MODEL,
        "messages": [{"role": "user", "content": [img, {"type": "text", "text": "What is it?"}]}],
    }
    mixed_marked = {
        "model": MODEL,
        "messages": [
            {
                "role": "user",
                "content": [img, {"type": "text", "text": "What is it?", "cache_control": eph}],
            }
        ],
    }
    assert key(mixed) == key(mixed_marked)
    assert key(mixed) != key(
        {"model": MODEL, "messages": [{"role": "user", "content": "What is it?"}]}
    )


def test_key_distinguishes_different_splits_of_text_parts() -> None:
    def parts(*texts: str) -> dict[str, Any]:
        content = [{"type": "text", "text": t} for t in texts]
        return {"model": MODEL, "messages": [{"role": "user", "content": content}]}

    assert key(parts("ab", "c")) != key(parts("a", "bc"))


# ---------------------------------------------------------------------------
# lines


def all_lines(
    data: bytes, max_line_bytes: int = MAX_LINE_BYTES, block_bytes: int = 4096
) -> list[bytes | None]:
    out: list[bytes | None] = []
    for batch in iter_lines(io.BytesIO(data), max_line_bytes, block_bytes):
        assert batch, "no empty batches"
        out.extend(batch)
    return out


@pytest.mark.parametrize("block", [1, 2, 3, 5, 7, 8, 13, 64, 10_000])
def test_iter_lines_split_across_blocks(block: int) -> None:
    data = b'{"a":1}\n{"bb":22}\n\nccc\nlast-no-newline'
    assert all_lines(data, block_bytes=block) == [
        b'{"a":1}',
        b'{"bb":22}',
        b"",
        b"ccc",
        b"last-no-newline",
    ]


@pytest.mark.parametrize("block", [1, 3, 4, 9, 10, 11, 25, 64, 10_000])
def test_iter_lines_over_limit_yields_none_and_continues(block: int) -> None:
    data = b"short\n" + b"x" * 50 + b"\nafter\n" + b"y" * 11 + b"\n" + b"z" * 10 + b"\nend\n"
    assert all_lines(data, max_line_bytes=10, block_bytes=block) == [
        b"short",
        None,
        b"after",
        None,
        b"z" * 10,
        b"end",
    ]


@pytest.mark.parametrize("block", [1, 4, 7, 100])
def test_iter_lines_over_limit_last_line_without_newline(block: int) -> None:
    assert all_lines(b"ok\n" + b"q" * 30, max_line_bytes=10, block_bytes=block) == [b"ok", None]
    assert all_lines(b"q" * 30 + b"\nok", max_line_bytes=10, block_bytes=block) == [None, b"ok"]


def test_iter_lines_trailing_newline_and_empty() -> None:
    assert all_lines(b"") == []
    assert all_lines(b"a\n") == [b"a"]
    assert all_lines(b"a") == [b"a"]
    assert all_lines(b"\n") == [b""]


@pytest.mark.parametrize("block", [1, 2, 5, 4096])
def test_iter_lines_crlf(block: int) -> None:
    data = b'{"a":1}\r\n{"b":2}\r\n\r\nlast\r\n'
    got = all_lines(data, block_bytes=block)
    assert len(got) == 4
    assert [g.rstrip(b"\r") for g in got if g is not None] == [b'{"a":1}', b'{"b":2}', b"", b"last"]


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=200).map(lambda b: bytes(b"ax\n"[x % 3] for x in b)),
    block=st.integers(1, 40),
    limit=st.integers(1, 30),
)
def test_iter_blocks_hold_the_lines_of_a_plain_split(data: bytes, block: int, limit: int) -> None:
    """Blocks of whole lines (bytes) or lists, in any block size: the file's lines in order,
    a line over the limit None; a bytes block never holds one over the limit."""
    expected: list[bytes | None] = [x if len(x) <= limit else None for x in data.split(b"\n")]
    if data.endswith(b"\n") or not data:
        expected.pop()  # the last newline ends a line, it does not start one
    blocks = list(iter_blocks(io.BytesIO(data), limit, block))
    got = [x for b in blocks for x in lines_of(b)]
    assert got == expected
    assert sum(lines_in(b) for b in blocks) == len(expected)
    for b in blocks:
        if isinstance(b, bytes):
            assert all(len(x) <= limit for x in b.split(b"\n"))


class _LongLineStream(io.RawIOBase):
    """`prefix`, then `n` bytes of one endless line made on the fly, then `suffix`."""

    def __init__(self, prefix: bytes, n: int, suffix: bytes) -> None:
        self._parts = [prefix, n, suffix]

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while self._parts:
            head = self._parts[0]
            if isinstance(head, int):
                if head == 0:
                    self._parts.pop(0)
                    continue
                k = min(size, head)
                self._parts[0] = head - k
                return b"x" * k
            self._parts.pop(0)
            if head:
                return head
        return b""


def test_iter_lines_over_limit_line_is_not_held_in_memory() -> None:
    limit, block, n = 256 * 1024, 64 * 1024, 8 * 1024 * 1024
    tracemalloc.start()
    try:
        got = all_lines_stream(_LongLineStream(b"a\n", n, b"\nb\n"), limit, block)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == [b"a", None, b"b"]
    assert peak < 4 * (limit + block)  # far below the 8 MB line


def all_lines_stream(stream: Any, max_line_bytes: int, block_bytes: int) -> list[bytes | None]:
    out: list[bytes | None] = []
    for batch in iter_lines(stream, max_line_bytes, block_bytes):
        out.extend(batch)
    return out


def test_open_source_gzip(tmp_path: Path) -> None:
    data = jl({"model": MODEL, "prompt": "a"}, {"model": MODEL, "prompt": "b"})
    gz = tmp_path / "in.jsonl.gz"
    gz.write_bytes(gzip.compress(data))
    with open_source(gz) as f:
        assert f.read() == data
    with open_source(str(gz)) as f:
        assert all_lines(f.read()) == data.splitlines()
    # gzip content is recognised by its magic bytes too, whatever the name.
    disguised = tmp_path / "in.jsonl"
    disguised.write_bytes(gzip.compress(data))
    with open_source(disguised) as f:
        assert f.read() == data
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(data)
    with open_source(plain) as f:
        assert f.read() == data


def test_plan_file_reads_gzip(svc: Services, tmp_path: Path) -> None:
    gz = tmp_path / "in.jsonl.gz"
    gz.write_bytes(
        gzip.compress(
            jl(
                {"id": "a", "model": MODEL, "prompt": "one"},
                {"id": "b", "model": MODEL, "prompt": "two"},
                {"id": "c", "model": MODEL, "prompt": "one"},
            )
        )
    )
    report = plan_file(svc, str(gz), {})
    s = report.stats
    assert (s.lines, s.valid, s.invalid, s.unique, s.in_run_duplicates) == (3, 3, 0, 2, 1)
    assert [(c.backend, c.model, c.n_requests) for c in report.chunks] == [("openai", MODEL, 2)]


# ---------------------------------------------------------------------------
# ingest (dry run)


def test_ingest_mixed_file_accounts_for_every_line(svc: Services) -> None:
    limit = 2000
    q = {"model": MODEL, "messages": [USER], "max_tokens": 16}
    data = jl(
        oa({"model": MODEL, "messages": [USER], "max_tokens": 16}, custom_id="a"),  # 1 valid
        an(
            {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "Other"}]},
            custom_id="b",
        ),  # 2 valid
        {"id": "c", "model": MODEL, "prompt": "Third"},  # 3 valid
        b"",  # 4 blank
        b'{"id": "j", "model": ',  # 5 not JSON
        b'{"id": "u", "model": "gpt-4o-mini", "prompt": "caf\xe9"}',  # 6 not UTF-8 (latin-1)
        json.dumps({"id": "big", "model": MODEL, "prompt": "p" * (limit + 10)}).encode(),  # 7
        {"id": "a", "model": MODEL, "prompt": "a different question"},  # 8 duplicate id
        {"id": "m", "model": "no-such-model-9000", "prompt": "x"},  # 9 unknown model
        {"id": "t", "model": MODEL, "prompt": "x", "max_tokens": "lots"},  # 10 bad max_tokens
        b"   \t ",  # 11 blank (whitespace)
        {**q, "id": "d"},  # 12 same request as line 1: in-run duplicate
        {**q, "id": "e", "cache": False},  # 13 same again, opted out: sent on its own
        {**q, "id": "f", "cache": False},  # 14 idem
        {"id": "h", "model": "claude-haiku-4-5", "prompt": "x", "logprobs": True},  # 15
        {**q, "id": "g"},  # 16 another in-run duplicate of line 1
    )
    stats, rows, chunks = run_ingest(svc, data, max_line_bytes=limit)
    assert stats.lines == 16
    assert stats.blank == 2
    assert stats.invalid == 9
    assert stats.invalid_by_type == {
        "blank_line": 2,
        "invalid_json": 1,
        "invalid_utf8": 1,
        "line_too_long": 1,
        "duplicate_custom_id": 1,
        "unknown_model": 1,
        "bad_max_tokens": 1,
        "unsupported_parameter": 1,
    }
    assert stats.valid == 7  # a b c d e f g
    assert stats.in_run_duplicates == 2  # d, g
    assert stats.unique == 5
    assert stats.to_send == 5  # a b c e f
    assert stats.cache_hits == 0
    accounted(stats)

    # One row per line, blank ones included, in input order, numbered by physical line.
    by_line = {r["line_no"]: r for r in rows}
    assert [r["line_no"] for r in rows] == list(range(1, 17))
    expect = {
        1: ("a", PENDING, CACHE_NONE, None),
        2: ("b", PENDING, CACHE_NONE, None),
        3: ("c", PENDING, CACHE_NONE, None),
        4: ("line-4", INVALID, CACHE_NONE, "blank_line"),
        5: ("line-5", INVALID, CACHE_NONE, "invalid_json"),
        6: ("line-6", INVALID, CACHE_NONE, "invalid_utf8"),
        7: ("line-7", INVALID, CACHE_NONE, "line_too_long"),
        8: ("a", INVALID, CACHE_NONE, "duplicate_custom_id"),
        9: ("m", INVALID, CACHE_NONE, "unknown_model"),
        10: ("t", INVALID, CACHE_NONE, "bad_max_tokens"),
        11: ("line-11", INVALID, CACHE_NONE, "blank_line"),
        12: ("d", PENDING, CACHE_IN_RUN, None),
        13: ("e", PENDING, CACHE_NONE, None),
        14: ("f", PENDING, CACHE_NONE, None),
        15: ("h", INVALID, CACHE_NONE, "unsupported_parameter"),
        16: ("g", PENDING, CACHE_IN_RUN, None),
    }
    got = {n: (r["custom_id"], r["state"], r["cache"], r["error_type"]) for n, r in by_line.items()}
    assert got == expect
    # Followers share the leader's key; opted-out lines get keys of their own.
    assert by_line[12]["request_key"] == by_line[1]["request_key"] == by_line[16]["request_key"]
    opted = {by_line[13]["request_key"], by_line[14]["request_key"], by_line[1]["request_key"]}
    assert len(opted) == 3
    assert by_line[9]["model_requested"] == "no-such-model-9000"
    assert all(by_line[n]["request_key"] is None for n in (5, 6, 7, 8, 9, 10, 15))
    assert [(c.backend, c.model, c.n_requests) for c in chunks] == [("openai", MODEL, 5)]


def test_ingest_real_16mb_limit_via_plan_file(svc: Services, tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    big = b'{"id":"big","model":"gpt-4o-mini","prompt":"' + b"p" * (17 * 1024 * 1024) + b'"}'
    path.write_bytes(
        jl(
            {"id": "a", "model": MODEL, "prompt": "x"},
            big,
            {"id": "b", "model": MODEL, "prompt": "y"},
        )
    )
    s = plan_file(svc, str(path), {}).stats
    assert (s.lines, s.valid, s.invalid) == (3, 2, 1)
    assert s.invalid_by_type == {"line_too_long": 1}
    accounted(s)


def test_ingest_dedup_and_duplicate_ids_across_batches(svc: Services) -> None:
    # A 5 MB junk line pushes what follows into a later block (blocks are 4 MB).
    q = {"model": MODEL, "prompt": "same"}
    data = jl({**q, "id": "a"}, b"x" * (5 * 1024 * 1024), {**q, "id": "b"}, {**q, "id": "a"})
    stats, rows, _ = run_ingest(svc, data)
    assert len({r["line_no"] for r in rows}) == 4
    assert stats.lines == 4
    assert stats.invalid_by_type == {"invalid_json": 1, "duplicate_custom_id": 1}
    assert (stats.valid, stats.unique, stats.in_run_duplicates, stats.to_send) == (2, 1, 1, 1)
    assert [r["cache"] for r in rows if r["line_no"] == 3] == [CACHE_IN_RUN]
    accounted(stats)


def test_ingest_tenants_never_dedup_together(svc: Services) -> None:
    q = {"model": MODEL, "prompt": "same"}
    data = jl(
        {**q, "id": "1", "metadata": {"tenant": "x"}},
        {**q, "id": "2", "metadata": {"tenant": "y"}},
        {**q, "id": "3"},
        {**q, "id": "4", "metadata": {"tenant": "x"}},
    )
    stats, rows, _ = run_ingest(svc, data, tenant="z")
    assert (stats.unique, stats.in_run_duplicates) == (3, 1)
    assert [(r["tenant"], r["cache"]) for r in rows] == [
        ("x", CACHE_NONE),
        ("y", CACHE_NONE),
        ("z", CACHE_NONE),
        ("x", CACHE_IN_RUN),
    ]


def test_ingest_cache_hits_and_cache_false_bypass(svc: Services) -> None:
    q = {"model": MODEL, "prompt": "cached question"}
    leader = ok({**q, "id": "seed"}, tenant="default")
    svc.cache.put_many([(leader.key, Outcome(status=SUCCEEDED, output_text="A", model_used=MODEL))])
    data = jl(
        {**q, "id": "1"},
        {**q, "id": "2"},
        {**q, "id": "3", "cache": False},
        {**q, "id": "4", "cache": False},
        {"id": "5", "model": MODEL, "prompt": "new"},
    )
    stats, rows, chunks = run_ingest(svc, data, cache=True)
    assert stats.cache_hits == 2
    assert stats.to_send == 3  # the two opted-out lines and the new one
    assert stats.in_run_duplicates == 0
    assert [(r["state"], r["cache"]) for r in rows] == [
        (CACHED, CACHE_EXACT),
        (CACHED, CACHE_EXACT),
        (PENDING, CACHE_NONE),
        (PENDING, CACHE_NONE),
        (PENDING, CACHE_NONE),
    ]
    assert rows[0]["cached_outcome"] is not None and rows[2]["cached_outcome"] is None
    assert sum(c.n_requests for c in chunks) == 3
    # Another tenant does not see it.
    stats, _, _ = run_ingest(svc, data, cache=True, tenant="other")
    assert stats.cache_hits == 0
    # And plan --no-cache does not look.
    stats, _, _ = run_ingest(svc, data, cache=False)
    assert (stats.cache_hits, stats.in_run_duplicates, stats.to_send) == (0, 1, 4)


def test_ingest_crlf_file(svc: Services) -> None:
    data = jl(
        {"id": "a", "model": MODEL, "prompt": "x"}, b"", {"id": "b", "model": MODEL, "prompt": "y"}
    ).replace(b"\n", b"\r\n")
    stats, rows, _ = run_ingest(svc, data)
    assert (stats.lines, stats.blank, stats.valid, stats.invalid) == (3, 1, 2, 1)
    assert [r["custom_id"] for r in rows] == ["a", "line-2", "b"]
    assert rows[1]["error_type"] == "blank_line"


def test_ingest_duplicate_id_of_invalid_earlier_line(svc: Services) -> None:
    data = jl(
        {"id": "a", "model": "nope-model", "prompt": "x"},
        {"id": "a", "model": MODEL, "prompt": "x"},
    )
    stats, rows, _ = run_ingest(svc, data)
    assert [r["error_type"] for r in rows] == ["unknown_model", "duplicate_custom_id"]
    accounted(stats)


def test_ingest_survives_openai_body_with_prompt(svc: Services) -> None:
    data = jl(
        oa({"model": MODEL, "prompt": "hi"}, custom_id="p"),
        {"id": "ok", "model": MODEL, "prompt": "fine"},
    )
    stats, _, _ = run_ingest(svc, data)  # currently raises KeyError
    assert stats.lines == 2
    accounted(stats)


# ---------------------------------------------------------------------------
# SeenSet


def v(hi: int, lo: int) -> bytes:
    return hi.to_bytes(8, "little") + lo.to_bytes(8, "little")


def test_seen_within_and_across_calls() -> None:
    s = SeenSet()
    a, b, c, d = v(1, 1), v(2, 2), v(3, 3), v(4, 4)
    assert s.check_add([]) == []
    assert s.check_add([a, b, a, c, b, b]) == [False, False, True, False, True, True]
    assert len(s) == 3
    assert s.check_add([a, d, d]) == [True, False, True]
    assert len(s) == 4


@pytest.mark.parametrize(
    ("merge_every", "max_run"), [(1, 1), (2, 2), (2, 5), (3, 3), (3, 10), (7, 7), (1000, 1000)]
)
def test_seen_matches_a_python_set_through_merges(merge_every: int, max_run: int) -> None:
    rng = random.Random(merge_every * 31 + max_run)
    pool = [rng.randbytes(16) for _ in range(120)]
    # Some shared high halves with different low halves.
    pool += [pool[i][:8] + rng.randbytes(8) for i in range(0, 40, 2)]
    s, model = SeenSet(merge_every=merge_every, max_run=max_run), set()
    for _ in range(60):
        values = [rng.choice(pool) for _ in range(rng.randint(0, 9))]
        expected = []
        for x in values:
            expected.append(x in model)
            model.add(x)
        assert s.check_add(values) == expected
        assert len(s) == len(model)


@pytest.mark.parametrize("max_run", [2, 3, 1000])
def test_seen_colliding_high_bytes_after_merge(max_run: int) -> None:
    s = SeenSet(merge_every=2, max_run=max_run)
    same_hi = 0xDEADBEEF_12345678
    assert s.check_add([v(same_hi, 1), v(same_hi, 3)]) == [False, False]  # merged now
    assert s.check_add([v(same_hi, 2)]) == [False]
    assert s.check_add([v(same_hi, 3), v(same_hi, 1), v(same_hi, 2)]) == [True, True, True]
    assert s.check_add([v(same_hi, 4), v(same_hi + 1, 3), v(same_hi - 1, 1)]) == [
        False,
        False,
        False,
    ]
    # Many entries under one high half: the lookup walks past all of them.
    many = [v(7, lo) for lo in range(10, 0, -1)]
    assert s.check_add(many) == [False] * 10
    s.check_add([v(1, 1), v(2, 2)])  # force another merge
    assert s.check_add([v(7, 1), v(7, 10), v(7, 11), v(7, 0)]) == [True, True, False, False]
    assert s.check_add([v(2**64 - 1, 0), v(0, 2**64 - 1)]) == [False, False]
    assert s.check_add([v(2**64 - 1, 0), v(0, 2**64 - 1)]) == [True, True]


_POOL = [v(0, 0), v(0, 1), v(1, 0), v(2**64 - 1, 2**64 - 1)] + [v(5, lo) for lo in range(6)]


@settings(max_examples=150, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.one_of(st.sampled_from(_POOL), st.binary(min_size=16, max_size=16))),
        max_size=8,
    )
)
def test_the_c_hash_set_answers_as_seenset_does(batches: list[list[bytes]]) -> None:
    """HashSeen (intake/_keyset.c): the all-zero value, shared high halves and repeats
    within a batch answered as SeenSet answers them; both give back the same values."""
    assert _keyset is not None  # built by the install (setup.py)
    fast, slow = HashSeen(), SeenSet(merge_every=3, max_run=5)
    for values in batches:
        assert fast.check_add(values) == slow.check_add(values)
        assert len(fast) == len(slow)
    held = [sorted(_values(s.packed_windows(3))) for s in (fast, slow)]
    assert held[0] == held[1] == sorted({x for values in batches for x in values})


def _values(windows: Iterator[bytes]) -> list[bytes]:
    out = []
    for packed in windows:
        assert 0 < len(packed) <= 3 * 16 and len(packed) % 16 == 0
        out += [packed[i : i + 16] for i in range(0, len(packed), 16)]
    return out


def test_the_c_hash_set_grows_and_keeps_every_value() -> None:
    rng = random.Random(5)
    values = [rng.randbytes(16) for _ in range(50_000)]
    s = HashSeen()
    assert not s.check_add_packed(b"".join(values)).any()
    assert s.check_add_packed(b"".join(values[::-1])).all()
    assert len(s) == 50_000
    assert b"".join(s.packed_windows(7_000)) == b"".join(values)  # in the order added
    with pytest.raises(ValueError, match="16 bytes"):
        s.check_add_packed(b"x" * 17)


# ---------------------------------------------------------------------------
# settings


def test_settings_defaults_and_env_overrides(tmp_path: Path) -> None:
    s = load_settings(environ={})
    assert s.poll_interval_s == 30.0
    assert s.openai.max_lines_per_chunk == 50_000
    s = load_settings(
        environ={
            "BATCHD_POLL_INTERVAL_S": "2.5",
            "BATCHD_OPENAI_MAX_LINES_PER_CHUNK": "123",
            "BATCHD_DEFAULT_TENANT": "acme",
            "PATH": "/bin",
            "OPENAI_API_KEY": "sk-not-ours",  # non-BATCHD_ names are ignored
        }
    )
    assert s.poll_interval_s == 2.5
    assert s.openai.max_lines_per_chunk == 123
    assert s.openai.max_bytes_per_chunk == 200_000_000
    assert s.default_tenant == "acme"


@pytest.mark.parametrize(
    "name",
    [
        "BATCHD_POLL_INTERVAL",
        "BATCHD_OPENAI_MAX_LINES",
        "BATCHD_OPENAI",
        "BATCHD_PRICES",
        "BATCHD_NOPE",
    ],
)
def test_settings_unknown_env_var_is_an_error(name: str) -> None:
    with pytest.raises(BatchdError) as exc:
        load_settings(environ={name: "1"})
    assert name in str(exc.value)


def test_settings_unknown_toml_keys_are_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "batchd.toml"
    cfg.write_text("pol_interval_s = 3\n")
    with pytest.raises(BatchdError, match="pol_interval_s"):
        load_settings(environ={}, config_path=cfg)
    cfg.write_text("[openai]\nmax_line_per_chunk = 3\n")
    with pytest.raises(BatchdError, match="max_line_per_chunk"):
        load_settings(environ={}, config_path=cfg)
    # ./batchd.toml is read by default (cwd is tmp_path here).
    with pytest.raises(BatchdError):
        load_settings(environ={})


def test_settings_precedence_toml_env_cli(tmp_path: Path) -> None:
    cfg = tmp_path / "conf.toml"
    cfg.write_text(
        'poll_interval_s = 10\ndefault_tenant = "from-toml"\n'
        "[openai]\nmax_lines_per_chunk = 10\nmax_retries = 2\n"
    )
    env = {"BATCHD_POLL_INTERVAL_S": "20", "BATCHD_OPENAI_MAX_LINES_PER_CHUNK": "20"}
    s = load_settings(environ={}, config_path=cfg)
    assert (s.poll_interval_s, s.openai.max_lines_per_chunk, s.default_tenant) == (
        10.0,
        10,
        "from-toml",
    )
    s = load_settings(environ=env, config_path=cfg)
    assert (s.poll_interval_s, s.openai.max_lines_per_chunk) == (20.0, 20)
    assert s.openai.max_retries == 2  # a section is merged key by key, not replaced
    assert s.default_tenant == "from-toml"
    s = load_settings(
        cli={"poll_interval_s": 30.5, "default_tenant": None}, environ=env, config_path=cfg
    )
    assert s.poll_interval_s == 30.5
    assert s.default_tenant == "from-toml"  # None on the command line means "not given"
    # BATCHD_CONFIG names the file too.
    s = load_settings(environ={"BATCHD_CONFIG": str(cfg)})
    assert s.poll_interval_s == 10.0


@pytest.mark.parametrize(
    "env",
    [
        {"BATCHD_POLL_INTERVAL_S": "abc"},
        {"BATCHD_POLL_INTERVAL_S": "0"},
        {"BATCHD_POLL_INTERVAL_S": "-1"},
        {"BATCHD_OPENAI_MAX_LINES_PER_CHUNK": "50001"},
        {"BATCHD_OPENAI_MAX_LINES_PER_CHUNK": "0"},
        {"BATCHD_OPENAI_MAX_LINES_PER_CHUNK": "1.5"},
        {"BATCHD_OPENAI_MAX_BYTES_PER_CHUNK": "200000001"},
        {"BATCHD_MAX_ATTEMPTS": "0"},
        {"BATCHD_DEFAULT_DEADLINE_H": "0"},
    ],
    ids=lambda e: "-".join(f"{k}={v}" for k, v in e.items()),
)
def test_settings_bad_values_rejected(env: dict[str, str]) -> None:
    with pytest.raises(BatchdError):
        load_settings(environ=env)


def test_settings_bad_toml_rejected(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('poll_interval_s = "fast"\n')
    with pytest.raises(BatchdError, match="poll_interval_s"):
        load_settings(environ={}, config_path=cfg)
    cfg.write_text("poll_interval_s = = 3\n")
    with pytest.raises(BatchdError, match="not valid TOML"):
        load_settings(environ={}, config_path=cfg)
    with pytest.raises(BatchdError, match="does not exist"):
        load_settings(environ={}, config_path=tmp_path / "missing.toml")


def test_settings_missing_file_named_by_batchd_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BatchdError):
        load_settings(environ={"BATCHD_CONFIG": str(tmp_path / "typo.toml")})


# ---------------------------------------------------------------------------
# pricing


@pytest.fixture
def book() -> PriceBook:
    return load_price_book(load_settings(environ={}))


def test_price_book_lines_are_dated_and_sourced(book: PriceBook) -> None:
    models = book.models()
    assert len(models) >= 5
    assert book.version
    names = {p.model for p in models}
    assert {"gpt-4o-mini", "gpt-5.4-mini", "claude-haiku-4-5"} <= names
    for p in models:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", p.as_of), p
        assert p.source.strip(), p
        assert p.vendor in {"openai", "anthropic", "gemini"}, p
        embeds = p.model.startswith("text-embedding-")  # input tokens only: no output price
        assert p.input_per_mtok > 0 and (
            p.output_per_mtok == 0 if embeds else p.output_per_mtok > 0
        )
        assert 0 < p.cached_input_per_mtok <= p.input_per_mtok, p
        assert p.batch_discount == 0.5, p
    listed = {
        m: (book.require(m).input_per_mtok, book.require(m).output_per_mtok)
        for m in (
            "text-embedding-3-small",
            "text-embedding-3-large",
            "text-embedding-ada-002",
            "gpt-3.5-turbo-instruct",
            "davinci-002",
        )
    }
    assert listed == {
        "text-embedding-3-small": (0.02, 0.0),
        "text-embedding-3-large": (0.13, 0.0),
        "text-embedding-ada-002": (0.10, 0.0),
        "gpt-3.5-turbo-instruct": (1.50, 2.00),
        "davinci-002": (2.00, 2.00),
    }


def test_price_lookup_snapshot_suffix(book: PriceBook) -> None:
    p = book.lookup("gpt-5.4-mini-2026-03-17")
    assert p is not None and p.model == "gpt-5.4-mini"
    assert book.lookup("gpt-5.4-mini-20260317").model == "gpt-5.4-mini"  # type: ignore[union-attr]
    assert book.lookup("claude-haiku-4-5-20251001").model == "claude-haiku-4-5"  # type: ignore[union-attr]
    assert book.lookup("gpt-5.4").model == "gpt-5.4"  # type: ignore[union-attr]
    assert book.lookup("gpt-5.4-mini-extra") is None
    assert book.lookup("no-such-model") is None
    with pytest.raises(BatchdError, match="no-such-model"):
        book.require("no-such-model")


def test_cost_batch_is_half_realtime_and_cached_tokens(book: PriceBook) -> None:
    p = book.require("gpt-4o")  # input 2.50, cached 1.25, output 10.00 per 1M
    u = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert book.cost_usd(p, u, batch=False) == pytest.approx(12.5)
    assert book.cost_usd(p, u, batch=True) == pytest.approx(6.25)
    cached = Usage(input_tokens=1_000_000, cached_input_tokens=400_000, output_tokens=2_000)
    realtime = 600_000 * 2.5 / 1e6 + 400_000 * 1.25 / 1e6 + 2_000 * 10 / 1e6
    assert book.cost_usd(p, cached, batch=False) == pytest.approx(realtime)
    assert book.cost_usd(p, cached, batch=True) == pytest.approx(realtime / 2)
    # The baseline ignores both the prompt cache and the batch discount.
    assert book.baseline_usd(p, cached) == pytest.approx(2.5 + 0.02)
    for m in ("gpt-5.4-mini", "claude-sonnet-4-6"):
        q = book.require(m)
        u = Usage(input_tokens=12_345, cached_input_tokens=1_000, output_tokens=678)
        assert book.cost_usd(q, u, batch=True) == pytest.approx(
            0.5 * book.cost_usd(q, u, batch=False)
        )


def test_cost_cache_writes(book: PriceBook) -> None:
    p = book.require("claude-sonnet-4-6")  # input 3.00 per 1M
    w5 = Usage(input_tokens=1_000_000, cache_write_tokens=1_000_000)
    w1h = Usage(
        input_tokens=1_000_000, cache_write_tokens=1_000_000, cache_write_1h_tokens=1_000_000
    )
    mixed = Usage(
        input_tokens=1_000_000, cache_write_tokens=1_000_000, cache_write_1h_tokens=250_000
    )
    assert book.cost_usd(p, w5, batch=False) == pytest.approx(3.0 * 1.25)
    assert book.cost_usd(p, w1h, batch=False) == pytest.approx(3.0 * 2.0)
    assert book.cost_usd(p, mixed, batch=True) == pytest.approx(
        0.5 * (0.75 * 3.0 * 1.25 + 0.25 * 3.0 * 2.0)
    )


def test_price_override_in_settings_adds_a_model(tmp_path: Path) -> None:
    cfg = tmp_path / "batchd.toml"
    cfg.write_text(
        '[prices."my-model"]\nvendor = "openai"\ninput_per_mtok = 1.0\noutput_per_mtok = 4.0\n'
        '[prices."gpt-4o"]\nvendor = "openai"\ninput_per_mtok = 9.0\noutput_per_mtok = 9.0\n'
        "cached_input_per_mtok = 3.0\n"
    )
    settings = load_settings(environ=settings_env(tmp_path), config_path=cfg)
    book = load_price_book(settings)
    p = book.require("my-model")
    assert (p.vendor, p.input_per_mtok, p.output_per_mtok) == ("openai", 1.0, 4.0)
    assert p.cached_input_per_mtok == 1.0  # defaults to the input price
    assert p.as_of and p.source
    assert book.version.endswith("+overrides")
    assert book.require("my-model-2026-01-01").model == "my-model"
    u = Usage(input_tokens=1_000_000, output_tokens=500_000)
    assert book.cost_usd(p, u, batch=True) == pytest.approx((1.0 + 2.0) / 2)
    g = book.require("gpt-4o")
    assert (g.input_per_mtok, g.cached_input_per_mtok) == (9.0, 3.0)
    # Lines for the added model are routable, so plan accepts them.
    svc = open_services(settings)
    try:
        src = tmp_path / "in.jsonl"
        src.write_bytes(jl({"id": "a", "model": "my-model", "prompt": "x"}))
        report = plan_file(svc, str(src), {})
        assert (report.stats.valid, report.stats.invalid) == (1, 0)
        assert report.estimates["openai:my-model"].requests == 1
    finally:
        svc.close()
    # Without the override the same line is an unknown model.
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    plain = open_services(
        load_settings(environ={"BATCHD_HOME": str(tmp_path / "h2")}, config_path=empty)
    )
    try:
        assert plan_file(plain, str(src), {}).stats.invalid_by_type == {"unknown_model": 1}
    finally:
        plain.close()
