"""The manifest of a run's output folder, and who owns the folder.

Every `<output>/<run>/` carries `manifest.json`: the run id, the input and its digest, the
options, and, once the outputs are complete, when it finished, its row count and cost. It is
written twice: before the first output file (`finished_at` null: this run is writing here)
and after the last. A folder belongs to a run when its manifest names that run id and that
run's creation time (one record in one state store); any other manifest, or outputs without
one (written before manifests existed), belong to another run and are never replaced.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from batchd.state.base import Run
from batchd.storage.blobs import Blobs

MANIFEST = "manifest.json"
# Files whose presence without a manifest means a finished run of an older batchd.
OUTPUT_FILES = ("results.parquet", "costs.parquet")

FREE = "free"
OWN = "own"
TAKEN = "taken"


class Manifest(msgspec.Struct, kw_only=True):
    run_id: str
    run_created_at: float  # with run_id: which record of which store wrote this folder
    source: str
    input_digest: str
    options: dict[str, Any]
    started_at: str
    finished_at: str | None = None
    rows: int | None = None
    cost_usd: float | None = None
    baseline_cost_usd: float | None = None
    status_counts: dict[str, int] = {}
    outcome: str = ""
    price_book: str = ""


_dec = msgspec.json.Decoder(Manifest)


def read_manifest(out: Blobs) -> Manifest | None:
    """The folder's manifest; None when it has none (or one batchd cannot read)."""
    if not out.exists(MANIFEST):
        return None
    try:
        return _dec.decode(out.read_bytes(MANIFEST))
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def ownership(out: Blobs, run: Run) -> str:
    """FREE (nothing there), OWN (this run's manifest) or TAKEN (another run's outputs)."""
    manifest = read_manifest(out)
    if manifest is not None:
        same = manifest.run_id == run.run_id and manifest.run_created_at == run.created_at
        return OWN if same else TAKEN
    if out.exists(MANIFEST) or any(out.exists(name) for name in OUTPUT_FILES):
        return TAKEN
    return FREE


def occupied(out: Blobs) -> bool:
    """Does the folder hold any run's outputs (or a manifest of one being written)?"""
    return out.exists(MANIFEST) or any(out.exists(name) for name in OUTPUT_FILES)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def started(run: Run, now: float | None = None) -> Manifest:
    return Manifest(
        run_id=run.run_id,
        run_created_at=run.created_at,
        source=run.source,
        input_digest=run.input_digest,
        options=run.options,
        started_at=_iso(time.time() if now is None else now),
    )


def write_manifest(out: Blobs, manifest: Manifest) -> None:
    with out.writer(MANIFEST) as f:
        f.write(msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n")


def finished(manifest: Manifest, **fields: Any) -> Manifest:
    """The manifest of complete outputs: finished_at now, plus rows, cost, counts, ..."""
    return msgspec.structs.replace(manifest, finished_at=_iso(time.time()), **fields)
