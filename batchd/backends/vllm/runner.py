"""Run vLLM chunks on the process's engine, with checkpoints and a done marker on blobs.

Per chunk, under `gpu/<chunk_id>/` of the run's blobs:
- `part-*.msgpack`: finished outcomes, written every `checkpoint_every` results or
  `checkpoint_interval_s` seconds; a rerun of the chunk skips every line they hold, so
  a killed worker loses only what was inside the engine.
- `done.json`: written once every line has an outcome (or the chunk was canceled):
  state, counts and the GPU-seconds the chunk used.
- `cancel`: asks whichever worker runs the chunk to stop it;
- `release`: asks it to stop admitting the chunk's requests (the deadline guard sends them
  to a vendor): those inside the engine finish and are checkpointed, then the chunk ends
  `cancelled`. A chunk started with either marker present ends at once, running nothing.

A chunk may run under a guard (distributed mode: the gpu worker's lease on the chunk):
it is asked immediately before every write of a part or the done marker, and once it
says no the job ends `lost`, writing nothing more, so a worker paused past its lease
never records results over those of the worker that took the chunk over.

Requests of a chunk are queued sorted by prompt, so those sharing a prefix reach the
engine together and its prefix cache serves them.

A worker may serve several models (`VllmSettings.engines()`): each has its own engine and
feeder, started at its first chunk; a chunk holds one model's lines. The feeders share one
lock for their engine steps (see `engine`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from batchd.backends.vllm.answers import failed_outcome, outcome_of
from batchd.backends.vllm.checkpoints import (
    DoneMarker,
    checkpointed,
    gpu_dir,
    read_done,
    request_cancel,
    stopped,
)
from batchd.backends.vllm.engine import EngineFeeder, GenRequest, GenResult
from batchd.backends.vllm.gather import Gather, lines_in, part_id
from batchd.backends.vllm.jobs import ChunkJob, ChunkLine
from batchd.backends.vllm.prompts import Plan, Refused, plan_of, prompts_of
from batchd.backends.vllm.structured import AUTO
from batchd.config.settings import VllmSettings
from batchd.storage.blobs import Blobs
from batchd.storage.chunk_outcomes import chunk_lines, write_outcomes

__all__ = [  # the chunk records are read through this module too
    "CANCELLED",
    "COMPLETED",
    "LOST",
    "ChunkJob",
    "GpuRunner",
    "checkpointed",
    "gpu_dir",
    "read_done",
    "request_cancel",
]
log = logging.getLogger("batchd.gpu")

COMPLETED = "completed"
CANCELLED = "cancelled"
LOST = "lost"  # the job's guard (its lease) said no: another worker has the chunk now
CANCEL_CHECK_S = 2.0  # how often a running chunk looks for a cancel marker
_line_dec = msgspec.json.Decoder(ChunkLine)


class GpuRunner:
    """Chunks in, checkpoints and done markers out, over one EngineFeeder."""

    def __init__(
        self,
        cfg: VllmSettings,
        admitting: Callable[[], bool] = lambda: True,
        engine_factory: Callable[[VllmSettings], Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.admitting = admitting  # swappable: the feeders ask through this attribute
        self._factory = engine_factory
        self._feeders: dict[str, EngineFeeder] = {}
        self.gpu_turn = threading.Lock()  # one engine step at a time on this worker's GPUs
        self._tick_lock = threading.Lock()
        self._jobs: dict[str, ChunkJob] = {}
        self._lock = threading.Lock()

    @property
    def feeder(self) -> EngineFeeder:
        """The feeder of the worker's first model ([backends.vllm] itself)."""
        return self.feeder_for(self.cfg.name)

    def feeder_for(self, model: str) -> EngineFeeder:
        """The feeder (and engine, started on first use) of one served model; KeyError: this
        worker does not serve it."""
        with self._lock:
            found = self._feeders.get(model)
            if found is not None:
                return found
            cfg = self.cfg.engine(model)
            if cfg is None:
                raise KeyError(model)
            kwargs: dict[str, Any] = {"admitting": lambda: self.admitting()}
            if self._factory is not None:
                kwargs["engine_factory"] = self._factory
            feeder = EngineFeeder(cfg, gpu_turn=self.gpu_turn, **kwargs)
            feeder.tick = self._tick
            self._feeders[model] = feeder
            return feeder

    def counts(self) -> tuple[int, int]:
        """(queued, inside the engines) over every model's feeder."""
        with self._lock:
            feeders = list(self._feeders.values())
        per = [f.counts() for f in feeders]
        return sum(q for q, _ in per), sum(i for _, i in per)

    def job(self, chunk_id: str) -> ChunkJob | None:
        with self._lock:
            return self._jobs.get(chunk_id)

    def start_chunk(
        self,
        chunk_id: str,
        model: str,
        path: str,
        blobs: Blobs,
        guard: Callable[[], bool] | None = None,
    ) -> ChunkJob:
        """Queue a chunk's unfinished lines (idempotent; blocks until the engine is up).

        `guard()`, if given, is asked before each write of the chunk's results (see above).
        """
        with self._lock:
            existing = self._jobs.get(chunk_id)
            if existing is not None and existing.state == "running":
                return existing
        done = checkpointed(blobs, chunk_id)
        with blobs.open(path) as src:
            lines = [(vid, line) for vid, line in chunk_lines(src) if vid not in done]
            n_total = len(done) + len(lines)
        job = ChunkJob(chunk_id, model, blobs, n_total, guard)
        job.n_outcomes = len(done)
        job.gpu_seconds = sum(o.gpu_seconds for o in done.values())
        with self._lock:
            self._jobs[chunk_id] = job
        if not lines:
            self._finish(job, COMPLETED)
            return job
        engine = self.cfg.engine(model)
        if engine is None:
            gone = GenResult(
                error_type="model_not_served",
                error_message=f"this gpu worker does not serve {model!r} "
                f"(it serves {', '.join(self.cfg.served_names()) or 'nothing'})",
            )
            job.remaining = len(lines)
            for vid, _ in lines:
                self._record(job, vid, None, gone)
            return job
        if stopped(blobs, chunk_id):  # canceled or released before it ever ran here
            self._finish(job, CANCELLED)
            return job
        feeder = self.feeder_for(model)
        tokenizer = feeder.tokenizer()
        no_parser = _parser_problem(engine.tool_parser)
        reqs: list[tuple[str, GenRequest]] = []
        refused: list[tuple[str, GenResult]] = []
        for vid, raw in lines:
            try:
                parsed = _line_dec.decode(raw)
                plan = plan_of(
                    parsed.endpoint,
                    parsed.body,
                    engine.kind,
                    engine.tool_parser,
                    model,
                    engine.images,
                )
                prompts = prompts_of(plan, parsed.body, tokenizer)
                if plan.constraint.tool_mode == AUTO and no_parser:
                    raise Refused("unsupported_parameter", no_parser)
            except Refused as exc:
                refused.append((vid, GenResult(error_type=exc.error_type, error_message=str(exc))))
                continue
            except Exception as exc:  # a line nobody foresaw: its own row, never the chunk's
                log.debug("vLLM prompt for %s", vid, exc_info=exc)
                result = GenResult(
                    error_type="internal_error",
                    error_message=f"{type(exc).__name__} building the vLLM prompt: {exc}"[:400],
                )
                refused.append((vid, result))
                continue
            body = parsed.body if plan.constraint.tool_mode == AUTO else None
            on_done = self._make_on_done(job, vid, plan, body, tokenizer, engine.tool_parser)
            rid = f"{chunk_id}/{vid}"
            if len(prompts) > 1:  # several inputs: one engine request each, joined back
                on_done = Gather(len(prompts), on_done).on_part
            for i, prompt in enumerate(prompts):
                req = GenRequest(
                    request_id=rid if len(prompts) == 1 else part_id(rid, i),
                    prompt=prompt,
                    sampling=plan.sampling,
                    pooling=plan.pooling,
                    on_done=on_done,
                    tag=chunk_id,
                )
                reqs.append((prompt if isinstance(prompt, str) else str(prompt), req))
        job.remaining = len(lines)
        job.feeder = feeder
        for vid, result in refused:
            self._record(job, vid, None, result)
        reqs.sort(key=lambda pr: pr[0])  # shared prefixes reach the engine together
        feeder.submit(req for _, req in reqs)
        return job

    def cancel_chunk(self, chunk_id: str) -> None:
        """Drop the chunk's queued requests, abort those inside the engine, mark it done."""
        job = self.job(chunk_id)
        if job is None or job.state != "running":
            return
        if job.feeder is not None:
            job.feeder.withdraw(chunk_id)
            job.feeder.abort(chunk_id)
        self._finish(job, CANCELLED)

    def drain_chunk(self, chunk_id: str) -> None:
        """Release the chunk: drop its queued requests; those inside the engine finish and
        are checkpointed, then the chunk ends `cancelled` (its done marker)."""
        job = self.job(chunk_id)
        if job is None or job.state != "running":
            return
        back = job.feeder.withdraw(chunk_id) if job.feeder is not None else []
        with job.lock:
            job.draining = True
            job.remaining -= lines_in(back)
            idle = job.remaining <= 0
        if idle:
            self._finish(job, CANCELLED)

    def lose(self, chunk_id: str) -> None:
        """The chunk's guard said no: drop its requests and what waits unwritten; end `lost`."""
        job = self.job(chunk_id)
        if job is None:
            return
        with job.lock:
            if job.state not in ("running", "paused"):
                return
            job.state = LOST
            job.buffer = []
        if job.feeder is not None:
            job.feeder.withdraw(chunk_id)
            job.feeder.abort(chunk_id)
        job.finished.set()
        job.idle.set()
        log.error("chunk %s: lost its lease; this worker writes nothing more for it", chunk_id)

    def _may_write(self, job: ChunkJob) -> bool:
        if job.guard is None or job.guard():
            return True
        self.lose(job.chunk_id)
        return False

    def release(self, chunk_id: str) -> int:
        """Put the chunk's unadmitted requests back (window closing); return how many.

        Requests inside the engine run to their end and are checkpointed; then the job
        pauses (`job.idle` is set) and a later `start_chunk` resumes the rest.
        """
        job = self.job(chunk_id)
        if job is None or job.state != "running":
            return 0
        back = job.feeder.withdraw(chunk_id) if job.feeder is not None else []
        n_back = lines_in(back)
        with job.lock:
            job.remaining -= n_back
            idle = job.remaining <= 0
        if idle:
            self._flush(job)
            self._pause(job)
        return n_back

    def _pause(self, job: ChunkJob) -> None:
        with job.lock:
            if job.state == "running":
                job.state = "paused"
        job.idle.set()

    def close(self) -> None:
        with self._lock:
            feeders = list(self._feeders.values())
        for feeder in feeders:
            feeder.close()

    # -- feeder thread ------------------------------------------------------------------
    def _make_on_done(
        self,
        job: ChunkJob,
        vid: str,
        plan: Plan,
        body: dict[str, Any] | None,
        tokenizer: Any,
        tool_parser: str,
    ) -> Callable[[GenRequest, GenResult], None]:
        def on_done(_req: GenRequest, result: GenResult) -> None:
            self._record(job, vid, plan, result, body, tokenizer, tool_parser)

        return on_done

    def _record(
        self,
        job: ChunkJob,
        vid: str,
        plan: Plan | None,
        result: GenResult,
        body: dict[str, Any] | None = None,
        tokenizer: Any = None,
        tool_parser: str = "",
    ) -> None:
        try:
            outcome = outcome_of(
                vid,
                job.model,
                plan,
                result,
                self.cfg.gpu_hourly_usd,
                body=body,
                tokenizer=tokenizer,
                tool_parser=tool_parser,
            )
        except Exception as exc:  # e.g. a tool parser that raised: this row fails, not the chunk
            log.debug("vLLM answer for %s", vid, exc_info=exc)
            failed = GenResult(
                error_type="internal_error",
                error_message=f"{type(exc).__name__} reading the vLLM answer: {exc}"[:400],
            )
            outcome = failed_outcome(job.model, failed)
        with job.lock:
            if job.state != "running":
                return
            job.buffer.append((vid.encode(), outcome))
            job.gpu_seconds += outcome.gpu_seconds
            job.remaining -= 1
            full = len(job.buffer) >= self.cfg.checkpoint_every
            last = job.remaining <= 0
        if full or last:
            self._flush(job)
        if last:
            if job.n_outcomes >= job.n_requests:
                self._finish(job, COMPLETED)
            elif job.draining:
                self._finish(job, CANCELLED)
            else:
                self._pause(job)

    def _tick(self) -> None:
        """Checkpoint what waits longer than the interval; honour cancel markers."""
        if not self._tick_lock.acquire(blocking=False):
            return  # another model's feeder is at it
        try:
            self._tick_jobs()
        finally:
            self._tick_lock.release()

    def _tick_jobs(self) -> None:
        now = time.monotonic()
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.state == "running"]
        for job in jobs:
            if job.buffer and now - job.last_flush >= self.cfg.checkpoint_interval_s:
                self._flush(job)
            if now - job.last_cancel_check >= CANCEL_CHECK_S:
                job.last_cancel_check = now
                if job.blobs.exists(f"{gpu_dir(job.chunk_id)}/cancel"):
                    self.cancel_chunk(job.chunk_id)
                elif not job.draining and job.blobs.exists(f"{gpu_dir(job.chunk_id)}/release"):
                    self.drain_chunk(job.chunk_id)

    def _flush(self, job: ChunkJob) -> None:
        if job.buffer and not self._may_write(job):
            return
        with job.lock:
            items, job.buffer = job.buffer, []
            job.last_flush = time.monotonic()
            if not items or job.state == LOST:
                return
            unique = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
            name = f"{gpu_dir(job.chunk_id)}/part-{unique}.msgpack"
            with job.blobs.writer(name) as f:
                write_outcomes(f, items)
            job.n_outcomes += len(items)

    def _finish(self, job: ChunkJob, state: str) -> None:
        self._flush(job)
        if not self._may_write(job):
            return
        with job.lock:
            if job.state != "running":
                return
            job.state = state
        marker = DoneMarker(
            state=state,
            n_requests=job.n_requests,
            n_outcomes=job.n_outcomes,
            gpu_seconds=job.gpu_seconds,
            ended_at=time.time(),
        )
        with job.blobs.writer(f"{gpu_dir(job.chunk_id)}/done.json") as f:
            f.write(msgspec.json.encode(marker))
        job.finished.set()
        job.idle.set()
        log.info(
            "chunk %s %s: %d/%d outcomes, %.2f GPU-s",
            job.chunk_id,
            state,
            job.n_outcomes,
            job.n_requests,
            job.gpu_seconds,
        )


def _parser_problem(name: str) -> str:
    """Why the model's tool-call parser cannot be used ("" when it can, or none is set)."""
    if not name:
        return ""
    from vllm.tool_parsers import ToolParserManager

    try:
        ToolParserManager.get_tool_parser(name)
    except KeyError:
        known = ", ".join(ToolParserManager.list_registered())
        return f"tool_parser {name!r} is not one of vLLM's tool-call parsers ({known})"
    return ""
