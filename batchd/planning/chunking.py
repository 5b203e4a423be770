"""Route lines to targets, group unique requests into chunks within each backend's limits.

The glue between ingest and the planner: every unique request is kept in its target set
(planner.py); a request with one vendor target that finishes in time goes straight into a
chunk file, the others (aliases, the vLLM model) are spooled to a temporary file and written
into chunks once `finish` has decided where each runs (assign.py). Requests no target can
finish before their deadline end as `failed` rows with the reason. A chunk holds one
endpoint (chat, embeddings, responses, completions): the OpenAI Batch API takes one url per
batch file.
"""

from __future__ import annotations

import tempfile
import time
from array import array
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any, BinaryIO

import numpy as np

from batchd.backends.base import BatchBackend
from batchd.config.pricing import PriceBook
from batchd.config.settings import Settings
from batchd.planning import chunk_runs, unplaced
from batchd.planning.escalation import Record, frame, later_steps
from batchd.planning.estimates import (
    MIN_SYNC_S,
    UNMEETABLE,
    VLLM,
    Planner,
    Priced,
    TargetSet,
)
from batchd.planning.observations import Observations
from batchd.planning.plan_totals import Estimate, PlanSummary, Totals, add_up
from batchd.planning.release import release_order, release_target
from batchd.planning.routing import Choice, Route, Router
from batchd.planning.shadows import PAIRS_PATH, Guard, retag
from batchd.requests import CHAT, ENDPOINT_URLS, KEY_BYTES
from batchd.state.base import CHUNK_COLLECTED, Chunk
from batchd.storage.chunk_outcomes import write_outcomes

VLLM_MAX_BYTES_PER_CHUNK = 1 << 31
BATCH = "batch"
PLANNER_BACKEND = "planner"  # the backend of the chunk holding the planner's failed rows
ENDPOINTS = tuple(ENDPOINT_URLS)  # a spooled request's endpoint is its index here


class _Open:
    __slots__ = ("chunk", "escalate_file", "file", "release_file")

    def __init__(self, chunk: Chunk, file: BinaryIO | None) -> None:
        self.chunk = chunk
        self.file = file
        self.release_file: BinaryIO | None = None  # the lines for the guard's vendor target
        self.escalate_file: BinaryIO | None = None  # cascade records (planning/escalation.py)


