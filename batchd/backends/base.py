"""The protocol every batch backend follows, and what it answers with."""

from __future__ import annotations

import math
import os
import re
from collections.abc import AsyncIterator, Callable
from typing import Protocol
from urllib.parse import urlsplit

import msgspec

from batchd.errors import BatchdError
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


class QuotaExceeded(ChunkRejected):
    """The vendor failed the batch at validation for its enqueued-token cap
    (`token_limit_exceeded`): no line ran, nothing was billed; send it again once enough
    enqueued work has ended. `limit_tokens`: the cap the vendor stated, if it said one."""

    def __init__(self, message: str, limit_tokens: int | None) -> None:
        super().__init__(message)
        self.limit_tokens = limit_tokens


TOKEN_LIMIT_CODE = "token_limit_exceeded"
# "... Limit: 2,000,000 enqueued tokens." (OpenAI); "the configured limit of 30K" (Azure)
_STATED_LIMIT = re.compile(r"\blimit(?:\s+of|:)\s*(\d[\d,]{0,20}(?:\.\d{1,6})?)\s*([kmb])?\b", re.I)
_SUFFIX = {"k": 1e3, "m": 1e6, "b": 1e9}


def stated_limit_tokens(message: str) -> int | None:
    """The enqueued-token cap a vendor's `token_limit_exceeded` message states, if any."""
    m = _STATED_LIMIT.search(message[:2000])
    if m is None:
        return None
    try:
        value = float(m.group(1).replace(",", "")) * _SUFFIX.get((m.group(2) or "").lower(), 1)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and 1 <= value <= 1e15 else None


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


SpendGuard = Callable[[], None]
"""Raises (state.base.StaleLease) when this process may no longer spend money for the run:
called immediately before every vendor request that may create a billed object, each
retry of it included (see backends.purchase)."""


class VendorRef(msgspec.Struct, kw_only=True):
    batch_id: str
    file_id: str | None = None


class PollState(msgspec.Struct, kw_only=True):
    status: str  # the vendor's own word
    terminal: bool
    done: int = 0
    failed: int = 0
    total: int = 0


def check_key(env: str, what: str) -> None:
    """Refuse (BatchdError) when the environment variable holding an API key is unset."""
    if not os.environ.get(env, "").strip():
        raise BatchdError(
            f"{env} is not set, so batchd cannot reach the {what}.",
            f"Export the key (export {env}=...) and submit again; nothing was sent. "
            "`batchd plan FILE` estimates the run without one.",
        )


def check_endpoint(url: str | None, where: str) -> None:
    """Refuse an endpoint URL a client could not use (no http(s) scheme or no host).

    `None` means "not set" (the SDK's default endpoint); an empty string is set but unusable.
    """
    if url is None:
        return
    try:
        parts = urlsplit(url.strip())
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # a port that is not a number raises ValueError
    except ValueError:
        ok = False
    if not ok:
        raise BatchdError(
            f"{where} = {url!r} is not a usable endpoint URL.",
            "Give it as http(s)://host[:port][/path] (e.g. https://api.example.com/v1), "
            "or unset it for the vendor's own; nothing was sent.",
        )


class BatchBackend(Protocol):
    name: str

    def check_ready(self) -> None:
        """Before anything is bought: raise BatchdError if this backend cannot be reached as
        configured (its key missing, its endpoint malformed). Makes no network call."""
        ...

    def encode_line(self, vendor_id: str, request: Request) -> bytes:
        """One line of the chunk file, in the vendor's batch input format (no newline)."""
        ...

    async def create(self, chunk: Chunk, data_path: str, guard: SpendGuard) -> VendorRef:
        """Upload the chunk file and create the vendor batch (once: the caller records intent).

        `guard()` runs immediately before each request that may create the batch.
        """
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
