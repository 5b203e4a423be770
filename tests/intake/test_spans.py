"""A local file's spans are the stream reader's blocks: the same lines, the same numbers."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from batchd.intake import spans
from batchd.intake.lines import iter_blocks, lines_in, lines_of, open_source
from batchd.intake.spans import Span, local_file, numbered_spans, raw_of, read_span, reading


def _streamed(path: Path, max_line_bytes: int, block_bytes: int) -> list[tuple[int, bytes | None]]:
    out, first = [], 1
    with open(path, "rb") as f:
        for block in iter_blocks(f, max_line_bytes, block_bytes):
            out += [(first + i, raw) for i, raw in enumerate(lines_of(block))]
            first += lines_in(block)
    return out


def _spanned(path: Path, max_line_bytes: int, block_bytes: int) -> tuple[list, int]:
    out, spans = [], 0
    with open(path, "rb") as f, reading(f):
        for first, block in numbered_spans(f, max_line_bytes, block_bytes):
            spans += isinstance(block, Span)
            out += [(first + i, raw) for i, raw in enumerate(lines_of(raw_of(block)))]
    return out, spans


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30),
    trailing=st.booleans(),
    block_bytes=st.integers(min_value=8, max_value=64),
    long_limit=st.booleans(),
)
def test_spans_hold_the_lines_and_numbers_iter_blocks_yields(
    tmp_path_factory, lines, trailing, block_bytes, long_limit
) -> None:
    path = tmp_path_factory.mktemp("spans") / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + (b"\n" if trailing and lines else b""))
    max_line_bytes = 1 << 20 if long_limit else 16  # below the block: the stream reader's
    got, _ = _spanned(path, max_line_bytes, block_bytes)
    assert got == _streamed(path, max_line_bytes, block_bytes)


def test_a_plain_file_is_read_as_spans_and_a_line_longer_than_a_block_ends_them(tmp_path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join([b"a" * 10] * 20 + [b"b" * 100] + [b"c"] * 5) + b"\n")
    got, spans = _spanned(path, 1 << 20, 32)
    assert got == _streamed(path, 1 << 20, 32)
    assert [raw for _, raw in got][-6:] == [b"b" * 100] + [b"c"] * 5
    assert spans >= 5  # the short lines before the long one came as spans


def test_only_a_plain_local_file_is_read_by_spans(tmp_path) -> None:
    plain, packed = tmp_path / "a.jsonl", tmp_path / "a.jsonl.gz"
    plain.write_bytes(b"x\n")
    packed.write_bytes(gzip.compress(b"x\n"))
    with open_source(plain) as f:
        assert local_file(f)
    with open_source(packed) as f:
        assert not local_file(f)
    r, w = os.pipe()
    with os.fdopen(r, "rb") as f:
        os.close(w)
        assert not local_file(f)


def test_a_span_of_a_replaced_file_is_an_error_not_other_bytes(tmp_path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"one\ntwo\n")
    with open(path, "rb") as f:
        [(_, span)] = list(numbered_spans(f, 1 << 20, 1 << 10))
    assert isinstance(span, Span)
    assert read_span(span) == b"one\ntwo"  # opened by path: no descriptor registered here
    old = tmp_path / "old.jsonl"
    os.replace(path, old)  # kept: its inode is not reused for the new file
    path.write_bytes(b"ONE\nTWO\n")
    spans._fds.clear()  # a worker that has not opened the file yet
    try:
        read_span(span)
    except OSError as exc:
        assert "no longer the file" in str(exc)
    else:
        raise AssertionError("a span of another file was read")
    assert old.read_bytes() == b"one\ntwo\n"
