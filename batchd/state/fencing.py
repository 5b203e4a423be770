"""A store seen through one lease: every write it makes carries the lease's fence.

Distributed mode hands each job `FencedStore(store, fence)` for the run it leased, so the
pipeline steps (the same code as embedded mode) never name the lease, yet a step of a
coordinator that lost its lease can neither change the state nor (via `check_fence`,
called before every vendor call that spends money) buy anything.
"""

from __future__ import annotations

from typing import Any, Protocol

from batchd.state.base import Chunk, Fence, Run, StaleLease, Store


class LeaseStore(Store, Protocol):
    """A store that can tell whether a lease is still held (RedisStore)."""

    def lease_held(self, fence: Fence) -> bool: ...


class FencedStore:
    def __init__(self, inner: LeaseStore, fence: Fence) -> None:
        self.inner = inner
        self.fence = fence

    # --- the fence ------------------------------------------------------------------
    def check_fence(self) -> None:
        if not self.inner.lease_held(self.fence):
            raise StaleLease(f"lease {self.fence.name} (token {self.fence.token}) was lost")

    # --- writes: each carries the fence ---------------------------------------------
    def update_run(self, run_id: str, fence: Fence | None = None, **fields: Any) -> Run:
        return self.inner.update_run(run_id, fence=fence or self.fence, **fields)

    def add_chunks(self, chunks: list[Chunk], fence: Fence | None = None) -> None:
        self.inner.add_chunks(chunks, fence=fence or self.fence)

    def transition(
        self,
        chunk_id: str,
        from_states: tuple[str, ...],
        new_children: list[Chunk] | None = None,
        fence: Fence | None = None,
        **fields: Any,
    ) -> Chunk | None:
        return self.inner.transition(
            chunk_id, from_states, new_children, fence=fence or self.fence, **fields
        )

    def add_observations(
        self, sums: dict[str, tuple[float, float]], fence: Fence | None = None
    ) -> None:
        self.inner.add_observations(sums, fence=fence or self.fence)

    # --- everything else as the store does it ----------------------------------------
    def create_run(self, run: Run) -> bool:
        return self.inner.create_run(run)

    def get_run(self, run_id: str) -> Run | None:
        return self.inner.get_run(run_id)

    def runs_with_base(self, base_id: str) -> list[Run]:
        return self.inner.runs_with_base(base_id)

    def list_runs(self, limit: int = 50) -> list[Run]:
        return self.inner.list_runs(limit)

    def chunks(self, run_id: str) -> list[Chunk]:
        return self.inner.chunks(run_id)

    def get_chunk(self, chunk_id: str) -> Chunk | None:
        return self.inner.get_chunk(chunk_id)

    def known_batch_ids(self) -> set[str]:
        return self.inner.known_batch_ids()

    def claim(self, namespace: str, key: str, value: str) -> bool:
        return self.inner.claim(namespace, key, value)

    def unclaim(self, namespace: str, key: str) -> None:
        self.inner.unclaim(namespace, key)

    def claims(self, namespace: str) -> dict[str, str]:
        return self.inner.claims(namespace)

    def observations(self) -> dict[str, tuple[float, float]]:
        return self.inner.observations()

    def close(self) -> None:  # the inner store belongs to the process, not to one lease
        pass
