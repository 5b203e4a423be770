"""Quota-aware submission: vendors cap the tokens a customer may have enqueued per model.

OpenAI (per tier and model), Azure (per deployment) and Together (per model) fail a batch at
validation when the tokens of the batches already in progress plus its own pass the cap
(`token_limit_exceeded`: nothing ran, nothing is billed). batchd keeps under it:

- the cap of a vendor and model is `enqueued_token_limits` (per model, fnmatch patterns) or
  `enqueued_token_limit` (every model) of the vendor's settings section, else the cap learned
  from such failures (`planning.observations`, kept for later runs), else none;
- a chunk's tokens are its bytes / the bytes per token measured for the model (conservative:
  the JSON framing counts too); the run's enqueued work is its vendor batches of that vendor
  and model being created or submitted;
- a pending batch chunk waits (stays `pending`) while its tokens and the enqueued ones pass
  the cap, and is split into chunks under the cap when it alone passes it;
- a batch the vendor failed for the cap is sent again as a new chunk of the same lines (not
  failed, no attempt used) once the cap is learned: the limit the vendor stated, else the
  run's other enqueued tokens at that time (at least half the chunk, which then splits).

The deadline is the bound: a chunk still waiting at its guard time is sent synchronously by
the deadline guard, one still unsent at its deadline ends `expired` (run.dispatch).
"""

from __future__ import annotations

import fnmatch
import logging
import math
import time
from contextlib import ExitStack
from typing import Any

import msgspec

from batchd.backends.base import QuotaExceeded
from batchd.config.settings import Settings
from batchd.planning.escalation import frame, read_records
from batchd.planning.observations import NOT_VENDOR, Observations, quota_key
from batchd.run.services import Services
from batchd.state.base import (
    CHUNK_COLLECTED,
    CHUNK_CREATING,
    CHUNK_ENDED,
    CHUNK_PENDING,
    CHUNK_SUBMITTED,
    Chunk,
    Run,
)
from batchd.storage.chunk_outcomes import chunk_lines

log = logging.getLogger("batchd.quota")

ENQUEUED_STATES = (CHUNK_CREATING, CHUNK_SUBMITTED)
MOVED = "moved"  # counts key: lines handed to other chunks without being sent from this one


def _section(settings: Settings, backend: str) -> Any:
    if backend in ("openai", "anthropic", "gemini"):
        return getattr(settings, backend)
    return settings.providers.get(backend)


def configured_limit(settings: Settings, backend: str, model: str) -> int | None:
    """The cap the settings give this vendor and model (None: none set)."""
    section = _section(settings, backend)
    if section is None:
        return None
    per_model: dict[str, int] = section.enqueued_token_limits
    if model in per_model:
        return per_model[model] or None
    for pattern, limit in per_model.items():
        if fnmatch.fnmatchcase(model, pattern):
            return limit or None
    return section.enqueued_token_limit or None


def limit_tokens(settings: Settings, obs: Observations, backend: str, model: str) -> int | None:
    """The enqueued-token cap batchd keeps under: settings, else learned, else None."""
    return configured_limit(settings, backend, model) or obs.enqueued_token_limit(backend, model)


def _bytes_per_token(settings: Settings, obs: Observations, model: str) -> float:
    return obs.bytes_per_token(model) or settings.planner.bytes_per_token


def tokens_of(n_bytes: int, bytes_per_token: float) -> int:
    return math.ceil(n_bytes / bytes_per_token)


def capped(chunk: Chunk) -> bool:
    """Is this a chunk the vendor's enqueued-token cap applies to (a vendor batch)?"""
    return chunk.backend not in NOT_VENDOR and chunk.tier == "batch"


def enqueued_tokens(chunks: list[Chunk], chunk: Chunk, bytes_per_token: float) -> int:
    """Tokens of the run's other batches of this vendor and model now enqueued."""
    return sum(
        tokens_of(c.n_bytes, bytes_per_token)
        for c in chunks
        if c.state in ENQUEUED_STATES
        and c.chunk_id != chunk.chunk_id
        and c.backend == chunk.backend
        and c.model == chunk.model
        and c.tier == "batch"
    )


def hold(svc: Services, run: Run, chunk: Chunk) -> bool:
    """Before a pending chunk is sent: True when it must wait for the cap (or was split)."""
    if not capped(chunk):
        return False
    obs = Observations(svc.store.observations())
    limit = limit_tokens(svc.settings, obs, chunk.backend, chunk.model)
    if limit is None:
        return False
    bpt = _bytes_per_token(svc.settings, obs, chunk.model)
    tokens = tokens_of(chunk.n_bytes, bpt)
    if tokens > limit and chunk.n_requests > 1:
        split(svc, run, chunk, limit, bpt)
        return True
    enqueued = enqueued_tokens(svc.store.chunks(run.run_id), chunk, bpt)
    if enqueued and enqueued + tokens > limit:  # alone it goes, even if a line passes the cap
        log.debug(
            "chunk %s waits: %d tokens + %d enqueued > the %s:%s cap of %d",
            chunk.chunk_id,
            tokens,
            enqueued,
            chunk.backend,
            chunk.model,
            limit,
        )
        return True
    return False


