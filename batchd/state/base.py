"""Run and chunk state: the records (Run, Chunk), their states, and the Store interface.

Implementations: sqlite_store.SqliteStore (embedded, under BATCHD_HOME) and
redis_store.RedisStore (distributed).

Every state change of a chunk is a compare-and-set on its current state, so a
step that runs twice (after a crash, or in two processes) changes nothing the
second time.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

# Run states.
RUN_INGESTING = "ingesting"
RUN_DISPATCHING = "dispatching"
RUN_FINALIZING = "finalizing"
RUN_DONE = "done"
RUN_STATES = (RUN_INGESTING, RUN_DISPATCHING, RUN_FINALIZING, RUN_DONE)

# Chunk states: pending -> creating (intent recorded) -> submitted -> ended -> collected.
CHUNK_PENDING = "pending"
CHUNK_CREATING = "creating"
CHUNK_SUBMITTED = "submitted"
CHUNK_ENDED = "ended"
CHUNK_COLLECTED = "collected"
CHUNK_OPEN_STATES = (CHUNK_PENDING, CHUNK_CREATING, CHUNK_SUBMITTED, CHUNK_ENDED)


class Run(msgspec.Struct, kw_only=True):
    run_id: str
    base_id: str
    source: str
    output: str
    options: dict[str, Any]
    state: str = RUN_INGESTING
    created_at: float = 0.0
    updated_at: float = 0.0
    deadline_at: float = 0.0
    cancel_requested: bool = False
    stats: dict[str, Any] = {}
    outcome: str = ""  # succeeded | finished_with_failures | canceled | failed (when done)
    failures: int = 0  # failed attempts of the run's current whole-run step (finalize)
    retry_at: float = 0.0  # no attempt of that step before this time (backoff)
    error: str = ""  # the last step failure; for a `failed` run, why it has no results
    blocked: str = ""  # why the run waits for someone to act (a preflight refused); "" = not
    input_digest: str = ""  # the input's own digest (bytes, or an S3 object's ETag and size)
    output_id: str = ""  # the folder under `output` when not run_id (that one was taken)

    def output_name(self) -> str:
        """The run's folder under its output: <output>/<output_name>/."""
        return self.output_id or self.run_id


class Chunk(msgspec.Struct, kw_only=True):
    chunk_id: str
    run_id: str
    backend: str
    model: str
    path: str
    n_requests: int
    n_bytes: int
    attempt: int = 1
    deadline_at: float = 0.0
    state: str = CHUNK_PENDING
    intent_at: float | None = None
    vendor_batch_id: str | None = None
    vendor_file_id: str | None = None
    vendor_status: str | None = None
    submitted_at: float | None = None
    ended_at: float | None = None
    counts: dict[str, int] = {}
    result_path: str | None = None
    error: str | None = None
    cancel_reason: str | None = None  # user | deadline | guard, once a cancel was sent
    est_cost_usd: float = 0.0
    est_max_tokens: int = 0  # sum of the lines' max_tokens (defaults filled in), for ratios
    est_gpu_s: float = 0.0  # the planner's GPU-seconds for a vLLM chunk
    cost_usd: float = 0.0
    prompt_cache: bool = True  # Anthropic: may batchd mark shared prefixes for prompt caching
    # batch: a vendor batch (or the GPU); flex | realtime: sent synchronously by the deadline
    # guard (realtime: flex first where the model has it, then the standard tier).
    tier: str = "batch"
    endpoint: str = "chat"  # chat | embeddings | responses | completions: one per chunk
    failures: int = 0  # unexpected errors in this chunk's steps so far
    retry_at: float = 0.0  # no step before this time (backoff after a failure)
    quota_failures: int = 0  # batches of these lines the vendor failed for its token cap
    # vLLM lines of an alias: where the deadline guard sends them if the GPU has not run them
    # (release_path: the same lines, in order, encoded for release_backend:release_model)
    release_backend: str = ""
    release_model: str = ""
    release_path: str | None = None
    # cascades (planning/escalation.py): a record per line, in order (None: no cascade), and
    # the outcomes of this chunk's lines that went on to another target
    escalate_path: str | None = None
    escalated_path: str | None = None


class Fence(msgspec.Struct, frozen=True, kw_only=True):
    """One acquisition of a lease (distributed mode): writes made under it carry it.

    `token` grows with every acquisition of the lease `name`; `holder` is the lease's
    value while this acquisition lasts. A store refuses a write whose fence is no longer
    the lease's current holder (expired, or taken by another process since).
    """

    name: str  # e.g. "run:<run_id>"
    token: int
    holder: str  # "<owner>#<token>"


class StaleLease(Exception):
    """This process's lease was lost: the write (or vendor call) was refused, nothing done."""


class Store(Protocol):
    """Run and chunk state: SqliteStore (embedded) or RedisStore (distributed).

    Writes take an optional `fence`: given, the write is refused with StaleLease unless the
    fence's lease is still held (see Fence). Embedded mode has one driver per run (the
    driver lock), so SqliteStore accepts any fence.
    """

    def create_run(self, run: Run) -> bool: ...
    def get_run(self, run_id: str) -> Run | None: ...
    def runs_with_base(self, base_id: str) -> list[Run]: ...
    def list_runs(self, limit: int = 50) -> list[Run]: ...
    def update_run(self, run_id: str, fence: Fence | None = None, **fields: Any) -> Run: ...
    def add_chunks(self, chunks: list[Chunk], fence: Fence | None = None) -> None: ...
    def chunks(self, run_id: str) -> list[Chunk]: ...
    def get_chunk(self, chunk_id: str) -> Chunk | None: ...
    def transition(
        self,
        chunk_id: str,
        from_states: tuple[str, ...],
        new_children: list[Chunk] | None = None,
        fence: Fence | None = None,
        **fields: Any,
    ) -> Chunk | None: ...
    def check_fence(self) -> None:
        """Raise StaleLease if this store's writes carry a lease no longer held (else no-op).

        Called immediately before a vendor call that spends money.
        """
        ...

    def known_batch_ids(self) -> set[str]: ...
    def claim(self, namespace: str, key: str, value: str) -> bool: ...
    def unclaim(self, namespace: str, key: str) -> None: ...
    def claims(self, namespace: str) -> dict[str, str]: ...
    def add_observations(
        self, sums: dict[str, tuple[float, float]], fence: Fence | None = None
    ) -> None:
        """Add (numerator, denominator) sums measured by a run to the planner's ratios."""
        ...

    def observations(self) -> dict[str, tuple[float, float]]: ...
    def close(self) -> None: ...
