"""The SQLite and Redis stores and caches behave the same (real redis-server, no fakeredis)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from batchd.cache.redis_cache import RedisCache
from batchd.cache.sqlite_cache import SqliteCache
from batchd.outcome import FAILED, SUCCEEDED, Outcome
from batchd.state.base import (
    CHUNK_COLLECTED,
    CHUNK_CREATING,
    CHUNK_PENDING,
    CHUNK_SUBMITTED,
    RUN_DONE,
    Chunk,
    Fence,
    Run,
    StaleLease,
)
from batchd.state.fencing import FencedStore
from batchd.state.redis_store import RedisStore
from batchd.state.sqlite_store import SqliteStore
from tests.support.redis_server import RedisServer


@pytest.fixture(params=["sqlite", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A factory: each call is a new connection to the same store (like another process)."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""

    def new() -> Any:
        return SqliteStore(tmp_path / "state.db") if not url else RedisStore(url)

    return new


@pytest.fixture
def store(open_store: Any) -> Any:
    s = open_store()
    yield s
    s.close()


def _run(run_id: str, base: str = "b") -> Run:
    return Run(run_id=run_id, base_id=base, source="/x", output="/o", options={})


def _chunk(cid: str, run_id: str = "r1") -> Chunk:
    return Chunk(
        chunk_id=cid,
        run_id=run_id,
        backend="openai",
        model="m",
        path=f"{cid}.jsonl",
        n_requests=3,
        n_bytes=30,
    )


def test_runs(store: Any) -> None:
    assert store.create_run(_run("r1"))
    assert not store.create_run(_run("r1"))  # idempotent: the first one stays
    time.sleep(0.01)
    assert store.create_run(_run("r1-2"))
    assert [r.run_id for r in store.runs_with_base("b")] == ["r1", "r1-2"]
    assert [r.run_id for r in store.list_runs()] == ["r1-2", "r1"]
    got = store.update_run("r1", cancel_requested=True, stats={"a": 1})
    assert got.cancel_requested and store.get_run("r1").stats == {"a": 1}
    assert store.get_run("nope") is None
    with pytest.raises(KeyError):
        store.update_run("nope", state=RUN_DONE)


def test_chunks_and_compare_and_set(store: Any) -> None:
    store.create_run(_run("r1"))
    store.add_chunks([_chunk("c1"), _chunk("c2")])
    store.add_chunks([_chunk("c1")])  # idempotent
    assert [c.chunk_id for c in store.chunks("r1")] == ["c1", "c2"]
    moved = store.transition("c1", (CHUNK_PENDING,), state=CHUNK_CREATING, intent_at=5.0)
    assert moved is not None and moved.intent_at == 5.0
    assert store.transition("c1", (CHUNK_PENDING,), state=CHUNK_CREATING) is None
    child = _chunk("c1.2")
    done = store.transition(
        "c1",
        (CHUNK_CREATING,),
        new_children=[child],
        state=CHUNK_SUBMITTED,
        vendor_batch_id="batch_1",
    )
    assert done is not None and store.get_chunk("c1").state == CHUNK_SUBMITTED
    assert [c.chunk_id for c in store.chunks("r1")] == ["c1", "c1.2", "c2"]
    assert store.known_batch_ids() == {"batch_1"}


def test_observations_add_up_across_runs_and_connections(store: Any, open_store: Any) -> None:
    assert store.observations() == {}
    store.add_observations({"bpt|m": (400.0, 100.0), "tput|v|H100": (9000.0, 3.0)})
    other = open_store()  # another process adds the next run's sums
    try:
        other.add_observations({"bpt|m": (100.0, 50.0)})
        assert other.observations() == {
            "bpt|m": (500.0, 150.0),
            "tput|v|H100": (9000.0, 3.0),
        }
    finally:
        other.close()
    assert store.observations()["bpt|m"] == (500.0, 150.0)


def test_only_one_of_many_racers_wins_a_transition(store: Any, open_store: Any) -> None:
    store.create_run(_run("r1"))
    store.add_chunks([_chunk("c1")])
    wins: list[str] = []

    def race(name: str) -> None:
        own = open_store()  # its own connection, as another coordinator would have
        if own.transition("c1", (CHUNK_PENDING,), state=CHUNK_CREATING, error=name):
            wins.append(name)
        own.close()

    threads = [threading.Thread(target=race, args=(f"t{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert store.get_chunk("c1").error == wins[0]


def test_claims_first_writer_wins_among_racers(store: Any, open_store: Any) -> None:
    wins: list[str] = []

    def race(name: str) -> None:
        own = open_store()  # its own connection, as another watcher would have
        if own.claim("drop", "bucket/inbox/a.jsonl#etag1", name):
            wins.append(name)
        own.close()

    threads = [threading.Thread(target=race, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert store.claims("drop") == {"bucket/inbox/a.jsonl#etag1": wins[0]}
    # Another ETag of the same key (the file was replaced) is a new claim; namespaces apart.
    assert store.claim("drop", "bucket/inbox/a.jsonl#etag2", "x")
    assert store.claim("job:nightly", "2026-11-23T02:00:00+00:00", "y")
    assert not store.claim("job:nightly", "2026-11-23T02:00:00+00:00", "z")
    assert store.claims("job:nightly") == {"2026-11-23T02:00:00+00:00": "y"}
    store.unclaim("drop", "bucket/inbox/a.jsonl#etag2")  # released: may be claimed again
    assert store.claim("drop", "bucket/inbox/a.jsonl#etag2", "again")
    assert store.claims("none") == {}


def test_redis_compare_and_set_across_processes_and_connections(redis_url: str) -> None:
    a, b = RedisStore(redis_url), RedisStore(redis_url)
    a.create_run(_run("r1"))
    a.add_chunks([_chunk("c1")])
    assert a.transition("c1", (CHUNK_PENDING,), state=CHUNK_CREATING) is not None
    assert b.transition("c1", (CHUNK_PENDING,), state=CHUNK_CREATING) is None
    # A field-only update in one connection is not lost by a later one in another.
    a.transition("c1", (CHUNK_CREATING,), error="from a")
    b.transition("c1", (CHUNK_CREATING,), vendor_status="from b")
    c = a.get_chunk("c1")
    assert (c.error, c.vendor_status) == ("from a", "from b")
    a.transition("c1", (CHUNK_CREATING,), state=CHUNK_COLLECTED)
    a.update_run("r1", state=RUN_DONE)
    assert "r1" not in a.active_runs()


def test_leases(redis_url: str) -> None:
    s = RedisStore(redis_url)
    mine = s.take_lease("run:r1", "me", 0.5)
    assert mine is not None
    assert s.take_lease("run:r1", "you", 0.5) is None
    assert not s.renew_lease(Fence(name="run:r1", token=mine.token, holder="you#1"), 5)
    assert s.renew_lease(mine, 0.3)
    time.sleep(0.4)
    yours = s.take_lease("run:r1", "you", 5)  # expired: the next owner takes over
    assert yours is not None and yours.token > mine.token
    s.release_lease(mine)  # not the holder any more: nothing happens
    assert s.take_lease("run:r1", "me", 5) is None
    s.release_lease(yours)
    again = s.take_lease("run:r1", "me", 5)
    assert again is not None and again.token > yours.token  # tokens only grow


def test_a_stale_fence_is_refused_and_changes_nothing(redis_url: str) -> None:
    s = RedisStore(redis_url)
    s.create_run(_run("r1"))
    old = s.take_lease("run:r1", "paused", 0.2)
    assert old is not None
    old_view = FencedStore(s, old)
    old_view.add_chunks([_chunk("c1")])
    assert old_view.transition("c1", (CHUNK_PENDING,), state=CHUNK_CREATING) is not None
    old_view.check_fence()  # still held: no error
    time.sleep(0.3)  # paused past its lease...
    new = s.take_lease("run:r1", "other", 5)  # ...and another coordinator took the run
    assert new is not None and new.token > old.token
    new_view = FencedStore(s, new)
    with pytest.raises(StaleLease):
        old_view.check_fence()
    for write in (
        lambda: old_view.transition("c1", (CHUNK_CREATING,), state=CHUNK_SUBMITTED),
        lambda: old_view.update_run("r1", state=RUN_DONE),
        lambda: old_view.add_chunks([_chunk("c2")]),
        lambda: old_view.add_observations({"k": (1.0, 2.0)}),
    ):
        with pytest.raises(StaleLease):
            write()
    assert s.get_chunk("c1").state == CHUNK_CREATING
    assert s.get_chunk("c2") is None
    assert s.get_run("r1").state != RUN_DONE
    assert s.observations() == {}
    # The holder's writes go through; a lease that expired with nobody after it is refused too.
    assert new_view.transition("c1", (CHUNK_CREATING,), vendor_status="x") is not None
    new_view.update_run("r1", stats={"a": 1})
    s.release_lease(new)
    with pytest.raises(StaleLease):
        new_view.transition("c1", (CHUNK_CREATING,), state=CHUNK_SUBMITTED)
    assert s.get_chunk("c1").vendor_status == "x" and s.get_run("r1").stats == {"a": 1}


def test_sqlite_accepts_any_fence(tmp_path: Path) -> None:
    """Embedded mode: one driver per run (its lock), so a fence never refuses a write."""
    s = SqliteStore(tmp_path / "state.db")
    s.create_run(_run("r1"))
    fence = Fence(name="run:r1", token=1, holder="me#1")
    s.add_chunks([_chunk("c1")], fence=fence)
    s.check_fence()
    assert s.transition("c1", (CHUNK_PENDING,), fence=fence, state=CHUNK_CREATING) is not None
    assert s.update_run("r1", fence=fence, stats={"a": 1}).stats == {"a": 1}


@pytest.fixture(params=["sqlite", "redis"])
def cache_of(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    def make(ttl_s: float = 0.0) -> Any:
        if request.param == "sqlite":
            return SqliteCache(tmp_path / "cache.db", ttl_s=ttl_s)
        return RedisCache(request.getfixturevalue("redis_url"), ttl_s=ttl_s)

    return make


def test_cache_keeps_only_successes(cache_of: Any) -> None:
    cache = cache_of()
    ok = Outcome(status=SUCCEEDED, output_text="hi", response_json='{"a": 1}', input_tokens=3)
    bad = Outcome(status=FAILED, error_type="x")
    assert cache.put_many([(b"k" * 16, ok), (b"f" * 16, bad)]) == 1
    got = cache.get_many([b"k" * 16, b"f" * 16, b"z" * 16])
    assert list(got) == [b"k" * 16]
    assert got[b"k" * 16].output_text == "hi" and got[b"k" * 16].input_tokens == 3


def test_cache_keeps_every_field_of_the_answer_shape(cache_of: Any) -> None:
    """Embeddings, Responses and completions answers are cached whole, like chat answers."""
    cache = cache_of()
    vector = [0.1, -0.25, 1.0 / 3.0] * 512  # 1536 floats, as text-embedding-3-small gives
    answers = {
        b"e" * 16: Outcome(
            status=SUCCEEDED, embedding=vector, input_tokens=4, request_id="req_1", tier="batch"
        ),
        b"r" * 16: Outcome(
            status=SUCCEEDED,
            output_text="echo: x",
            finish_reason="stop",
            output_tokens=9,
            reasoning_tokens=7,
            tool_calls='[{"id": "c1"}]',
            request_id="req_2",
        ),
    }
    assert cache.put_many(answers.items()) == 2
    got = cache.get_many(list(answers))
    assert got == answers  # every field back, the vector exactly


def test_empty_cache_answers_nothing_then_sees_what_another_run_stored(
    tmp_path: Path, cache_of: Any
) -> None:
    """An empty cache is looked up cheaply (SqliteCache: one query), but its emptiness is
    not remembered: answers another run stores in between are hits at the next lookup."""
    cache = cache_of()
    keys = [i.to_bytes(16, "big") for i in range(600)]  # more than one IN group (sqlkeys.GROUP)
    assert cache.get_many(keys) == {}
    other = cache_of()  # another run's connection to the same cache
    ok = Outcome(status=SUCCEEDED, output_text="later")
    assert other.put_many([(keys[0], ok), (keys[599], ok)]) == 2
    assert sorted(cache.get_many(keys)) == [keys[0], keys[599]]


def test_cache_ttl(cache_of: Any) -> None:
    cache = cache_of(ttl_s=1)
    cache.put_many([(b"t" * 16, Outcome(status=SUCCEEDED, output_text="x"))])
    assert cache.get_many([b"t" * 16])
    time.sleep(1.3)
    assert cache.get_many([b"t" * 16]) == {}


def test_redis_url_with_password(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "pw", password="s3cret").start()
    try:
        s = RedisStore(server.url)
        assert s.create_run(_run("r1"))
        assert s.get_run("r1") is not None
    finally:
        server.stop()
