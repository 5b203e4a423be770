"""The outcome index finalize joins lines with (issue 20): Arrow columns on disk, keys sorted.

Real parts: the run's store and blobs in a BATCHD_HOME (open_services), outcome parts
written by storage.chunk_outcomes as collect writes them.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from batchd.config.settings import load_settings
from batchd.outcome import FAILED, SUCCEEDED, Outcome
from batchd.output.columnar_outcomes import KeyCodec, hex_column
from batchd.planning.escalation import Entry, encode_entries
from batchd.planning.observations import Observer
from batchd.run import answer_index
from batchd.run.answer_index import joined, outcome_index
from batchd.run.services import open_services
from batchd.state.base import CHUNK_COLLECTED, Chunk, Run
from batchd.storage.arrow_outcomes import outcome_batch, outcomes_of
from batchd.storage.chunk_outcomes import write_outcomes

RUN = "run-index"


@pytest.fixture(params=["in memory", "spilled to the IPC file"])
def spill(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Both ways the index holds outcomes: one batch in memory, or batches of 2 on file."""
    if request.param != "in memory":
        monkeypatch.setattr(answer_index, "FILE_BATCH_ROWS", 2)
    return request.param != "in memory"


def _o(text: str, cost: float = 0.001, **kw: object) -> Outcome:
    return Outcome(
        status=SUCCEEDED,
        model_used="gpt-5.4-nano",
        backend="openai",
        output_text=text,
        input_tokens=10,
        output_tokens=3,
        cost_usd=cost,
        completed_at=1.79e9,
        **kw,  # type: ignore[arg-type]
    )


def _chunk(n: int, result: str | None, escalated: str | None = None) -> Chunk:
    return Chunk(
        chunk_id=f"{RUN}-c{n}",
        run_id=RUN,
        backend="openai",
        model="gpt-5.4-nano",
        path=f"chunks/c{n}.jsonl",
        n_requests=1,
        n_bytes=0,
        deadline_at=1.8e9,
        state=CHUNK_COLLECTED,
        result_path=result,
        escalated_path=escalated,
    )


def _index(tmp_path: Path, parts: dict[str, list[tuple[bytes, Outcome]]], chunks: list[Chunk]):
    settings = load_settings(environ={"BATCHD_HOME": str(tmp_path / "home")})
    svc = open_services(settings)
    svc.store.create_run(Run(run_id=RUN, base_id="b", source="in.jsonl", output="out", options={}))
    blobs = svc.blobs(RUN)
    for path, items in parts.items():
        with blobs.open_write(path) as f:
            write_outcomes(f, items)
    svc.store.add_chunks(chunks)
    folder = tmp_path / "scratch"
    folder.mkdir()
    observer = Observer("")
    return svc, outcome_index(svc, svc.store.get_run(RUN), folder, observer), observer


def test_later_chunk_wins_and_cascades_join(tmp_path: Path, spill: bool) -> None:
    k = [bytes([i]) * 16 for i in range(4)]
    twin = k[1][:8] + b"\xff" * 8  # shares its first 8 bytes with k[1]: whole keys searched
    first = _o("old")
    attempt = _o(
        "too weak",
        cost=0.0005,
        escalations=encode_entries(
            [Entry(target="openai:gpt-5.4-nano", cost_usd=0.0005, escalated=True)]
        ),
    )
    final = _o(
        "final",
        escalations=encode_entries(
            [Entry(target="openai:gpt-5.4-mini", cost_usd=0.001, escalated=False)]
        ),
    )
    parts = {
        "r0": [(k[0], first), (k[1], _o("one")), (twin, _o("twin"))],
        "r1": [(k[0], _o("new")), (k[2], final)],
        "e1": [(k[2], attempt)],
    }
    svc, index, observer = _index(
        tmp_path, parts, [_chunk(0, "r0"), _chunk(1, "r1", escalated="e1")]
    )
    try:
        got = index.lookup([k[0], k[1], k[2], k[3], twin])
        assert set(got) == {k[0], k[1], k[2], twin}
        assert got[k[0]].output_text == "new"  # the later chunk's outcome replaced the first
        assert got[twin].output_text == "twin" and got[k[1]].output_text == "one"
        assert got[k[2]] == joined([attempt], final)  # the cascade's attempts, costs summed
        assert got[k[2]].cost_usd == final.cost_usd + attempt.cost_usd
        table, rows, found = index.find(pa.array([k[3], k[2], k[0]], pa.binary()))
        assert found.tolist() == [False, True, True]
        assert outcomes_of(table.take(rows)) == [got[k[2]], got[k[0]]]
        sums = observer.sums()
        assert sums  # every outcome read was observed (tokens per chunk)
        assert (tmp_path / "scratch" / "outcomes.arrow").exists() == spill
    finally:
        index.close()
        svc.close()


def test_keys_of_other_widths_and_an_empty_index(tmp_path: Path, spill: bool) -> None:
    parts = {"r0": [(b"a", _o("a")), (b"a\x00", _o("a0")), (b"bb", _o("bb"))]}
    svc, index, _ = _index(tmp_path, parts, [_chunk(0, "r0"), _chunk(1, None)])
    try:
        got = index.lookup([b"a", b"a\x00", b"bb", b"b", b"x" * 40])
        assert {k: o.output_text for k, o in got.items()} == {
            b"a": "a",
            b"a\x00": "a0",
            b"bb": "bb",
        }
    finally:
        index.close()
        svc.close()
    svc, index, _ = _index(tmp_path / "empty", {}, [])
    try:
        assert index.lookup([b"k" * 16]) == {}
    finally:
        index.close()
        svc.close()


def test_columns_round_trip_and_keys() -> None:
    outcomes = [
        _o("x", embedding=[0.1, 1e-40], schema_valid=False, request_id="r"),
        Outcome(status=FAILED, error_type="server_error", embeddings=[[1.5], [2.0]]),
        Outcome(status=SUCCEEDED, output_texts=["a", "b"], cost_usd=0.30000000000000004),
    ]
    assert outcomes_of(outcome_batch(outcomes)) == outcomes
    assert outcome_batch([]).num_rows == 0
    codec = KeyCodec(None, 2)
    encoded, ok = codec.encode([b"a", b"a\x00", b"abc"])
    assert encoded[0] != encoded[1] and ok.tolist() == [True, True, False]
    keys = pa.array([b"\x00\xff" * 8, None, b"", b"\x10" * 16], pa.binary())
    want = [k.hex() if k else None for k in keys.to_pylist()]
    assert hex_column(keys).to_pylist() == want
    odd = pa.array([b"ab", b"abc", None], pa.binary())
    assert hex_column(odd).to_pylist() == ["6162", "616263", None]
    assert hex_column(keys.slice(3)).to_pylist() == [want[3]]
