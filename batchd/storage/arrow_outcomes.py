"""Outcomes as Arrow columns: many Outcome structs to one record batch and back.

A column holds exactly the field's value (floats as float64, embeddings included), so a
batch turned back into Outcomes equals the structs it was made from. Chunk outcome parts
are stored this way (storage.chunk_outcomes) and finalize joins lines with them
column-wise (run.answer_index, output.row_assembly).
"""

from __future__ import annotations

import msgspec
import pyarrow as pa

from batchd.outcome import Outcome

_F64_LIST = pa.list_(pa.float64())
_TYPES: dict[str, pa.DataType] = {
    "input_tokens": pa.int64(),
    "cached_input_tokens": pa.int64(),
    "cache_write_tokens": pa.int64(),
    "cache_write_1h_tokens": pa.int64(),
    "output_tokens": pa.int64(),
    "reasoning_tokens": pa.int64(),
    "cost_usd": pa.float64(),
    "gpu_seconds": pa.float64(),
    "submitted_at": pa.float64(),
    "completed_at": pa.float64(),
    "embedding": _F64_LIST,
    "embeddings": pa.list_(_F64_LIST),
    "output_texts": pa.list_(pa.string()),
    "schema_valid": pa.bool_(),
    "retryable": pa.bool_(),
}
FIELDS = msgspec.structs.fields(Outcome)
OUTCOME_SCHEMA = pa.schema([(f.name, _TYPES.get(f.name, pa.string())) for f in FIELDS])
KEY = "key"  # a keyed batch's first column: each outcome's request key (binary)
KEYED_SCHEMA = pa.schema([(KEY, pa.binary()), *OUTCOME_SCHEMA])
_ROW = pa.struct(list(OUTCOME_SCHEMA))
_astuple = msgspec.structs.astuple


def outcome_batch(outcomes: list[Outcome]) -> pa.RecordBatch:
    """One row per outcome, one column per Outcome field (OUTCOME_SCHEMA)."""
    if not outcomes:
        return _empty()
    rows = pa.array(list(map(_astuple, outcomes)), type=_ROW)  # tuples: converted in C++
    return pa.RecordBatch.from_struct_array(rows)


def keyed_batch(keys: list[bytes], outcomes: list[Outcome]) -> pa.RecordBatch:
    """outcome_batch with the request keys as its first column (KEYED_SCHEMA)."""
    batch = outcome_batch(outcomes)
    return pa.RecordBatch.from_arrays(
        [pa.array(keys, pa.binary()), *batch.columns], schema=KEYED_SCHEMA
    )


def _empty() -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array([], type=f.type) for f in OUTCOME_SCHEMA], schema=OUTCOME_SCHEMA
    )


def outcomes_of(batch: pa.RecordBatch | pa.Table) -> list[Outcome]:
    """The Outcome structs of a batch made by outcome_batch (the rare rows' per-row path)."""
    return [Outcome(**row) for row in batch.to_pylist()]
