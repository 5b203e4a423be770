"""Files batchd creates are 0600 (directories 0700) whatever the umask; results may be shared."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchd.cache.sqlite_cache import SqliteCache
from batchd.outcome import SUCCEEDED, Outcome
from batchd.state.sqlite_store import SqliteStore
from batchd.storage.blobs import LocalBlobs
from batchd.storage.private import dir_mode_for, parse_mode


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o000, 0o022])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_blobs_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    os.chmod(tmp_path, 0o755)
    blobs = LocalBlobs(tmp_path / "work" / "run-1")
    with blobs.writer("chunks/a.jsonl") as f:
        f.write(b"prompt\n")
    with blobs.open_write("outcomes/a.msgpack") as f:
        f.write(b"answer")
    for rel in ("chunks/a.jsonl", "outcomes/a.msgpack"):
        assert mode(blobs.path(rel)) == 0o600
    for d in (tmp_path / "work", blobs.root, blobs.path("chunks"), blobs.path("outcomes")):
        assert mode(d) == 0o700
    assert mode(tmp_path) == 0o755  # an existing parent (the user's) is left as it was


def test_shared_results_mode(tmp_path: Path, umask: int) -> None:
    out = LocalBlobs(tmp_path / "out" / "run-1", file_mode=parse_mode("0644"))
    with out.writer("results.parquet") as f:
        f.write(b"rows")
    assert mode(out.path("results.parquet")) == 0o644
    assert mode(out.root) == 0o755 and mode(tmp_path / "out") == 0o755
    assert dir_mode_for(0o640) == 0o750 and dir_mode_for(0o600) == 0o700


def test_sqlite_state_and_cache_private(tmp_path: Path, umask: int) -> None:
    home = tmp_path / "home"
    store = SqliteStore(home / "state.db")
    cache = SqliteCache(home / "cache.db")
    cache.put_many([(b"k", Outcome(status=SUCCEEDED, output_text="secret answer"))])
    store.add_observations({"x": (1.0, 2.0)})
    files = sorted(p for p in home.iterdir())
    assert {p.name for p in files} >= {"state.db", "state.db-wal", "cache.db", "cache.db-wal"}
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    assert mode(home) == 0o700
    store.close()
    cache.close()


def test_an_existing_world_readable_database_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteStore(path).close()
    os.chmod(path, 0o644)
    SqliteStore(path).close()
    assert mode(path) == 0o600


def test_parse_mode_rejects_non_octal() -> None:
    assert parse_mode("0600") == 0o600 and parse_mode("644") == 0o644
    with pytest.raises(ValueError):
        parse_mode("0800")
