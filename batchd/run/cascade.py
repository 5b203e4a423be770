"""Cascades at collect: a settled line whose answer meets its alias's `escalate_on` goes on to
the next target of the alias (planning/escalation.py), as a follow-up chunk of the run.

The follow-up chunks are children of the collected chunk, created in the same store
transition that marks it collected: a crash before it re-collects the chunk (the vendor's
results are read again, nothing is bought), a crash after it finds the children in the
store, so no escalation is ever sent twice, whatever the mode. The answer that went on is
kept in the chunk's `escalated_path` (an outcome part) and joined with the final answer at
finalize (`run.answer_index`): one row, its `escalations` entries, `cost_usd` the total.
A line whose deadline leaves no time to escalate (the deadline guard's margin before it has
begun) keeps its answer, and its entry says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any, BinaryIO

from batchd.intake.decode import key_of
from batchd.outcome import Outcome
from batchd.planning.escalation import (
    Entry,
    Record,
    encode_entries,
    frame,
    met_reason,
    read_records,
    target_of,
)
from batchd.run import deadline_guard
from batchd.run.services import Services
from batchd.state.base import Chunk, Run
from batchd.storage.chunk_outcomes import write_outcomes

NO_TIME = "no time left before the deadline to escalate: the answer is kept"


class Cascade:
    """One chunk's cascade records while it settles, and the follow-up chunks they fill."""

    def __init__(
        self,
        svc: Services,
        run: Run,
        chunk: Chunk,
        retry: Chunk,
        files: ExitStack,
        *,
        released: bool,
        now: float,
    ) -> None:
        self._chunk = chunk
        self._blobs = svc.blobs(run.run_id)
        self._files = files
        self._records: Iterator[Record] | None = None
        self._retry_out: BinaryIO | None = None
        self._escalated: list[tuple[bytes, Outcome]] = []
        self.children: dict[tuple[str, str], tuple[Chunk, Any, Any]] = {}
        self.cost_usd = 0.0
        # a follow-up batch needs the time the deadline guard leaves batches
        self._in_time = (
            not run.cancel_requested and now < chunk.deadline_at - deadline_guard.margin_s(svc, run)
        )
        if chunk.escalate_path is None or released:  # released lines: another target's
            return
        self._records = read_records(files.enter_context(self._blobs.open(chunk.escalate_path)))
        retry.escalate_path = retry.path.removesuffix(".jsonl") + ".escalate"
        self._retry_out = files.enter_context(self._blobs.writer(retry.escalate_path))

    def record(self) -> Record | None:
        """The next line's record (read in step with the chunk's lines)."""
        return next(self._records, None) if self._records is not None else None

    def retried(self, record: Record | None) -> None:
        """The line goes to the retry child: its record goes with it."""
        if self._retry_out is not None and record is not None:
            self._retry_out.write(frame(record))

    def settle(self, vendor_id: str, o: Outcome, record: Record | None) -> bool:
        """True when the line went on to the next target (`o` is then not final)."""
        if record is None or not record.steps:
            return False
        met = met_reason(o, record.on)
        if met is None:
            return False
        entries = [Entry(target_of(o), o.cost_usd, self._in_time, met)]
        if not self._in_time:
            entries[0].note = NO_TIME
            o.escalations = encode_entries(entries)
            return False
        o.escalations = encode_entries(entries)
        self._escalated.append((key_of(vendor_id), o))
        self.cost_usd += o.cost_usd
        step, rest = record.steps[0], record.steps[1:]
        child, lines, esc = self._child(step.backend, step.model)
        lines.write(step.line)
        esc.write(frame(Record(record.on, rest)))  # in step: empty where none is left
        child.n_requests += 1
        child.n_bytes += len(step.line)
        return True

    def _child(self, backend: str, model: str) -> tuple[Chunk, Any, Any]:
        got = self.children.get((backend, model))
        if got is None:
            c = self._chunk
            chunk_id = f"{c.chunk_id.replace('.', '_')}e{len(self.children) + 1}"
            child = Chunk(
                chunk_id=chunk_id,
                run_id=c.run_id,
                backend=backend,
                model=model,
                path=f"chunks/{chunk_id}.jsonl",
                n_requests=0,
                n_bytes=0,
                deadline_at=c.deadline_at,
                prompt_cache=c.prompt_cache,
                endpoint=c.endpoint,
                escalate_path=f"chunks/{chunk_id}.escalate",
            )
            lines = self._files.enter_context(self._blobs.writer(child.path))
            esc = self._files.enter_context(self._blobs.writer(child.escalate_path or ""))
            got = self.children[(backend, model)] = (child, lines, esc)
        return got

    def finish(self) -> tuple[list[Chunk], str | None]:
        """The follow-up chunks, and the part holding the answers that went on (or None).

        Call inside the settle's ExitStack: the parts are written before the transition."""
        if not self._escalated:
            return [], None
        path = f"escalated/{self._chunk.chunk_id}.msgpack"
        with self._blobs.writer(path) as out:
            write_outcomes(out, self._escalated)
        return [c for c, _, _ in self.children.values()], path


def drop_empty(svc: Services, run: Run, retry: Chunk) -> None:
    """The retry child's cascade records, when the child resends nothing."""
    if retry.escalate_path:
        svc.blobs(run.run_id).remove(retry.escalate_path)