class Chunker:
    """Streams unique requests into chunk files, rolling over at each backend's limits.

    `open_file(rel_path)` returns a writable binary file, or None for a dry run.
    """

    def __init__(
        self,
        run_id: str,
        settings: Settings,
        prices: PriceBook,
        backends: dict[str, BatchBackend],
        open_file: Callable[[str], BinaryIO | None],
        run_deadline_at: float,
        prompt_cache: bool = True,
        *,
        router: Router | None = None,
        observations: Observations | None = None,
        now: float | None = None,
        dry_run: bool = False,
        committed_gpu_s: float = 0.0,
    ) -> None:
        """`committed_gpu_s`: GPU work other unfinished runs already queued for the windows."""
        self._run_id = run_id
        self._dry_run = dry_run
        self._settings = settings
        self._prices = prices
        self._backends = backends
        self._open_file = open_file
        self._deadline = run_deadline_at
        self._prompt_cache = prompt_cache
        self._router = router or Router(prices, backends, settings)
        self._open: dict[tuple[str, ...], _Open] = {}
        self._seq = 0
        self.chunks: list[Chunk] = []
        self.estimates: dict[tuple[str, str], Estimate] = {}
        self.summary = PlanSummary()
        self._files = ExitStack()
        now = time.time() if now is None else now
        self.planner = Planner(
            settings, prices, observations or Observations(), now, committed_gpu_s
        )
        self._sets: dict[str, tuple[int, TargetSet]] = {}
        self._spool: Any = None  # spooled lines of requests the planner places (real runs)
        self._spooled: array[int] = array("i")  # per spooled request: its target set's number
        self._endpoints: list[array[int]] = []  # per target set: each request's endpoint
        self._set_list: list[TargetSet] = []
        self._follower_deadlines: list[tuple[str, bytes, float]] = []
        self._ready: dict[str, float] = {}  # a direct model's: when its batch counts as done
        self._limit_of: dict[str, tuple[int, int]] = {}  # per backend: lines, bytes a chunk
        self.guard = Guard(observations.sums if observations else {})  # the quality guard
        self._totals = Totals()  # sums of the one-vendor-target sets, priced in slices

    @property
    def dry_run(self) -> bool:
        """A plan: requests are counted and priced, no chunk file is written."""
        return self._dry_run

    def _limits(self, backend: str) -> tuple[int, int]:
        if backend == VLLM:
            limits = self._settings.backends.vllm.max_requests_per_chunk, VLLM_MAX_BYTES_PER_CHUNK
        else:
            o: Any = self._settings.openai
            if backend in ("anthropic", "gemini"):
                o = getattr(self._settings, backend)
            limits = o.max_lines_per_chunk, o.max_bytes_per_chunk
        return self._limit_of.setdefault(backend, limits)

    def add(
        self,
        backend: str,
        model: str,
        line: bytes,
        max_tokens: int,
        deadline_at: float | None,
        key: bytes = b"",
        options: list[bytes] | None = None,
        prompt_tokens: int = -1,
        endpoint: str = CHAT,
        line_bytes: int = -1,
    ) -> None:
        """One unique request: `line` for its one backend, or `options`, one per alias target.
        `line_bytes` >= 0: a dry run's, the size of the line it does not keep (`line` b"")."""
        deadline = self._deadline
        if deadline_at is not None and deadline_at < deadline:
            deadline = deadline_at
        found = self._sets.get(model)
        set_no, ts = found if found is not None else self._target_set(backend, model)
        if ts.direct:  # one vendor target: the hot path, straight into its chunk
            n = len(line) if line_bytes < 0 else line_bytes
            ts.line_bytes.append(n)
            ts.max_tokens.append(max_tokens)
            ts.deadline_at.append(deadline)
            tier = self._direct_tier(model, ts, deadline)
            if tier is not None:
                target_model = ts.targets[0][1]
                self._write(backend, target_model, line, n, max_tokens, deadline_at, tier, endpoint)
            else:  # ends failed at finish
                ts.failed_keys[ts.base + len(ts.max_tokens) - 1] = key
            # a full slice is priced now and dropped: the arrays stay at one slice
            if ts.early and len(ts.max_tokens) >= self.planner.price_slice:
                self.planner.fold_part(ts, self._totals.fold)
            return
        lines = options if options else [line]
        sizes = [len(x) for x in lines] if options or line_bytes < 0 else [line_bytes]
        ts.add(sizes, max_tokens, deadline, key, prompt_tokens)
        self._endpoints[set_no].append(ENDPOINTS.index(endpoint))
        if self._dry_run:  # the planner needs the sizes only
            return
        if self._spool is None:
            self._spool = self._files.enter_context(tempfile.TemporaryFile())  # noqa: SIM115
        self._spool.write(b"".join(lines))
        self._spooled.append(set_no)

    add_many = chunk_runs.add_many  # a dry run's add of many requests at once

    def follower_deadline(self, model: str, key: bytes, deadline_at: float) -> None:
        """An in-run duplicate due earlier than the run: its leader must be done by then too.

        Applied to requests the planner places (aliases, vLLM); a one-vendor-target leader is
        already in its chunk and keeps its own deadline.
        """
        if deadline_at < self._deadline:
            self._follower_deadlines.append((model, key, deadline_at))

    def _apply_follower_deadlines(self) -> None:
        by_model: dict[str, list[tuple[bytes, float]]] = {}
        for model, key, deadline in self._follower_deadlines:
            by_model.setdefault(model, []).append((key, deadline))
        for model, items in by_model.items():
            found = self._sets.get(model)
            if found is None or found[1].direct:
                continue
            ts = found[1]
            keys = np.frombuffer(bytes(ts.keys), dtype=f"V{KEY_BYTES}")
            order = np.argsort(keys)
            wanted = np.frombuffer(b"".join(k for k, _ in items), dtype=f"V{KEY_BYTES}")
            at = np.searchsorted(keys[order], wanted).clip(0, len(keys) - 1)
            hit = keys[order][at] == wanted
            deadlines = np.frombuffer(ts.deadline_at, dtype=np.float64)  # a view: updated in place
            for i, d in zip(
                order[at][hit].tolist(), np.array([d for _, d in items])[hit].tolist(), strict=True
            ):
                if d < deadlines[i]:
                    deadlines[i] = d

    def _direct_tier(self, model: str, ts: TargetSet, deadline: float) -> str | None:
        """A one-vendor-target request's tier (`_tier`), its batch's ready time kept per model."""
        ready = self._ready.get(model)
        if ready is None:
            ready = self._ready[model] = self.planner.ready_at(*ts.targets[0])
        return BATCH if deadline >= ready else self._tier(ts.targets[0], deadline)

    def _tier(self, target: tuple[str, str], deadline: float) -> str | None:
        """batch when a batch finishes in time, else the guard's synchronous tier (or None)."""
        if target[0] == VLLM or deadline >= self.planner.ready_at(*target):
            return BATCH
        if deadline < self.planner.now + MIN_SYNC_S:
            return None
        return self.planner.sync_tier(*target)

    def _target_set(self, backend: str, model: str) -> tuple[int, TargetSet]:
        route = self._router.route(model)
        if isinstance(route, Choice):
            ts = TargetSet(model, [(r.backend, r.model) for r in route.targets], route.reference)
        else:
            r = route if isinstance(route, Route) else Route(backend, model)
            ts = TargetSet(model, [(r.backend, r.model)], self._router.reference_of(r))
        # one vendor target and no quality gate: priced as it fills (Planner.fold_part)
        ts.early = ts.direct and not (isinstance(route, Choice) and route.quality is not None)
        self._sets[model] = (len(self._set_list), ts)
        self._set_list.append(ts)
        self._endpoints.append(array("b"))
        return self._sets[model]

    def _write(
        self,
        backend: str,
        model: str,
        line: bytes | None,
        n_bytes: int,
        max_tokens: int,
        deadline_at: float | None,
        tier: str = "batch",
        endpoint: str = CHAT,
        release: tuple[str, str, bytes] | None = None,
        escalate: bytes | None = None,
    ) -> None:
        """Append one vendor-format line (newline included) to the open chunk of its model
        and tier (batch, or flex / realtime: sent synchronously by the deadline guard).

        `line` is None in a dry run of a placed request: only its size counts. `release`: a
        vLLM line's (backend, model, line) for the guard's vendor target (planning.release);
        `escalate`: the line's framed cascade record (planning.escalation).
        """
        key = chunk_runs.open_key(backend, model, tier, endpoint, bool(escalate))
        if release is not None:
            key = (*key, release[0], release[1])
        cur = self._open.get(key)
        max_lines, max_bytes = self._limit_of.get(backend) or self._limits(backend)
        if cur is not None and (
            cur.chunk.n_requests >= max_lines or cur.chunk.n_bytes + n_bytes > max_bytes
        ):
            self._close(key)
            cur = None
        if cur is None:
            cur = self._start(Route(backend, model))
            cur.chunk.tier = tier
            cur.chunk.endpoint = endpoint
            if release is not None:
                self._start_release(cur, release[0], release[1])
            if escalate is not None:
                cur.chunk.escalate_path = cur.chunk.path.removesuffix(".jsonl") + ".escalate"
                cur.escalate_file = self._side_file(cur.chunk.escalate_path)
            self._open[key] = cur
        if cur.file is not None and line is not None:
            cur.file.write(line)
        if cur.release_file is not None and release is not None:
            cur.release_file.write(release[2])
        if cur.escalate_file is not None and escalate is not None:
            cur.escalate_file.write(escalate)
        c = cur.chunk
        c.n_requests += 1
        c.n_bytes += n_bytes
        c.est_max_tokens += max_tokens or self._settings.estimate_output_tokens
        if deadline_at is not None and deadline_at < c.deadline_at:
            c.deadline_at = deadline_at

    def _start(self, route: Route, path_suffix: str = ".jsonl") -> _Open:
        self._seq += 1
        chunk_id = f"{self._run_id}-c{self._seq:05d}"
        path = f"chunks/{chunk_id}{path_suffix}"
        chunk = Chunk(
            chunk_id=chunk_id,
            run_id=self._run_id,
            backend=route.backend,
            model=route.model,
            path=path,
            n_requests=0,
            n_bytes=0,
            deadline_at=self._deadline,
            prompt_cache=self._prompt_cache,
        )
        f = self._open_file(path)
        if f is not None:
            self._files.enter_context(f)
        return _Open(chunk, f)

    def _start_release(self, cur: _Open, backend: str, model: str) -> None:
        c = cur.chunk
        c.release_backend, c.release_model = backend, model
        c.release_path = c.path.removesuffix(".jsonl") + ".release.jsonl"
        cur.release_file = self._side_file(c.release_path)

    def _side_file(self, path: str) -> BinaryIO | None:
        f = self._open_file(path)
        return self._files.enter_context(f) if f is not None else None

    def _close(self, key: tuple[str, ...]) -> None:
        cur = self._open.pop(key)
        for f in (cur.file, cur.release_file, cur.escalate_file):
            if f is not None:
                f.close()
        self.chunks.append(cur.chunk)

    # --- finish: decide, write the placed requests, price ------------------------------------
    def finish(self) -> list[Chunk]:
        self._apply_follower_deadlines()
        self.guard.before(self._set_list, self._router)
        totals = self._totals
        priced = self.planner.decide(self._set_list, totals.fold)  # streamed sets: in totals
        self.guard.after(self._set_list)
        self._write_spooled(priced)
        if self.guard.pairs and (f := None if self._dry_run else self._open_file(PAIRS_PATH)):
            with f:
                f.write(self.guard.encoded())
        self._write_failures()
        for key in list(self._open):
            self._close(key)
        self._files.close()
        add_up(self.summary, self.estimates, self.planner, self._set_list, priced, totals)
        for c in self.chunks:
            est = self.estimates.get((c.backend, c.model))
            if est and est.requests and c.backend != PLANNER_BACKEND:
                c.est_cost_usd = est.cost_usd * c.n_requests / est.requests
                c.est_gpu_s = est.gpu_seconds * c.n_requests / est.requests
        return self.chunks

    def _write_spooled(self, priced: dict[str, Priced]) -> None:
        if self._dry_run:
            self._count_placed()
            return
        if self._spool is None:
            return
        self._spool.seek(0)
        read = self._spool.read
        cursor = [0] * len(self._set_list)
        orders = [
            release_order(ts, priced[ts.name], self.planner) if ts.name in priced else []
            for ts in self._set_list
        ]
        cascades = [self._cascade(ts) for ts in self._set_list]
        for set_no in self._spooled:
            ts = self._set_list[set_no]
            i = cursor[set_no]
            cursor[set_no] += 1
            t = len(ts.targets)
            lens = ts.line_bytes[i * t : (i + 1) * t]
            blob = read(sum(lens))
            j = int(ts.choice[i])
            if j == UNMEETABLE:
                continue
            backend, model = ts.targets[j]
            if backend == VLLM and not self._router.has_backend(VLLM):
                continue  # ends failed in _write_failures
            endpoint = ENDPOINTS[self._endpoints[set_no][i]]
            for col, tag in [(j, b""), *self.guard.extras(ts.name, i)]:
                backend, model = ts.targets[col]
                if tag and backend == VLLM and not self._router.has_backend(VLLM):
                    continue
                at = sum(lens[:col])
                line = blob[at : at + lens[col]]
                if tag:  # a quality guard line (planning.shadows)
                    line = retag(line, bytes(ts.keys[i * KEY_BYTES : (i + 1) * KEY_BYTES]), tag)
                d = ts.deadline_at[i]
                tier = self._tier((backend, model), d) or BATCH
                release = None
                r = release_target(orders[set_no], lens) if backend == VLLM and not tag else None
                if r is not None:
                    r_at = sum(lens[:r])
                    release = (*ts.targets[r], blob[r_at : r_at + lens[r]])
                on, skip = cascades[set_no]
                steps = later_steps(ts.targets, col, lens, blob, skip) if on and not tag else []
                self._write(
                    *(backend, model, line, len(line), ts.max_tokens[i], d, tier, endpoint),
                    release,
                    frame(Record(on, steps)) if steps else None,
                )

    def _cascade(self, ts: TargetSet) -> tuple[list[str], set[int]]:
        """An alias's escalate_on, and the columns a cascade never goes to (the guard's
        reserve reference, vLLM without its backend)."""
        route = self._router.route(ts.name)
        if not isinstance(route, Choice) or not route.escalate_on:
            return [], set()
        skip = {route.ref_col} if route.reserve else set()
        if not self._router.has_backend(VLLM):
            skip |= {j for j, (b, _) in enumerate(ts.targets) if b == VLLM}
        return list(route.escalate_on), skip

    def _count_placed(self) -> None:
        """Dry run: chunk the placed requests by size alone, so `plan` shows their chunks."""
        for set_no, ts in enumerate(self._set_list):
            if ts.direct:
                continue  # already chunked as they came
            t = len(ts.targets)
            for i, j in enumerate(ts.choice.tolist()):
                if j == UNMEETABLE:
                    continue
                for col, _ in [(j, b""), *self.guard.extras(ts.name, i)]:
                    backend, model = ts.targets[col]
                    n_bytes = ts.line_bytes[i * t + col]
                    d = ts.deadline_at[i]
                    tier = self._tier((backend, model), d) or BATCH
                    endpoint = ENDPOINTS[self._endpoints[set_no][i]]
                    self._write(backend, model, None, n_bytes, ts.max_tokens[i], d, tier, endpoint)

    def _write_failures(self) -> None:
        if self._dry_run:
            return
        failures = unplaced.failures(
            self._set_list, self._router.has_backend(VLLM), self._settings, self.planner
        )
        if not failures:
            return
        cur = self._start(Route(PLANNER_BACKEND, "unmeetable"), ".parts")
        if cur.file is not None:
            write_outcomes(cur.file, failures)
            cur.file.close()
        c = cur.chunk
        c.n_requests = len(failures)
        c.attempt = 0  # never sent: progress counts its lines failed, not sent
        c.counts = {"final": len(failures), "succeeded": 0}
        c.state = CHUNK_COLLECTED
        c.result_path = c.path
        self.chunks.append(c)