def _child(parent: Chunk, chunk_id: str, path: str, n_requests: int, n_bytes: int) -> Chunk:
    share = n_requests / parent.n_requests if parent.n_requests else 0.0
    return msgspec.structs.replace(
        parent,
        chunk_id=chunk_id,
        path=path,
        n_requests=n_requests,
        n_bytes=n_bytes,
        state=CHUNK_PENDING,
        est_cost_usd=parent.est_cost_usd * share,
        est_max_tokens=round(parent.est_max_tokens * share),
        est_gpu_s=0.0,
        intent_at=None,
        vendor_batch_id=None,
        vendor_file_id=None,
        vendor_status=None,
        submitted_at=None,
        ended_at=None,
        counts={},
        result_path=None,
        error=None,
        cancel_reason=None,
        cost_usd=0.0,
        failures=0,
        retry_at=0.0,
    )


def split(svc: Services, run: Run, chunk: Chunk, limit: int, bytes_per_token: float) -> None:
    """A pending chunk over the cap on its own: its lines into chunks each under it."""
    blobs = svc.blobs(run.run_id)
    base, _, gen = chunk.chunk_id.partition(".")
    pieces: list[Chunk] = []
    tokens = 0
    with blobs.open(chunk.path) as src, ExitStack() as piece_file, ExitStack() as side:
        out: Any = None
        records = (  # cascade records (planning.escalation), split in step with the lines
            read_records(side.enter_context(blobs.open(chunk.escalate_path)))
            if chunk.escalate_path
            else None
        )
        for _, line in chunk_lines(src):
            need = tokens_of(len(line), bytes_per_token)
            if out is None or tokens + need > limit:
                piece_file.close()  # the previous piece is complete
                piece_id = f"{base}s{len(pieces) + 1}" + (f".{gen}" if gen else "")
                pieces.append(_child(chunk, piece_id, f"chunks/{piece_id}.jsonl", 0, 0))
                out = piece_file.enter_context(blobs.writer(pieces[-1].path))
                if records is not None:
                    pieces[-1].escalate_path = f"chunks/{piece_id}.escalate"
                    esc = piece_file.enter_context(blobs.writer(pieces[-1].escalate_path))
                tokens = 0
            if records is not None:
                esc.write(frame(next(records)))
            out.write(line)
            tokens += need
            pieces[-1].n_requests += 1
            pieces[-1].n_bytes += len(line)
    for p in pieces:  # estimates by share of the parent's lines
        share = p.n_requests / chunk.n_requests
        p.est_cost_usd = chunk.est_cost_usd * share
        p.est_max_tokens = round(chunk.est_max_tokens * share)
    moved = svc.store.transition(
        chunk.chunk_id,
        (CHUNK_PENDING,),
        new_children=pieces,
        state=CHUNK_COLLECTED,
        counts={"final": 0, "succeeded": 0, MOVED: chunk.n_requests},
    )
    if moved is not None:
        log.info(
            "chunk %s: over the %s:%s enqueued-token cap of %d alone; split into %d chunks",
            chunk.chunk_id,
            chunk.backend,
            chunk.model,
            limit,
            len(pieces),
        )


def requeue(svc: Services, run: Run, chunk: Chunk, exc: QuotaExceeded) -> None:
    """The vendor failed the batch for its cap: learn the cap, send the same lines again."""
    obs = Observations(svc.store.observations())
    bpt = _bytes_per_token(svc.settings, obs, chunk.model)
    others = enqueued_tokens(svc.store.chunks(run.run_id), chunk, bpt)
    learned = exc.limit_tokens or max(others, tokens_of(chunk.n_bytes, bpt) // 2, 1)
    svc.store.add_observations({quota_key(chunk.backend, chunk.model): (float(learned), 1.0)})
    base, _, gen = chunk.chunk_id.partition(".")
    child = _child(chunk, f"{base}.{int(gen or 1) + 1}", chunk.path, chunk.n_requests, 0)
    child.n_bytes = chunk.n_bytes
    child.quota_failures = chunk.quota_failures + 1
    if not others:  # nothing of ours to wait for: someone else's work fills the cap; back off
        s = svc.settings
        delay = min(s.step_retry_base_s * 2**chunk.quota_failures, s.step_retry_max_s)
        child.retry_at = min(time.time() + delay, chunk.deadline_at)
    got = svc.store.transition(
        chunk.chunk_id,
        (CHUNK_ENDED,),
        new_children=[child],
        state=CHUNK_COLLECTED,
        counts={"final": 0, "succeeded": 0, MOVED: chunk.n_requests},
        error=f"token_limit_exceeded: {exc}"[:500],
    )
    if got is not None:
        log.warning(
            "chunk %s: the vendor's enqueued-token cap (%s:%s, %d tokens) failed the batch; "
            "its lines are sent again as chunk %s (no attempt used)",
            chunk.chunk_id,
            chunk.backend,
            chunk.model,
            learned,
            child.chunk_id,
        )
