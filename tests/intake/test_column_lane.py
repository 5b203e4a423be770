"""The column lane of a plan (intake.typed_plain, intake.column_lane, intake.column_settle)
changes nothing: a line it takes has exactly the record `parse_line` gives (the per-line
path through `requests.parse_request` and `decode._valid`), a block it takes as Columns has
those records' values, and `batchd plan` (pipeline.plan_file) reports the same, to the last
chunk and cost, with the lane as with the per-line path: on a corpus of every line kind,
on generated hostile and near-plain lines, with repeated ids and keys, cache hits, and in
worker processes."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from batchd.intake import column_lane, decode, native_lane
from batchd.intake.column_lane import ColumnLane
from batchd.intake.lines import iter_blocks
from batchd.intake.screen import BOM, MAX_DEPTH, no_long_digits
from batchd.outcome import SUCCEEDED, Outcome
from batchd.run.pipeline import plan_file
from tests.intake.test_fast_path import _corpus
from tests.support.hostile import (
    CLAUDE_MODEL,
    OPENAI_MODEL,
    base_line,
    encode,
    hostile_lines,
    near_plain_lines,
    open_test_services,
)

pytestmark = pytest.mark.timeout(300)
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Any:
    s = open_test_services(tmp_path_factory.mktemp("columns"))
    yield s
    s.close()


def _ctx(svc: Any, use_cache: bool, tenant: str = "t") -> decode.ParseContext:
    return decode.ParseContext(
        svc.router, tenant, "salt", use_cache, 1 << 20, sizes_only=True, columns=True
    )


def _plain_lines(n: int, start: int = 0) -> list[bytes]:
    """Plain lines the lane takes: each format, the native one without its deadline, with
    a system prompt, a bare prompt, sampling settings and no metadata among them."""
    out = []
    for i in range(start, start + n):
        fmt = ("openai", "anthropic", "native")[i % 3]
        line = base_line(fmt, OPENAI_MODEL, i)
        body = {"openai": line.get("body"), "anthropic": line.get("params")}.get(fmt, line)
        assert isinstance(body, dict)
        line.pop("deadline", None)
        if i % 4 == 1:
            body["temperature"] = 0.5
            body["seed"] = i
        if i % 5 == 2 and fmt != "openai":
            body["system"] = "be brief"
        if i % 7 == 3 and fmt == "native":
            del line["metadata"]
            line["prompt"] = line.pop("messages")[0]["content"]
        out.append(encode(line))
    return out


def _same_as_parse_line(ctx: decode.ParseContext, raw: bytes, line_no: int = 7) -> bool:
    """The lane takes a line only with parse_line's very record; True if it took it.
    (The lane sees only lines of a clean block, not too deep: parse_block's screens.)"""
    if BOM in raw or not no_long_digits(raw) or raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
        return False
    lane = ColumnLane(ctx)
    taken = lane.take(raw, line_no)
    if taken < 0:
        return False
    slow = decode.parse_line(raw, line_no, replace(ctx, columns=False))
    fast = lane.record(taken, line_no)
    assert fast == slow, raw
    assert msgspec.msgpack.encode(fast) == msgspec.msgpack.encode(slow)
    return True


def test_the_lane_takes_plain_lines_with_the_record_of_parse_line(svc: Any) -> None:
    lines = _corpus() + _plain_lines(30)
    for use_cache in (True, False):
        ctx = _ctx(svc, use_cache)
        taken = [_same_as_parse_line(ctx, raw) for raw in lines]
        assert sum(taken) >= 30  # the lane really takes the plain lines (not vacuous)


def test_the_lane_leaves_what_is_not_its_own(svc: Any) -> None:
    """A deadline, "cache": false, another backend's model, an unknown model, an extra
    key: the record path decides (parse_line's record, through the express lane or not)."""
    ctx = _ctx(svc, True)
    plain = {"id": "a", "model": OPENAI_MODEL, "prompt": "x"}
    assert ColumnLane(ctx).take(encode(plain), 1) == 0
    for other in (
        {**plain, "deadline": "2099-01-01T00:00:00Z"},
        {**plain, "cache": False},
        {**plain, "model": CLAUDE_MODEL},
        {**plain, "model": "no-such-model"},
        {**plain, "user": "u"},
        {**plain, "metadata": {"tenant": "t", "other": 1}},
        {**plain, "max_tokens": True},
        {**plain, "max_tokens": 0},
        {**plain, "id": ""},
    ):
        assert ColumnLane(ctx).take(encode(other), 1) == -1, other
    # without a plan's context (a run: rows kept, lines written) the lane takes nothing
    for off in (replace(ctx, columns=False), replace(ctx, sizes_only=False)):
        assert ColumnLane(off).take(encode(plain), 1) == -1


def test_brackets_in_a_plain_line_s_text_are_not_nesting(svc: Any) -> None:
    """A line with more brackets than MAX_DEPTH is the record path's: parse_line's record
    whether they are in its strings or nest too deep in a sampling value (any JSON)."""
    ctx = _ctx(svc, True)
    text = "{[" * MAX_DEPTH
    plain = encode({"id": "a", "model": OPENAI_MODEL, "prompt": text, "system": text})
    assert ColumnLane(ctx).take(plain, 3) == -1
    assert decode.parse_line(plain, 3, replace(ctx, columns=False)).error_type is None
    deep = b'{"id":"a","model":"%s","prompt":"x","n":%s1%s}' % (
        OPENAI_MODEL.encode(),
        b"[" * (MAX_DEPTH + 5),
        b"]" * (MAX_DEPTH + 5),
    )
    assert ColumnLane(ctx).take(deep, 3) == -1
    record = decode.parse_line(deep, 3, replace(ctx, columns=False))
    assert record.error_type == "nesting_too_deep"


def test_a_block_of_plain_lines_is_columns_of_the_records(svc: Any) -> None:
    lines: list[bytes | None] = list(_plain_lines(40))
    ctx = _ctx(svc, True)
    block = decode.parse_block(11, lines, ctx)
    cols = block.columns
    assert cols is not None and block.records == []
    slow = decode.parse_block(11, lines, replace(ctx, columns=False)).records
    assert cols.first_line_no == 11
    assert cols.custom_ids == [r.custom_id for r in slow]
    assert cols.id_digests == b"".join(r.id_digest for r in slow)
    assert cols.keys == b"".join(r.key for r in slow)
    models = [cols.models[i] for i in np.frombuffer(cols.model_nos, dtype=np.uint32)]
    assert models == [r.model for r in slow]
    backends = [cols.backends[i] for i in np.frombuffer(cols.model_nos, dtype=np.uint32)]
    assert backends == [r.backend for r in slow]
    assert np.frombuffer(cols.vendor_bytes, np.int64).tolist() == [r.vendor_bytes for r in slow]
    assert np.frombuffer(cols.max_tokens, np.int64).tolist() == [r.max_tokens for r in slow]
    assert block.bytes_read == sum(len(x) + 1 for x in _plain_lines(40))
    # one line the lane does not take: the block is records, the same as without the lane
    mixed = [*lines[:5], encode({"x": 1}), *lines[5:]]
    block = decode.parse_block(1, mixed, ctx)
    assert block.columns is None
    assert block.records == decode.parse_block(1, mixed, replace(ctx, columns=False)).records


def _write(tmp: Path, lines: list[bytes]) -> str:
    path = tmp / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path)


