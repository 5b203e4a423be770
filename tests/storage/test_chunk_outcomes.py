"""Outcome parts (storage.chunk_outcomes): Arrow frames now, msgpack frames of parts written
before; every outcome comes back exactly, in order, whatever frames hold it (issue 20)."""

from __future__ import annotations

import io
import struct

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchd.outcome import Outcome
from batchd.storage import chunk_outcomes
from batchd.storage.arrow_outcomes import KEY
from batchd.storage.chunk_outcomes import read_outcome_batches, read_outcomes, write_outcomes

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
_opt_text = st.none() | _text
_int = st.integers(-(2**63), 2**63 - 1)
_float = st.floats(allow_nan=False)
_vector = st.lists(_float, max_size=4)
OUTCOMES = st.builds(
    Outcome,
    status=st.sampled_from(["succeeded", "failed", "expired", "canceled"]),
    model_used=_text,
    backend=_text,
    output_text=_opt_text,
    response_json=_opt_text,
    error_message=_opt_text,
    input_tokens=_int,
    output_tokens=_int,
    cost_usd=_float,
    completed_at=st.none() | _float,
    tier=_opt_text,
    embedding=st.none() | _vector,
    embeddings=st.none() | st.lists(_vector, max_size=3),
    output_texts=st.none() | st.lists(_text, max_size=3),
    schema_valid=st.none() | st.booleans(),
    retryable=st.booleans(),
)
ITEMS = st.lists(st.tuples(st.binary(max_size=20), OUTCOMES), max_size=12)


def _old_frame(items: list[tuple[bytes, Outcome]]) -> bytes:
    """A frame as parts were written before they were Arrow: msgpack (key, Outcome) pairs."""
    data = msgspec.msgpack.encode(items)
    return struct.pack("<I", len(data)) + data


@settings(max_examples=60, deadline=None)
@given(items=ITEMS, old=ITEMS)
def test_every_outcome_comes_back_in_order(
    items: list[tuple[bytes, Outcome]], old: list[tuple[bytes, Outcome]]
) -> None:
    part = io.BytesIO()
    with pytest.MonkeyPatch.context() as patch:  # frames of 3: most parts have several
        patch.setattr(chunk_outcomes, "ARROW_FRAME_RECORDS", 3)
        assert write_outcomes(part, items) == len(items)
    assert list(read_outcomes(io.BytesIO(part.getvalue()))) == items
    batches = list(read_outcome_batches(io.BytesIO(part.getvalue())))
    assert all(b.num_rows <= 3 for b in batches)  # one batch per frame
    assert [k for b in batches for k in b.column(KEY).to_pylist()] == [k for k, _ in items]
    # a part begun before the upgrade and appended to after it: both kinds of frame
    mixed = io.BytesIO(_old_frame(old) + part.getvalue() + _old_frame(items))
    assert list(read_outcomes(mixed)) == old + items + items


def test_an_empty_part_and_an_empty_frame() -> None:
    part = io.BytesIO()
    assert write_outcomes(part, []) == 0
    assert part.getvalue() == b""  # nothing to write: no frame
    assert list(read_outcomes(io.BytesIO(_old_frame([])))) == []
