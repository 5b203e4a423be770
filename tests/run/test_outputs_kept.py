"""A finished run's outputs are never replaced: a manifest per output folder, new ids when a
folder is taken (state lost, or another run's outputs appeared)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import Batchd, chat, write_jsonl


def _lines(n: int = 4) -> list[dict[str, object]]:
    return [chat(f"k{i}", f"question {i}") for i in range(n)]


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


def test_state_lost_resubmit_gets_a_new_id_and_keeps_the_old_outputs(
    batchd: Batchd, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", _lines())
    first = batchd.submit(src)
    assert first.returncode == 0, first.stderr
    old_dir = batchd.only_run_dir()
    manifest = json.loads((old_dir / "manifest.json").read_text())
    billed = sum(r["cost_usd"] for r in batchd.costs(old_dir))
    assert billed > 0
    assert manifest["run_id"] == old_dir.name
    assert manifest["input_digest"].startswith("blake2b-128:")
    assert manifest["options"]["tenant"] == "default"
    assert manifest["finished_at"] and manifest["rows"] == 4
    assert manifest["cost_usd"] == pytest.approx(billed)
    before = _snapshot(old_dir)
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (batchd.home / name).unlink(missing_ok=True)
    again = batchd.submit(src)  # same file and options: the same id would be derived
    assert again.returncode == 0, again.stderr
    assert "already holds the outputs" in again.stderr and old_dir.name in again.stderr
    dirs = batchd.run_dirs()
    assert len(dirs) == 2
    new_dir = next(d for d in dirs if d != old_dir)
    assert new_dir.name == f"{old_dir.name}-2"
    assert _snapshot(old_dir) == before  # byte for byte: the billed run is intact
    new_manifest = json.loads((new_dir / "manifest.json").read_text())
    assert new_manifest["run_id"] == new_dir.name
    assert new_manifest["input_digest"] == manifest["input_digest"]
    assert {r["cache"] for r in batchd.results(new_dir)} == {"exact"}  # answered from cache


def test_outputs_that_appear_before_finalize_are_not_replaced(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.set_step_mode(manual=True)
    src = write_jsonl(tmp_path / "in.jsonl", _lines())
    submit = batchd.popen("submit", str(src), "--output", str(batchd.out))
    deadline = time.monotonic() + 30
    while not emulator.batches() and time.monotonic() < deadline:
        time.sleep(0.05)
    run_id = emulator.batches()[0]["metadata"]["batchd_run"]
    # Another state store's run of the same id finished into the same folder meanwhile.
    theirs = batchd.out / run_id
    theirs.mkdir(parents=True)
    (theirs / "results.parquet").write_bytes(b"their results")
    foreign_manifest = {
        "run_id": run_id,
        "run_created_at": 1.0,
        "source": "elsewhere",
        "input_digest": "x",
        "options": {},
        "started_at": "2026-01-01T00:00:00Z",
        "finished_at": "2026-01-01T00:01:00Z",
    }
    (theirs / "manifest.json").write_text(json.dumps(foreign_manifest))
    deadline = time.monotonic() + 60
    while submit.poll() is None and time.monotonic() < deadline:
        emulator.advance_all()  # one vendor step per call, until the run finishes
        time.sleep(0.05)
    _, err = submit.communicate(timeout=60)
    assert submit.returncode == 0, err
    assert "not replacing" in err
    assert (theirs / "results.parquet").read_bytes() == b"their results"
    assert json.loads((theirs / "manifest.json").read_text()) == foreign_manifest
    ours = batchd.out / f"{run_id}.2"
    assert json.loads((ours / "manifest.json").read_text())["run_id"] == run_id
    assert [r["status"] for r in batchd.results(ours)] == ["succeeded"] * 4
    path = batchd.run("results", run_id, "--format", "path")
    assert path.returncode == 0 and f"{run_id}.2" in path.stdout
