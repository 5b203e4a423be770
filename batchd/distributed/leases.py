"""Leases in Redis, held by a renewing thread: one process works on a run (or a GPU chunk)
at a time. Each acquisition has a fence (state.base.Fence) whose token grows with every
acquisition; writes made under it are refused once the lease is lost (state.fencing).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from batchd.state.base import Fence
from batchd.state.redis_store import RedisStore

log = logging.getLogger("batchd.leases")


class Renewer(threading.Thread):
    """Keeps a lease alive from a thread, so a long CPU-bound step cannot lose it."""

    def __init__(self, store: RedisStore, fence: Fence, ttl_s: float) -> None:
        super().__init__(daemon=True)
        self._store, self._fence, self._ttl_s = store, fence, ttl_s
        self._stop = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self._stop.wait(self._ttl_s / 3):
            if not self._store.renew_lease(self._fence, self._ttl_s):
                self.lost = True
                log.error("lost lease %s (token %d)", self._fence.name, self._fence.token)
                return

    def stop(self) -> None:
        self._stop.set()


@asynccontextmanager
async def lease(
    store: RedisStore, name: str, owner: str, ttl_s: float
) -> AsyncIterator[Fence | None]:
    """Hold the lease `name` (renewed from a thread): its fence, or None if another holds it."""
    fence = store.take_lease(name, owner, ttl_s)
    if fence is None:
        yield None
        return
    renewer = Renewer(store, fence, ttl_s)
    renewer.start()
    try:
        yield fence
    finally:
        renewer.stop()
        store.release_lease(fence)
