"""A GPU chunk's records on blobs, under `gpu/<chunk_id>/` of the run's blobs: its
checkpoint parts (`part-*.msgpack`), its done marker (`done.json`) and a cancel request
(`cancel`). See `runner` for who writes them and when.
"""

from __future__ import annotations

import msgspec

from batchd.outcome import Outcome
from batchd.storage.blobs import Blobs
from batchd.storage.chunk_outcomes import read_outcomes


class DoneMarker(msgspec.Struct, kw_only=True):
    state: str
    n_requests: int
    n_outcomes: int
    gpu_seconds: float
    ended_at: float


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


def stopped(blobs: Blobs, chunk_id: str) -> bool:
    """The chunk was canceled or released (the deadline guard) before it ran here."""
    return any(blobs.exists(f"{gpu_dir(chunk_id)}/{m}") for m in ("cancel", "release"))
