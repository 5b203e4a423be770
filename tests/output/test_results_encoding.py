"""How results.parquet is encoded (output.results.results_writer): the values read back are
the rows written; dictionaries and statistics only where they help a reader."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from batchd.output.results import RESULTS_ROW_GROUP_ROWS, RESULTS_SCHEMA, results_writer


def _rows(n: int) -> pa.Table:
    cols: dict[str, list] = {f.name: [None] * n for f in RESULTS_SCHEMA}
    cols.update(
        run_id=["run-1"] * n,
        line_no=list(range(1, n + 1)),
        custom_id=[f"req-{i}" for i in range(n)],
        tags=[{"job": "nightly"} if i % 2 else {} for i in range(n)],
        status=["succeeded" if i % 7 else "failed" for i in range(n)],
        output_text=[f"answer {i}" for i in range(n)],
        response_json=[f'{{"id": "c-{i}"}}' for i in range(n)],
        embedding=[[0.5, float(i)] if i % 3 == 0 else None for i in range(n)],
        cost_usd=[i * 1e-6 for i in range(n)],
    )
    return pa.table(cols, schema=RESULTS_SCHEMA)


def test_values_read_back_and_where_statistics_are_kept() -> None:
    rows = _rows(RESULTS_ROW_GROUP_ROWS + 100)
    out = io.BytesIO()
    with results_writer(out) as writer:
        for batch in rows.to_batches(max_chunksize=5000):
            writer.write_batch(batch, RESULTS_ROW_GROUP_ROWS)
    data = out.getvalue()
    assert pq.read_table(io.BytesIO(data)).equals(rows)
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    assert meta.num_row_groups == 2  # row groups of RESULTS_ROW_GROUP_ROWS, whatever the batch
    group = meta.row_group(0)
    columns = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    for name in ("line_no", "status", "cost_usd", "custom_id"):  # filters skip row groups
        assert columns[name].statistics is not None and columns[name].statistics.has_min_max
    for name in ("response_json", "output_text", "embedding.list.element"):
        stats = columns[name].statistics
        assert stats is None or not stats.has_min_max
    assert "RLE_DICTIONARY" in columns["status"].encodings
    assert "RLE_DICTIONARY" not in columns["response_json"].encodings
