"""A whole run under a permissive umask: everything batchd leaves is private, and the chunk
files and input copies are gone once the run is finalized (unless retain_work is set)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.helpers import Batchd, chat, write_jsonl


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o002)  # the CLI subprocesses inherit it
    yield
    os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): mode(p) for p in sorted(root.rglob("*"))}


def _src(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "in.jsonl", [chat(f"k{i}", f"secret prompt {i}") for i in range(3)]
    )


def test_everything_left_is_private_and_work_files_removed(
    batchd: Batchd, tmp_path: Path, loose_umask: None
) -> None:
    proc = batchd.submit(_src(tmp_path))
    assert proc.returncode == 0, proc.stderr
    home = _modes(batchd.home)
    assert {"state.db", "cache.db"} <= set(home)
    assert {k: v for k, v in home.items() if (batchd.home / k).is_file()} == {
        k: 0o600 for k in home if (batchd.home / k).is_file()
    }
    assert {k: v for k, v in home.items() if (batchd.home / k).is_dir()} == {
        k: 0o700 for k in home if (batchd.home / k).is_dir()
    }
    assert mode(batchd.home) == 0o700
    run_dir = batchd.only_run_dir()
    work = batchd.home / "work" / run_dir.name
    assert not (work / "chunks").exists()  # the prompts' chunk files are gone
    assert (work / "lines.parquet").exists()  # the rest of the bulk data stays (private)
    out = _modes(batchd.out)
    assert out[run_dir.name] == 0o700 and mode(batchd.out) == 0o700
    files = {k: v for k, v in out.items() if (batchd.out / k).is_file()}
    assert {Path(k).name for k in files} >= {"results.parquet", "costs.parquet", "manifest.json"}
    assert set(files.values()) == {0o600}


def test_retain_work_and_shared_results_mode(
    batchd: Batchd, tmp_path: Path, loose_umask: None
) -> None:
    proc = batchd.submit(_src(tmp_path), BATCHD_RETAIN_WORK="1", BATCHD_RESULTS_FILE_MODE="0644")
    assert proc.returncode == 0, proc.stderr
    run_dir = batchd.only_run_dir()
    work = batchd.home / "work" / run_dir.name
    chunks = sorted((work / "chunks").iterdir())
    assert chunks and b"secret prompt" in chunks[0].read_bytes()  # kept for debugging
    assert {mode(c) for c in chunks} == {0o600} and mode(work / "chunks") == 0o700
    assert mode(run_dir / "results.parquet") == 0o644 and mode(run_dir) == 0o755
    assert mode(batchd.home / "state.db") == 0o600


def test_bad_results_mode_is_refused_before_anything_runs(batchd: Batchd, tmp_path: Path) -> None:
    proc = batchd.submit(_src(tmp_path), BATCHD_RESULTS_FILE_MODE="0044")
    assert proc.returncode == 1
    assert "results_file_mode" in proc.stderr and "Traceback" not in proc.stderr
    assert batchd.run_dirs() == []
