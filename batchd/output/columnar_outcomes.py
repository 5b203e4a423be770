"""Outcomes as Arrow columns (issue 20): many Outcome structs to one record batch and back,
and request keys as fixed-width numpy strings that sort and `searchsorted` in bulk.

Finalize joins lines with outcomes column-wise; these are the conversions it rests on. A
column holds exactly the field's value (floats as float64, embeddings included), so a
batch turned back into Outcomes equals the structs it was made from.
"""

from __future__ import annotations

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
_ROW = pa.struct(list(OUTCOME_SCHEMA))
_astuple = msgspec.structs.astuple


def outcome_batch(outcomes: list[Outcome]) -> pa.RecordBatch:
    """One row per outcome, one column per Outcome field (OUTCOME_SCHEMA)."""
    if not outcomes:
        return _empty()
    rows = pa.array(list(map(_astuple, outcomes)), type=_ROW)  # tuples: converted in C++
    return pa.RecordBatch.from_struct_array(rows)


def _empty() -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array([], type=f.type) for f in OUTCOME_SCHEMA], schema=OUTCOME_SCHEMA
    )


def outcomes_of(batch: pa.RecordBatch | pa.Table) -> list[Outcome]:
    """The Outcome structs of a batch made by outcome_batch (the rare rows' per-row path)."""
    return [Outcome(**row) for row in batch.to_pylist()]


class KeyCodec:
    """Request keys as numpy fixed-width byte strings: raw when every key has one width (the
    16-byte request keys), else each prefixed with its length (so b"a" and b"a\\0" differ)."""

    def __init__(self, width: int | None, max_len: int = 0) -> None:
        self.width = width  # None: length-prefixed keys of up to max_len bytes
        self.max_len = max_len

    @classmethod
    def for_keys(cls, lengths: np.ndarray) -> KeyCodec:
        if len(lengths) and int(lengths.min()) == int(lengths.max()):
            return cls(int(lengths[0]))
        return cls(None, int(lengths.max()) if len(lengths) else 0)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(f"S{self.width if self.width is not None else self.max_len + 1}")

    def encode(self, keys: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Keys as an array of self.dtype, and which keys this codec can hold at all (one it
        cannot is found nowhere: its slot holds b"")."""
        if self.width is not None:
            width = self.width
            ok = np.array([len(k) == width for k in keys], dtype=bool)
            return np.array([k if len(k) == width else b"" for k in keys], self.dtype), ok
        top = self.max_len
        ok = np.array([len(k) <= top for k in keys], dtype=bool)
        encoded = [bytes((len(k),)) + k if len(k) <= top else b"" for k in keys]
        return np.array(encoded, dtype=self.dtype), ok

    def encode_arrow(self, keys: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """As encode, for an Arrow binary array without nulls."""
        if self.width is not None:
            fixed = fixed_width(keys, self.width)
            if fixed is not None:
                return fixed, np.ones(len(keys), dtype=bool)
        return self.encode(keys.to_pylist())


def fixed_width(keys: pa.Array, width: int) -> np.ndarray | None:
    """The values of a binary array without nulls as numpy S<width> (zero-copy where the
    data allows), or None unless every value is `width` bytes long."""
    if keys.null_count or keys.type != pa.binary():
        return None
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=f"S{width}")
    offsets = np.frombuffer(keys.buffers()[1], dtype=np.int32)[keys.offset : keys.offset + n + 1]
    if not (np.diff(offsets) == width).all():
        return None
    data = keys.buffers()[2]
    return np.frombuffer(data, dtype=f"S{width}", count=n, offset=int(offsets[0]))


_HEX = np.array([list(f"{b:02x}".encode()) for b in range(256)], dtype=np.uint8)


def hex_column(keys: pa.Array) -> pa.Array:
    """`key.hex() if key else None` of every value of a binary array."""
    present = keys.filter(pc.fill_null(pc.greater(pc.binary_length(keys), 0), False))
    width = len(present[0].as_py()) if len(present) else 0
    fixed = fixed_width(present, width) if width else None
    if fixed is None:
        return pa.array([k.hex() if k else None for k in keys.to_pylist()], pa.string())
    digits = _HEX[np.frombuffer(fixed.tobytes(), dtype=np.uint8)].tobytes()
    offsets = np.arange(len(present) + 1, dtype=np.int32) * (2 * width)
    text = pa.StringArray.from_buffers(
        len(present), pa.py_buffer(offsets.tobytes()), pa.py_buffer(digits)
    )
    if len(present) == len(keys):
        return text
    where = pc.fill_null(pc.greater(pc.binary_length(keys), 0), False)
    slot = np.cumsum(np.asarray(where)) - 1
    return text.take(pa.array(np.where(np.asarray(where), slot, -1), mask=~np.asarray(where)))
