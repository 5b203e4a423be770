"""Request keys as fixed-width numpy strings that sort and `searchsorted` in bulk, and as
hex text (issue 20): finalize joins lines with outcomes column-wise on these. (The outcomes
themselves as Arrow columns: storage.arrow_outcomes.)
"""

from __future__ import annotations

import binascii

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


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


def hex_column(keys: pa.Array) -> pa.Array:
    """`key.hex() if key else None` of every value of a binary array."""
    present = keys.filter(pc.fill_null(pc.greater(pc.binary_length(keys), 0), False))
    width = len(present[0].as_py()) if len(present) else 0
    fixed = fixed_width(present, width) if width else None
    if fixed is None:
        return pa.array([k.hex() if k else None for k in keys.to_pylist()], pa.string())
    digits = binascii.hexlify(fixed.tobytes())  # lowercase, as bytes.hex()
    offsets = np.arange(len(present) + 1, dtype=np.int32) * (2 * width)
    text = pa.StringArray.from_buffers(
        len(present), pa.py_buffer(offsets.tobytes()), pa.py_buffer(digits)
    )
    if len(present) == len(keys):
        return text
    where = pc.fill_null(pc.greater(pc.binary_length(keys), 0), False)
    slot = np.cumsum(np.asarray(where)) - 1
    return text.take(pa.array(np.where(np.asarray(where), slot, -1), mask=~np.asarray(where)))
