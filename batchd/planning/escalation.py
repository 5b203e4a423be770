"""Cascades (issue 18): what sends a line's answer on to the next target of its alias, and
the lines kept beside a chunk for that.

An alias with `escalate_on` (config/quality.py) keeps, beside each chunk line placed on one
of its targets, an escalation record (the chunk's `escalate_path`, same order): the reasons
that escalate it and the line already encoded for every later target of the alias's order
that can take it. Collect (`run.cascade`) sends a line whose answer meets a reason to the
first of those targets, as a follow-up chunk of the run at batch price. Each attempt is an
entry of the row's `escalations` (JSON text, README "Result rows").
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import BinaryIO

import msgspec

from batchd.outcome import FAILED, SUCCEEDED, Outcome

REFUSAL_FINISHES = frozenset({"content_filter"})  # every backend maps its refusal to this
_FRAME = struct.Struct("<I")


class Step(msgspec.Struct, array_like=True, gc=False):
    """A later target of the alias and the line encoded for it."""

    backend: str
    model: str
    line: bytes


class Record(msgspec.Struct, array_like=True, gc=False):
    """One chunk line's cascade: its reasons and the targets still to try, in order."""

    on: list[str]
    steps: list[Step]


class Entry(msgspec.Struct, omit_defaults=True):
    """One attempt of a line, in its row's `escalations` list."""

    target: str  # backend:model
    cost_usd: float
    escalated: bool  # its answer went on to the next target
    met: str | None = None  # the escalate_on reason its answer met (None: it passed)
    note: str | None = None  # why an answer that met a reason was kept


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Record)
_entries_enc = msgspec.json.Encoder()
_entries_dec = msgspec.json.Decoder(list[Entry])


def met_reason(o: Outcome, on: Sequence[str]) -> str | None:
    """The first escalate_on reason the outcome meets (None: none)."""
    for reason in on:
        if reason == "failed" and o.status == FAILED:
            return reason
        if o.status != SUCCEEDED:
            continue
        if reason == "length" and o.finish_reason == "length":
            return reason
        if reason == "refusal" and o.finish_reason in REFUSAL_FINISHES:
            return reason
        if reason == "schema_invalid" and o.schema_valid is False:
            return reason
    return None


def later_steps(
    targets: Sequence[tuple[str, str]],
    col: int,
    lens: Sequence[int],
    blob: bytes,
    skip: set[int],
) -> list[Step]:
    """The targets after `col` in the alias's order that can take the line (lens > 0)."""
    steps = []
    for c in range(col + 1, len(targets)):
        if lens[c] <= 0 or c in skip:
            continue
        at = sum(lens[:c])
        steps.append(Step(*targets[c], blob[at : at + lens[c]]))
    return steps


def frame(record: Record) -> bytes:
    data = _enc.encode(record)
    return _FRAME.pack(len(data)) + data


def read_records(src: BinaryIO) -> Iterator[Record]:
    while header := src.read(_FRAME.size):
        (size,) = _FRAME.unpack(header)
        yield _dec.decode(src.read(size))


def target_of(o: Outcome) -> str:
    return f"{o.backend}:{o.model_used}"


def entries_of(o: Outcome) -> list[Entry]:
    """The attempts an outcome records (its own entry when it records none)."""
    if o.escalations:
        return _entries_dec.decode(o.escalations)
    return [Entry(target_of(o), o.cost_usd, False)]


def encode_entries(entries: list[Entry]) -> str:
    return _entries_enc.encode(entries).decode()


def decode_entries(text: str) -> list[Entry]:
    return _entries_dec.decode(text)
