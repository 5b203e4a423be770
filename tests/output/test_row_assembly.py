"""Columnar row assembly (output.results) gives exactly the rows, costs, status counts and
tier sums of the per-row assembly it replaced (tests/support/row_oracle.py), on batches of
every row kind: invalid, cache hit, in-run follower, no result, each backend and tier,
prompt-cache tokens, aliases and unpriced models; hypothesis makes the outcomes."""

from __future__ import annotations

from typing import Any

import msgspec
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from batchd.config.pricing import load_price_book
from batchd.config.settings import load_settings
from batchd.intake.ingest import LINES_SCHEMA
from batchd.outcome import CANCELED, EXPIRED, FAILED, SUCCEEDED, Outcome
from batchd.output import results
from tests.support import row_oracle

PRICES = load_price_book(load_settings(environ={}))
MODELS = ["gpt-5.4-nano", "claude-haiku-4-5", "small", "no-such-model", ""]
_enc = msgspec.msgpack.Encoder()


def _baseline_model(m: str) -> str:
    return "gpt-5-mini" if m == "small" else m  # "small": an alias priced at its reference


tokens = st.integers(0, 10**7)
outcomes = st.builds(
    Outcome,
    status=st.sampled_from([SUCCEEDED, SUCCEEDED, FAILED, EXPIRED, CANCELED]),
    model_used=st.sampled_from(["gpt-5.4-nano", "claude-haiku-4-5", "tiny-llama", ""]),
    backend=st.sampled_from(["openai", "anthropic", "vllm", "gemini", ""]),
    output_text=st.one_of(st.none(), st.text(max_size=5)),
    response_json=st.one_of(st.none(), st.just('{"id": "x"}')),
    finish_reason=st.one_of(st.none(), st.just("stop")),
    error_type=st.one_of(st.none(), st.just("rate_limited")),
    error_message=st.one_of(st.none(), st.just("try later")),
    input_tokens=tokens,
    cached_input_tokens=st.one_of(st.just(0), tokens),
    cache_write_tokens=st.one_of(st.just(0), tokens),
    output_tokens=tokens,
    cost_usd=st.floats(0, 50, allow_nan=False),
    gpu_seconds=st.floats(0, 10, allow_nan=False),
    submitted_at=st.one_of(st.none(), st.floats(1.7e9, 1.8e9)),
    completed_at=st.one_of(st.none(), st.floats(1.7e9, 1.8e9)),
    tier=st.sampled_from([None, "batch", "flex", "realtime", "gpu"]),
)
# (state, cache, has an outcome in the index) for each kind of row
KINDS = [
    ("invalid", "none", False),
    ("cached", "exact", False),
    ("pending", "in_run", True),
    ("pending", "none", True),
    ("pending", "none", True),
    ("pending", "none", False),  # no result recorded: MISSING_RESULT
]


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[pa.RecordBatch], dict[bytes, Outcome]]:
    index: dict[bytes, Outcome] = {}
    batches = []
    line_no = 0
    for _ in range(draw(st.integers(1, 3))):
        cols: dict[str, list[Any]] = {name: [] for name in LINES_SCHEMA.names}
        for _ in range(draw(st.integers(1, 25))):
            line_no += 1
            state, cache, indexed = draw(st.sampled_from(KINDS))
            key = None if state == "invalid" else bytes([draw(st.integers(0, 7))]) * 16
            o = draw(outcomes)
            if indexed and key is not None:
                index.setdefault(key, o)
            row = {
                "line_no": line_no,
                "custom_id": f"r{line_no}",
                "request_key": key,
                "tenant": draw(st.sampled_from(["", "acme"])),
                "tags": draw(st.sampled_from([{}, {"k": "v"}])),
                "model_requested": draw(st.sampled_from(MODELS)),
                "state": state,
                "cache": cache,
                "error_type": "bad_max_tokens" if state == "invalid" else None,
                "error_message": "max_tokens must be positive" if state == "invalid" else None,
                "cached_outcome": _enc.encode(o) if state == "cached" else None,
            }
            for name, value in row.items():
                cols[name].append(value)
        batches.append(pa.RecordBatch.from_pydict(cols, schema=LINES_SCHEMA))
    return batches, index


def _assemble(module: Any, batches: list[pa.RecordBatch], index: dict[bytes, Outcome]) -> Any:
    summary = module.CostSummary("run-1", PRICES.version)
    a = module.RowAssembler(
        "run-1",
        PRICES,
        lambda keys: {k: index[k] for k in keys if k in index},
        summary,
        baseline_model=_baseline_model,
    )
    rows = [r for b in batches for r in a.assemble(b).to_pylist()]
    totals = {f: summary.total(f) for f in ("cost_usd", "baseline_cost_usd")}
    return (
        rows,
        summary.table().to_pylist(),
        list(a.status_counts.items()),
        [(t, list(v.items())) for t, v in a.tiers.items()],
        totals,
    )


@settings(max_examples=60, deadline=None)
@given(run=runs())
def test_columnar_assembly_gives_the_per_row_results(run: Any) -> None:
    batches, index = run
    new = _assemble(results, batches, index)
    old = _assemble(row_oracle, batches, index)
    assert new[0] == old[0]  # every row, every column, floats to the bit
    assert new[1:] == old[1:]  # costs.parquet rows, status counts, tiers (order too)
    assert len(new[0]) == sum(b.num_rows for b in batches)


def test_a_realistic_batch_matches_and_has_every_kind() -> None:
    index = {
        b"\x01" * 16: Outcome(
            status=SUCCEEDED,
            model_used="gpt-5.4-nano",
            backend="openai",
            input_tokens=1000,
            cached_input_tokens=600,
            output_tokens=20,
            cost_usd=0.001,
            tier="realtime",
        ),
        b"\x02" * 16: Outcome(status=SUCCEEDED, model_used="tiny", backend="vllm", gpu_seconds=2.0),
    }
    hit = Outcome(status=SUCCEEDED, model_used="gpt-5.4-nano", input_tokens=5, output_tokens=3)
    cols = {
        "line_no": [1, 2, 3, 4, 5],
        "custom_id": ["a", "b", "c", "d", "e"],
        "request_key": [b"\x01" * 16, b"\x01" * 16, b"\x02" * 16, None, b"\x03" * 16],
        "tenant": ["", "", "t", "", ""],
        "tags": [{}, {}, {}, {}, {}],
        "model_requested": ["gpt-5.4-nano"] * 3 + ["", "gpt-5.4-nano"],
        "state": ["pending", "pending", "pending", "invalid", "cached"],
        "cache": ["none", "in_run", "none", "none", "exact"],
        "error_type": [None, None, None, "invalid_json", None],
        "error_message": [None, None, None, "line is not JSON", None],
        "cached_outcome": [None, None, None, None, _enc.encode(hit)],
    }
    batch = pa.RecordBatch.from_pydict(cols, schema=LINES_SCHEMA)
    new, old = _assemble(results, [batch], index), _assemble(row_oracle, [batch], index)
    assert new == old
    rows = new[0]
    assert [r["status"] for r in rows] == ["succeeded"] * 3 + ["invalid", "succeeded"]
    assert [r["tier"] for r in rows] == ["realtime", "realtime", "gpu", None, None]
    assert rows[1]["cost_usd"] == 0.0 and rows[1]["input_tokens"] == 0  # a follower
    assert rows[4]["backend"] == "cache" and rows[3]["error_type"] == "invalid_json"
    assert rows[0]["baseline_cost_usd"] > 0
