"""The protocol every batch backend follows, and what it answers with."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol

import msgspec

from batchd.outcome import Outcome
from batchd.requests import Request
from batchd.state.base import Chunk


class TransientBackendError(Exception):
    """The vendor could not be reached or asked us to slow down: try again next round."""


class VendorLostTrack(Exception):
    """The vendor no longer knows the batch or file (404/410): not worth waiting for.

    Counted as a failed step (retried with backoff, then the chunk's lines end failed).
    """


class ChunkRejected(Exception):
    """The vendor refused this chunk for good (bad file, failed validation): end its lines."""


class OwnershipUnproven(Exception):
    """A vendor batch might be this chunk's, but the vendor cannot show it yet.

    Anthropic batches carry no metadata: a candidate (same request count, created near the
    intent) is this chunk's only when its results name exactly the chunk's request ids, and
    results exist only once it has ended. Until then the chunk waits in `creating`: creating
    again could pay twice, adopting or cancelling could touch another application's batch.
    """

    def __init__(self, batch_ids: list[str]) -> None:
        super().__init__(", ".join(batch_ids))
        self.batch_ids = batch_ids


class UnsupportedRequest(Exception):
    """This backend cannot express the request (e.g. a parameter the vendor lacks)."""


class VendorRef(msgspec.Struct, kw_only=True):
    batch_id: str
    file_id: str | None = None


class PollState(msgspec.Struct, kw_only=True):
    status: str  # the vendor's own word
    terminal: bool
    done: int = 0
    failed: int = 0
    total: int = 0


class BatchBackend(Protocol):
    name: str

    def encode_line(self, vendor_id: str, request: Request) -> bytes:
        """One line of the chunk file, in the vendor's batch input format (no newline)."""
        ...

    async def create(self, chunk: Chunk, data_path: str) -> VendorRef:
        """Upload the chunk file and create the vendor batch (once: the caller records intent)."""
        ...

    async def find_existing(
        self, chunk: Chunk, known_batch_ids: set[str], request_ids: Callable[[], set[str]]
    ) -> VendorRef | None:
        """After a crash or a failed create in `creating`: the batch this chunk already
        created, if any, matched only on proof that it is this chunk's (never a foreign one).

        `known_batch_ids` are batches other chunks already recorded: never this chunk's.
        `request_ids()` reads the chunk file's custom_ids (called only when needed). Raises
        OwnershipUnproven while a candidate cannot be told apart yet. With no batch found,
        this chunk's own leftovers of the interrupted attempt (an uploaded input file) are
        deleted.
        """
        ...

    async def poll(self, chunk: Chunk) -> PollState: ...

    def results(self, chunk: Chunk) -> AsyncIterator[tuple[str, Outcome]]:
        """(vendor custom_id, Outcome) for every line the vendor reported, any order."""
        ...

    async def cancel(self, chunk: Chunk) -> None: ...

    async def aclose(self) -> None: ...