def _plan(svc: Any, path: str, monkeypatch: pytest.MonkeyPatch, lane: str) -> Any:
    """plan_file's report, encoded: with the lane (C and Python, or the Python lane only),
    without it, or all per line."""
    with monkeypatch.context() as m:
        if lane != "columns":
            m.setattr(native_lane, "_lane", None)
        if lane not in ("columns", "python-columns"):
            m.setattr(column_lane.ColumnLane, "take_block", lambda self, raw, n: [-1] * len(raw))
        if lane == "per-line":  # as test_fast_path's slow path: parse_request decides
            m.setattr(decode, "plain_request", lambda *a: None)
            m.setattr(
                decode, "_parse_clean", lambda raw, n, ctx, ex: decode.parse_line(raw, n, ctx)
            )
        report = plan_file(svc, path, {}, deadline_at=NOW + 86400, now=NOW)
    return msgspec.to_builtins(report)


def _three_plans(svc: Any, path: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    reports = {
        lane: _plan(svc, path, monkeypatch, lane)
        for lane in ("columns", "python-columns", "records", "per-line")
    }
    assert reports["columns"] == reports["python-columns"]
    assert reports["columns"] == reports["records"] == reports["per-line"]
    return reports["columns"]


def test_plan_reports_the_same_with_repeats_and_cache_hits(
    svc: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = _plain_lines(60)
    lines += lines[:10]  # repeated ids: invalid
    lines += [
        x.replace(b'"r', b'"again-r', 1) for x in lines[20:30]
    ]  # same requests: in-run duplicates
    lines.append(lines[40].replace(b'"r', b'"again-r', 1))  # a cache hit's repeat: a hit too
    hit = decode.parse_line(lines[40], 41, _ctx(svc, True, svc.settings.default_tenant))
    svc.cache.put_many([(hit.key, Outcome(status=SUCCEEDED, output_text="cached"))])
    stats = _three_plans(svc, _write(tmp_path, lines), monkeypatch)["stats"]
    assert stats["lines"] == 81 and stats["invalid"] == 10 and stats["cache_hits"] == 2
    assert stats["invalid_by_type"] == {"duplicate_custom_id": 10}
    assert stats["in_run_duplicates"] == 10 and stats["to_send"] == 59
    assert stats["unique"] == 60 and stats["valid"] == 71


def test_plan_reports_the_same_on_every_line_kind(
    svc: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = _plain_lines(20) + _corpus() + _plain_lines(20, 100)
    stats = _three_plans(svc, _write(tmp_path, lines), monkeypatch)["stats"]
    assert stats["invalid"] > 10 and stats["to_send"] > 40


def test_plan_in_worker_processes_reports_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pooled = open_test_services(tmp_path, BATCHD_INGEST_WORKERS="2")
    try:
        lines = _plain_lines(3000) + _plain_lines(50)  # 50 repeated ids
        path = _write(tmp_path, lines)
        small = functools.partial(iter_blocks, block_bytes=64 * 1024)  # many blocks
        monkeypatch.setattr("batchd.intake.ingest.iter_blocks", small)
        report = _plan(pooled, path, monkeypatch, "columns")
        assert report == _plan(pooled, path, monkeypatch, "per-line")
        assert report["stats"]["invalid"] == 50 and report["stats"]["to_send"] == 3000
    finally:
        pooled.close()


SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(raw=st.one_of(near_plain_lines(), hostile_lines()))
@example(raw=encode({"id": "a", "model": OPENAI_MODEL, "prompt": "x", "cache": None}))
@example(raw=encode({"id": None, "model": OPENAI_MODEL, "messages": None, "prompt": "x"}))
def test_generated_lines_get_the_record_of_parse_line(svc: Any, raw: bytes) -> None:
    for use_cache in (True, False):
        _same_as_parse_line(_ctx(svc, use_cache), raw)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    lines=st.lists(
        st.one_of(near_plain_lines(), hostile_lines(), st.sampled_from(_plain_lines(8))),
        min_size=1,
        max_size=12,
    )
)
def test_generated_files_plan_the_same(
    svc: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lines: list[bytes]
) -> None:
    path = tmp_path / "gen.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    _three_plans(svc, str(path), monkeypatch)


@pytest.mark.parametrize("deadline_s", [86400.0, 3600.0, 30.0])  # batch, synchronous, none
def test_bulk_chunking_fills_chunks_as_the_per_line_path_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deadline_s: float
) -> None:
    """Columns go to the chunker in bulk (planning.chunk_runs): chunks rolled over on lines
    and bytes, open across blocks, priced slice by slice, on the batch tier, the synchronous
    one or none (failed at finish), are the per-line path's to the last id and count."""
    tight = open_test_services(
        tmp_path,
        BATCHD_INGEST_WORKERS="1",
        BATCHD_OPENAI_MAX_LINES_PER_CHUNK="7",
        BATCHD_OPENAI_MAX_BYTES_PER_CHUNK="2000",
    )
    try:
        lines = []
        for i, raw in enumerate(_plain_lines(400)):
            model = ("gpt-5-mini", OPENAI_MODEL, OPENAI_MODEL, "gpt-5.4-mini")[i * 7 % 4]
            lines.append(raw.replace(OPENAI_MODEL.encode(), model.encode()))
        lines += lines[:30]  # repeated ids
        lines.append(b'{"x": 1}')  # a block of records among the blocks of columns
        lines += _plain_lines(60, 1000)
        path = _write(tmp_path, lines)
        small = functools.partial(iter_blocks, block_bytes=9 * 1024)  # chunks span blocks
        monkeypatch.setattr("batchd.intake.ingest.iter_blocks", small)
        monkeypatch.setattr("batchd.planning.estimates.PRICE_SLICE", 37)  # folds mid-block
        reports = {}
        for lane in ("columns", "per-line"):
            with monkeypatch.context() as m:
                if lane != "columns":
                    m.setattr(native_lane, "_lane", None)
                    m.setattr(column_lane.ColumnLane, "take_block", lambda s, r, n: [-1] * len(r))
                report = plan_file(tight, path, {}, deadline_at=NOW + deadline_s, now=NOW)
            reports[lane] = msgspec.to_builtins(report)
        assert reports["columns"] == reports["per-line"]
        stats = reports["columns"]["stats"]
        assert stats["to_send"] == 460 and stats["invalid"] == 31
        if deadline_s > 60:
            assert len(reports["columns"]["chunks"]) > 60  # rolled over many times
    finally:
        tight.close()
