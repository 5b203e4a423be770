"""Past its dedup memory, ingest spills the rest of the input to disk and settles it in
epochs (intake.spill): the rows, counts, chunk files and plan are exactly those of the
in-memory sets, whatever the switch point and the epochs: ids and keys repeated across
them, invalid lines, cache hits, in worker processes, on the column lane of a plan, and on
generated files."""

from __future__ import annotations

import functools
import io
import logging
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchd.intake import spill
from batchd.intake.ingest import ingest
from batchd.intake.lines import iter_blocks
from batchd.intake.records import Block, Parsed
from batchd.intake.seen import HashSeen, SeenSet
from batchd.intake.spill import Replay, Spill
from batchd.outcome import SUCCEEDED, Outcome
from batchd.planning.chunking import Chunker
from batchd.run.pipeline import plan_file
from tests.intake.test_column_lane import _plain_lines
from tests.intake.test_ingest_workers import _data
from tests.support.hostile import (
    hostile_lines,
    ingest_rows,
    near_plain_lines,
    open_test_services,
)

pytestmark = pytest.mark.timeout(300)
NOW = 1_800_000_000.0
SPILLED = "settled from disk"


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Any:
    s = open_test_services(
        tmp_path_factory.mktemp("spill"), BATCHD_OPENAI_MAX_LINES_PER_CHUNK="500"
    )
    yield s
    s.close()


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    small = functools.partial(iter_blocks, block_bytes=16 * 1024)  # many blocks
    monkeypatch.setattr("batchd.intake.ingest.iter_blocks", small)


