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

from batchd.backends.vllm.engine import EngineFeeder, GenRequest, GenResult
from batchd.backends.vllm.prompts import Refused, outcome_of, prompt_of, sampling_of
from batchd.config.settings import VllmSettings
from batchd.outcome import Outcome
from batchd.storage.blobs import Blobs
from batchd.storage.chunk_outcomes import chunk_lines, read_outcomes, write_outcomes

log = logging.getLogger("batchd.gpu")

COMPLETED = "completed"
CANCELLED = "cancelled"
LOST = "lost"  # the job's guard (its lease) said no: another worker has the chunk now
CANCEL_CHECK_S = 2.0  # how often a running chunk looks for a cancel marker


class DoneMarker(msgspec.Struct, kw_only=True):
    state: str
    n_requests: int
    n_outcomes: int
    gpu_seconds: float
    ended_at: float


class ChunkLine(msgspec.Struct):
    custom_id: str
    body: dict[str, Any]


_line_dec = msgspec.json.Decoder(ChunkLine)


def gpu_dir(chunk_id: str) -> str:
    return f"gpu/{chunk_id}"


def read_done(blobs: Blobs, chunk_id: str) -> DoneMarker | None:
    rel = f"{gpu_dir(chunk_id)}/done.json"
    if not blobs.exists(rel):
        return None
    return msgspec.json.decode(blobs.read_bytes(rel), type=DoneMarker)


def checkpointed(blobs: Blobs, chunk_id: str) -> dict[str, Outcome]:
    """Every outcome the chunk's parts hold, by vendor id."""
    out: dict[str, Outcome] = {}
    for rel in blobs.list(gpu_dir(chunk_id)):
        if rel.rsplit("/", 1)[-1].startswith("part-"):
            with blobs.open(rel) as f:
                for key, outcome in read_outcomes(f):
                    out[key.decode()] = outcome
    return out


def request_cancel(blobs: Blobs, chunk_id: str, marker: str = "cancel") -> None:
    """Write the chunk's `cancel` (or `release`) marker for whichever worker runs it."""
    with blobs.writer(f"{gpu_dir(chunk_id)}/{marker}") as f:
        f.write(b"1")


def _stopped(blobs: Blobs, chunk_id: str) -> bool:
    return any(blobs.exists(f"{gpu_dir(chunk_id)}/{m}") for m in ("cancel", "release"))


class ChunkJob:
    """One chunk inside this process: what is left, what waits to be checkpointed."""

    def __init__(
        self,
        chunk_id: str,
        model: str,
        blobs: Blobs,
        n_requests: int,
        guard: Callable[[], bool] | None = None,
    ) -> None:
        self.chunk_id = chunk_id
        self.guard = guard  # may this job still write? (None: always)
        self.model = model
        self.blobs = blobs
        self.n_requests = n_requests
        self.n_outcomes = 0  # checkpointed before this job plus finished in it
        self.remaining = 0
        self.gpu_seconds = 0.0
        self.buffer: list[tuple[bytes, Outcome]] = []
        self.last_flush = time.monotonic()
        self.last_cancel_check = time.monotonic()
        self.state = "running"
        self.draining = False  # released: admit nothing more, end once the engine is done
        self.finished = threading.Event()
        self.idle = threading.Event()  # set when nothing of the chunk is queued or running
        self.lock = threading.Lock()


class GpuRunner:
    """Chunks in, checkpoints and done markers out, over one EngineFeeder."""

    def __init__(
        self,
        cfg: VllmSettings,
        admitting: Callable[[], bool] = lambda: True,
        engine_factory: Callable[[VllmSettings], Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.admitting = admitting  # swappable: the feeder asks through this attribute
        kwargs: dict[str, Any] = {"admitting": lambda: self.admitting()}
        if engine_factory is not None:
            kwargs["engine_factory"] = engine_factory
        self.feeder = EngineFeeder(cfg, **kwargs)
        self.feeder.tick = self._tick
        self._jobs: dict[str, ChunkJob] = {}
        self._lock = threading.Lock()

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
        if _stopped(blobs, chunk_id):  # canceled or released before it ever ran here
            self._finish(job, CANCELLED)
            return job
        tokenizer = self.feeder.tokenizer()
        reqs: list[tuple[str, GenRequest]] = []
        refused: list[tuple[str, GenResult, bool]] = []
        for vid, raw in lines:
            parsed = _line_dec.decode(raw)
            is_chat = "messages" in parsed.body
            try:
                prompt = prompt_of(parsed.body, tokenizer)
                sampling = sampling_of(parsed.body)
            except Refused as exc:
                result = GenResult(error_type=exc.error_type, error_message=str(exc))
                refused.append((vid, result, is_chat))
                continue
            except Exception as exc:  # a line nobody foresaw: its own row, never the chunk's
                log.debug("vLLM prompt for %s", vid, exc_info=exc)
                result = GenResult(
                    error_type="internal_error",
                    error_message=f"{type(exc).__name__} building the vLLM prompt: {exc}"[:400],
                )
                refused.append((vid, result, is_chat))
                continue
            req = GenRequest(
                request_id=f"{chunk_id}/{vid}",
                prompt=prompt,
                sampling=sampling,
                on_done=self._make_on_done(job, vid, is_chat),
                tag=chunk_id,
            )
            reqs.append((prompt, req))
        job.remaining = len(lines)
        for vid, result, is_chat in refused:
            self._record(job, vid, is_chat, result)
        reqs.sort(key=lambda pr: pr[0])  # shared prefixes reach the engine together
        self.feeder.submit(req for _, req in reqs)
        return job

    def cancel_chunk(self, chunk_id: str) -> None:
        """Drop the chunk's queued requests, abort those inside the engine, mark it done."""
        job = self.job(chunk_id)
        if job is None or job.state != "running":
            return
        self.feeder.withdraw(chunk_id)
        self.feeder.abort(chunk_id)
        self._finish(job, CANCELLED)

    def drain_chunk(self, chunk_id: str) -> None:
        """Release the chunk: drop its queued requests; those inside the engine finish and
        are checkpointed, then the chunk ends `cancelled` (its done marker)."""
        job = self.job(chunk_id)
        if job is None or job.state != "running":
            return
        back = self.feeder.withdraw(chunk_id)
        with job.lock:
            job.draining = True
            job.remaining -= len(back)
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
        self.feeder.withdraw(chunk_id)
        self.feeder.abort(chunk_id)
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
        back = self.feeder.withdraw(chunk_id)
        with job.lock:
            job.remaining -= len(back)
            idle = job.remaining <= 0
        if idle:
            self._flush(job)
            self._pause(job)
        return len(back)

    def _pause(self, job: ChunkJob) -> None:
        with job.lock:
            if job.state == "running":
                job.state = "paused"
        job.idle.set()

    def close(self) -> None:
        self.feeder.close()

    # -- feeder thread ------------------------------------------------------------------
    def _make_on_done(
        self, job: ChunkJob, vid: str, is_chat: bool
    ) -> Callable[[GenRequest, GenResult], None]:
        def on_done(_req: GenRequest, result: GenResult) -> None:
            self._record(job, vid, is_chat, result)

        return on_done

    def _record(self, job: ChunkJob, vid: str, is_chat: bool, result: GenResult) -> None:
        outcome = outcome_of(vid, job.model, is_chat, result, self.cfg.gpu_hourly_usd)
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
