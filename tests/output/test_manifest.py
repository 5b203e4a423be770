"""Who owns a run output folder: its manifest names one run record, or it is taken."""

from __future__ import annotations

import json
from pathlib import Path

from batchd.output.manifest import (
    FREE,
    MANIFEST,
    OWN,
    TAKEN,
    finished,
    ownership,
    read_manifest,
    started,
    write_manifest,
)
from batchd.state.base import Run
from batchd.storage.blobs import LocalBlobs


def _run(created_at: float = 100.5) -> Run:
    return Run(
        run_id="run-1",
        base_id="run-1",
        source="in.jsonl",
        output="out",
        options={"tenant": "t"},
        created_at=created_at,
        input_digest="blake2b-128:ab",
    )


def test_free_then_own_across_a_crash_then_finished(tmp_path: Path) -> None:
    out = LocalBlobs(tmp_path / "run-1")
    run = _run()
    assert ownership(out, run) == FREE
    write_manifest(out, started(run))
    assert ownership(out, run) == OWN  # a finalize that runs again after a crash may rewrite
    write_manifest(out, finished(started(run), rows=3, cost_usd=0.0035))
    doc = json.loads(out.path(MANIFEST).read_text())
    assert doc["rows"] == 3 and doc["cost_usd"] == 0.0035 and doc["finished_at"]
    assert doc["input_digest"] == "blake2b-128:ab" and doc["options"] == {"tenant": "t"}
    assert ownership(out, run) == OWN


def test_another_record_or_legacy_outputs_are_taken(tmp_path: Path) -> None:
    out = LocalBlobs(tmp_path / "run-1")
    write_manifest(out, started(_run(created_at=1.0)))  # same id, another store's record
    assert ownership(out, _run()) == TAKEN
    legacy = LocalBlobs(tmp_path / "legacy")
    with legacy.writer("results.parquet") as f:
        f.write(b"rows of a run before manifests")
    assert ownership(legacy, _run()) == TAKEN
    broken = LocalBlobs(tmp_path / "broken")
    with broken.writer(MANIFEST) as f:
        f.write(b"not json")
    assert read_manifest(broken) is None and ownership(broken, _run()) == TAKEN