def _with_hits(svc: Any, data: bytes) -> bytes:
    """Some of the data's requests cached, so hits fall on both sides of the switch."""
    lines = data.splitlines()
    probe = ingest_rows(svc, b"\n".join(lines[::97]) + b"\n", dry_run=True)[1]
    keys = [r["request_key"] for r in probe if r["request_key"]]
    svc.cache.put_many([(k, Outcome(status=SUCCEEDED, output_text="cached")) for k in keys])
    return data


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize(("workers", "epoch_lines"), [(1, 1 << 20), (1, 300), (2, 700)])
def test_spilled_ingest_is_the_in_memory_one(
    svc: Any,
    workers: int,
    epoch_lines: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One epoch, or many (answers from the earlier epochs' files too); the sets moved to
    disk at the switch in many runs."""
    monkeypatch.setattr(spill, "EPOCH_MIN_LINES", epoch_lines)
    monkeypatch.setattr(spill, "FLUSH_ENTRIES", 512)
    data = _with_hits(svc, _data(6_000))
    in_memory = ingest_rows(svc, data, workers=workers)
    assert in_memory[0].in_run_duplicates > 500 and in_memory[0].cache_hits > 10
    assert in_memory[0].invalid_by_type["duplicate_custom_id"] > 100
    for budget_bytes in (0, 16 * 1_500, 16 * 6_000):  # from the start; early; late
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="batchd.intake"):
            spilled = ingest_rows(svc, data, workers=workers, dedup_memory_bytes=budget_bytes)
        assert SPILLED in caplog.text
        assert spilled[0] == in_memory[0]
        assert spilled[1] == in_memory[1]
        assert spilled[2] == in_memory[2] and len(spilled[2]) > 2


def _plan_stats(svc: Any, data: bytes, **options: Any) -> tuple[Any, Any]:
    """ingest() as `batchd plan` runs it (a dry run, no rows: the column lane)."""
    chunker = Chunker(
        "plan", svc.settings, svc.prices, svc.backends, lambda rel: None,
        run_deadline_at=float("inf"), router=svc.router, dry_run=True,
    )  # fmt: skip
    stats = ingest(
        io.BytesIO(data), router=svc.router, chunker=chunker, cache=svc.cache,
        default_tenant="t", run_salt="salt", write_rows=None, **options,
    )  # fmt: skip
    chunker.finish()
    return msgspec.to_builtins(stats), msgspec.to_builtins(chunker.summary)


@pytest.mark.usefixtures("small_blocks")
def test_a_spilled_plan_settles_its_columns_the_same(
    svc: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spill, "EPOCH_MIN_LINES", 400)
    lines = _plain_lines(3_000)
    lines += lines[100:400]  # repeated ids
    lines += [x.replace(b'"r', b'"again-r', 1) for x in lines[1_000:2_000]]  # same requests
    data = _with_hits(svc, b"\n".join(lines) + b"\n")
    in_memory = _plan_stats(svc, data)
    assert in_memory[0]["invalid"] == 300 and in_memory[0]["in_run_duplicates"] > 900
    for budget_bytes in (0, 16 * 1_000, 16 * 4_000):
        with caplog.at_level(logging.INFO, logger="batchd.intake"):
            assert _plan_stats(svc, data, dedup_memory_bytes=budget_bytes) == in_memory
        assert SPILLED in caplog.text


@pytest.mark.usefixtures("small_blocks")
def test_the_setting_reaches_a_plan(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """BATCHD_INGEST_DEDUP_MEMORY_MB: 1 MB holds 65,536 entries, fewer than 40,000 lines
    make (ids and keys); the plan is the same as with the default."""
    lines = _plain_lines(36_000)
    lines += [x.replace(b'"r', b'"again-r', 1) for x in lines[:4_000]]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    reports = []
    for mb in ("1", "32"):
        s = open_test_services(tmp_path / mb, BATCHD_INGEST_DEDUP_MEMORY_MB=mb)
        try:
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="batchd.intake"):
                report = plan_file(s, str(path), {}, deadline_at=NOW + 86400, now=NOW)
            reports.append((msgspec.to_builtins(report), SPILLED in caplog.text))
        finally:
            s.close()
    (spilled, did), (in_memory, did_not) = reports
    assert did and not did_not
    assert spilled == in_memory and spilled["stats"]["in_run_duplicates"] == 4_000


def test_a_block_msgpack_cannot_hold_comes_back_as_it_went(tmp_path: Path) -> None:
    odd = Parsed(3, "id-\ud800", bytes(16), "t", {"k": "\udfff"}, "m", key=bytes(range(16)))
    block = Block([odd], 0, 10)
    with pytest.raises(UnicodeEncodeError):
        msgspec.msgpack.encode(block)
    with Spill(SeenSet(), SeenSet(), str(tmp_path)) as spilled:
        spilled.add(block)
        back = []
        for b, ids, keys in spilled.finish():
            assert ids.check_add([odd.id_digest]) == [False]  # as a settle asks them
            assert keys.check_add([odd.key]) == [False]
            back.append(b)
    assert back == [block]


def _block(first: int, ids: list[bytes], keys: list[bytes]) -> Block:
    records = [
        Parsed(first + i, f"c{first + i}", d, "t", {}, "m", key=k)
        for i, (d, k) in enumerate(zip(ids, keys, strict=True))
    ]
    return Block(records, 0, 1)


@pytest.mark.parametrize("held", [SeenSet, HashSeen])
def test_a_closed_epoch_is_given_back_before_the_input_ends(tmp_path: Path, held: Any) -> None:
    """Blocks come back while later ones are still being added, with answers from the
    in-memory set (either kind), an earlier epoch and their own epoch."""
    before = held()
    before.check_add([b"A" * 16])
    keys = held()
    keys.check_add([b"k" * 16])
    with Spill(before, keys, str(tmp_path), epoch_min_lines=2) as spilled:
        spilled.add(_block(1, [b"A" * 16, b"B" * 16], [b"k" * 16, b"x" * 16]))
        first = spilled.ready()  # the epoch closed at 2 lines
        assert first is not None
        block, ids, key_checks = first
        assert [r.line_no for r in block.records] == [1, 2]
        assert ids.check_add([r.id_digest for r in block.records]) == [True, False]
        assert key_checks.check_add([b"x" * 16]) == [False]  # line 1's key is not asked
        assert spilled.ready() is None  # (its answers all used: else the replay refuses)
        spilled.add(_block(3, [b"B" * 16, b"C" * 16, b"C" * 16], [b"y" * 16] * 3))
        later = [
            (ids.check_add([r.id_digest for r in block.records]), key_checks.check_add([b"y" * 16]))
            for block, ids, key_checks in spilled.finish()
        ]
    assert later == [([True, False, True], [False])]  # B from epoch one; C twice in its own


def test_a_replay_refuses_to_answer_out_of_step() -> None:
    import numpy as np

    replay = Replay(np.zeros(1, dtype=np.uint8), 3)
    assert replay.check_add([b"x" * 16, b"y" * 16]) == [False, False]
    with pytest.raises(RuntimeError, match="past its answers"):
        replay.check_add([b"x" * 16, b"y" * 16])
    short = Replay(np.zeros(1, dtype=np.uint8), 3)
    short.check_add([b"x" * 16])
    with pytest.raises(RuntimeError, match="1 of 3"):
        short.done()


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    pool=st.lists(
        st.one_of(near_plain_lines(), hostile_lines(), st.sampled_from(_plain_lines(6))),
        min_size=1,
        max_size=8,
    ),
    picks=st.lists(st.integers(0, 7), min_size=1, max_size=40),
    budget_entries=st.integers(0, 60),
    epoch_lines=st.integers(1, 12),
    flush_entries=st.integers(1, 8),
)
def test_generated_files_spill_the_same(
    svc: Any,
    pool: list[bytes],
    picks: list[int],
    budget_entries: int,
    epoch_lines: int,
    flush_entries: int,
) -> None:
    """Lines drawn with repeats from a few generated ones (so ids and keys repeat), one
    block per line, the switch anywhere, epochs of any size, the sets moved to disk and
    the checks flushed in runs of any size: rows, counts, chunks and plan as in memory."""
    data = b"\n".join(pool[i % len(pool)] for i in picks) + b"\n"
    tiny = functools.partial(iter_blocks, block_bytes=1)
    with pytest.MonkeyPatch.context() as m:
        m.setattr("batchd.intake.ingest.iter_blocks", tiny)
        m.setattr(spill, "EPOCH_MIN_LINES", epoch_lines)
        m.setattr(spill, "FLUSH_ENTRIES", flush_entries)
        budget = {"dedup_memory_bytes": 16 * budget_entries}
        assert ingest_rows(svc, data, **budget) == ingest_rows(svc, data)
        assert _plan_stats(svc, data, **budget) == _plan_stats(svc, data)
