"""Result rows (DESIGN §3): the Parquet schema and the OpenAI-format export.

Finalize joins the lines parts (one row per input line, in input order) with the
outcomes of the unique requests, by request key, in batches (output.row_assembly); the
cost summary is output.cost_summary.
"""

from __future__ import annotations

import functools
from typing import BinaryIO

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from batchd.outcome import FAILED, Outcome
from batchd.output.cost_summary import COSTS_SCHEMA, CostSummary
from batchd.output.openai_export import export_line

__all__ = ["COSTS_SCHEMA", "MISSING_RESULT", "RESULTS_SCHEMA", "CostSummary", "write_openai_jsonl"]

_TS = pa.timestamp("us", tz="UTC")

RESULTS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("line_no", pa.int64()),
        ("custom_id", pa.string()),
        ("request_key", pa.string()),
        ("tenant", pa.string()),
        ("tags", pa.map_(pa.string(), pa.string())),
        ("model_requested", pa.string()),
        ("model_used", pa.string()),
        ("backend", pa.string()),
        ("tier", pa.string()),  # batch | flex | realtime | gpu; NULL: not served by this run
        ("status", pa.string()),
        ("cache", pa.string()),
        ("output_text", pa.string()),
        ("response_json", pa.string()),
        ("finish_reason", pa.string()),
        ("tool_calls", pa.string()),  # JSON text in OpenAI's shape; NULL: no tool call
        ("embedding", pa.list_(pa.float32())),  # NULL: not an embeddings request of one input
        # a line of several inputs / prompts: all vectors / each prompt's text, in input order
        ("embeddings", pa.list_(pa.list_(pa.float32()))),  # NULL: not several inputs
        ("output_texts", pa.list_(pa.string())),  # NULL: not several prompts
        ("schema_valid", pa.bool_()),  # NULL: the line gave no JSON schema
        ("error_type", pa.string()),
        ("error_message", pa.string()),
        ("request_id", pa.string()),  # the vendor's id for this request; NULL: none given
        # cascades: JSON text, every target tried in order (planning/escalation.py); NULL: one
        ("escalations", pa.string()),
        ("input_tokens", pa.int64()),
        ("cached_input_tokens", pa.int64()),
        ("cache_write_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("reasoning_tokens", pa.int64()),  # the part of output_tokens spent thinking
        ("cost_usd", pa.float64()),
        ("baseline_cost_usd", pa.float64()),
        ("gpu_seconds", pa.float64()),
        ("submitted_at", _TS),
        ("completed_at", _TS),
        # semantic cache: the entry that answered (cache = semantic) or was checked against the
        # model's answer (a verification sample), how alike (cosine), and that check's verdict
        ("cache_source_key", pa.string()),
        ("similarity", pa.float64()),
        ("semantic_verified", pa.string()),  # agreed | disagreed | unverified; NULL: no sample
    ]
)

_json = msgspec.json.Encoder()

# How results.parquet is encoded (its values are the same whatever these say). A column
# whose every row holds its own value (ids, keys, answers, vectors) gets no dictionary: the
# writer would build one per row group only to drop it. Min/max statistics are kept where
# they let a reader skip row groups (line_no, status, model, cost, times), not for text and
# vectors, where computing them costs each finalize and helps no filter.
_OWN_VALUES = {
    "line_no", "custom_id", "request_key", "output_text", "response_json", "tool_calls",
    "embedding", "embeddings", "output_texts", "cache_source_key",
}  # fmt: skip
_NO_STATISTICS = {
    "request_key", "tags", "output_text", "response_json", "tool_calls", "embedding",
    "embeddings", "output_texts", "error_message", "escalations", "cache_source_key",
}  # fmt: skip
RESULTS_ROW_GROUP_ROWS = 8192


@functools.cache
def _encoded_columns() -> tuple[list[str], list[str]]:
    """The Parquet leaf paths ("tags.key_value.key", ...) given a dictionary, and those
    given statistics (worked out once, at the first finalize, not at import)."""
    sink = pa.BufferOutputStream()
    pq.write_table(RESULTS_SCHEMA.empty_table(), sink)
    paths = [c.path for c in pq.ParquetFile(pa.BufferReader(sink.getvalue())).schema]
    top = [p.split(".", 1)[0] for p in paths]
    return (
        [p for p, t in zip(paths, top, strict=True) if t not in _OWN_VALUES],
        [p for p, t in zip(paths, top, strict=True) if t not in _NO_STATISTICS],
    )


def results_writer(out: BinaryIO) -> pq.ParquetWriter:
    """A writer of results.parquet rows (RESULTS_SCHEMA); write batches of them with
    `write_batch(rows, RESULTS_ROW_GROUP_ROWS)`."""
    dictionary, statistics = _encoded_columns()
    return pq.ParquetWriter(
        out, RESULTS_SCHEMA, use_dictionary=dictionary, write_statistics=statistics
    )


MISSING_RESULT = Outcome(
    status=FAILED,
    error_type="no_result",
    error_message="batchd recorded no result for this request (internal error); resubmit the file",
)


def write_openai_jsonl(
    batch: pa.RecordBatch, out: BinaryIO, lines: pa.RecordBatch | None = None
) -> None:
    """The OpenAI batch output format, one line per row, for existing consumers
    (output.openai_export). `lines`: the rows' lines part (each line's endpoint)."""
    rows = batch.to_pylist()
    endpoints = lines.column("endpoint").to_pylist() if lines is not None else [None] * len(rows)
    encodings = (
        lines.column("encoding_format").to_pylist() if lines is not None else [None] * len(rows)
    )
    for row, endpoint, encoding in zip(rows, endpoints, encodings, strict=True):
        out.write(_json.encode(export_line(row, endpoint, encoding)) + b"\n")
