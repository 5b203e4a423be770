"""Run and chunk state in Redis (distributed mode): the same interface as SqliteStore.

Runs are JSON documents; chunks are hashes {state, v, doc}. Every chunk change is a
compare-and-set on the version `v` (a Lua script), so two coordinators can never both
move a chunk out of the same state; children of a transition are added in the same
atomic step. Only small state lives here: bulk data stays on blobs.
"""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec
import redis

from batchd.errors import BatchdError
from batchd.state.base import RUN_DONE, Chunk, Run

P = "batchd:"
_enc = msgspec.json.Encoder()
_RUN_DEC = msgspec.json.Decoder(Run)
_CHUNK_DEC = msgspec.json.Decoder(Chunk)
CAS_RETRIES = 20


def redact(url: str) -> str:
    """The URL without its password (redis://user:secret@host -> redis://user:***@host)."""
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


# KEYS: chunk hash, run's chunk zset, batch-id set
# ARGV: expected v, new state, new doc, batch id or "", then (id, state, doc) per child
_TRANSITION = """
local v = redis.call('HGET', KEYS[1], 'v')
if v ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'doc', ARGV[3], 'v', tonumber(v) + 1)
if ARGV[4] ~= '' then redis.call('SADD', KEYS[3], ARGV[4]) end
for i = 5, #ARGV, 3 do
  local ck = 'batchd:chunk:' .. ARGV[i]
  if redis.call('EXISTS', ck) == 0 then
    redis.call('HSET', ck, 'state', ARGV[i + 1], 'doc', ARGV[i + 2], 'v', 0)
    redis.call('ZADD', KEYS[2], 0, ARGV[i])
  end
end
return 1
"""


class RedisStore:
    def __init__(self, url: str) -> None:
        # redis-py's stubs mix sync and async return types: treat the client as untyped.
        self._url = url
        try:
            self._r: Any = redis.Redis.from_url(url)
        except ValueError as exc:  # a URL redis-py cannot read
            raise BatchdError(
                f"Cannot read BATCHD_REDIS_URL {redact(url)!r}: {exc}.",
                "Write it as redis://host:6379/0 (rediss:// for TLS, unix:///path.sock).",
            ) from exc
        self._transition = self._r.register_script(_TRANSITION)

    def ping(self) -> None:
        """Raise BatchdError unless Redis answers (before anything is done in distributed mode)."""
        try:
            self._r.ping()
        except redis.RedisError as exc:
            raise BatchdError(
                f"Redis at {redact(self._url)} (BATCHD_REDIS_URL) does not answer: "
                f"{str(exc).rstrip('.')}.",
                "Start Redis or fix BATCHD_REDIS_URL (unset it to run embedded).",
            ) from exc

    # --- runs -------------------------------------------------------------------------
    def create_run(self, run: Run) -> bool:
        run.created_at = run.updated_at = time.time()
        if not self._r.set(f"{P}run:{run.run_id}", _enc.encode(run), nx=True):
            return False
        pipe = self._r.pipeline()
        pipe.zadd(f"{P}runs", {run.run_id: run.created_at})
        pipe.zadd(f"{P}base:{run.base_id}", {run.run_id: run.created_at})
        pipe.sadd(f"{P}active", run.run_id)
        pipe.execute()
        return True

    def get_run(self, run_id: str) -> Run | None:
        doc = self._r.get(f"{P}run:{run_id}")
        return _RUN_DEC.decode(doc) if doc else None

    def runs_with_base(self, base_id: str) -> list[Run]:
        ids = self._r.zrange(f"{P}base:{base_id}", 0, -1)
        return [r for r in (self.get_run(i.decode()) for i in ids) if r is not None]

    def list_runs(self, limit: int = 50) -> list[Run]:
        ids = self._r.zrevrange(f"{P}runs", 0, limit - 1)
        return [r for r in (self.get_run(i.decode()) for i in ids) if r is not None]

    def active_runs(self) -> list[str]:
        return sorted(i.decode() for i in self._r.smembers(f"{P}active"))

    def update_run(self, run_id: str, **fields: Any) -> Run:
        key = f"{P}run:{run_id}"
        with self._r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    doc = pipe.get(key)
                    if doc is None:
                        raise KeyError(run_id)
                    run = _RUN_DEC.decode(doc)
                    for name, value in fields.items():
                        setattr(run, name, value)
                    run.updated_at = time.time()
                    pipe.multi()
                    pipe.set(key, _enc.encode(run))
                    if run.state == RUN_DONE:
                        pipe.srem(f"{P}active", run_id)
                    pipe.execute()
                    return run
                except redis.WatchError:
                    continue

    # --- chunks -----------------------------------------------------------------------
    def add_chunks(self, chunks: list[Chunk]) -> None:
        """Insert chunks; ones that exist already are left as they are (idempotent)."""
        pipe = self._r.pipeline(transaction=True)
        for c in chunks:
            key = f"{P}chunk:{c.chunk_id}"
            pipe.hsetnx(key, "doc", _enc.encode(c))
            pipe.hsetnx(key, "state", c.state)
            pipe.hsetnx(key, "v", 0)
            pipe.zadd(f"{P}run:{c.run_id}:chunks", {c.chunk_id: 0})
        pipe.execute()

    def chunks(self, run_id: str) -> list[Chunk]:
        ids = self._r.zrange(f"{P}run:{run_id}:chunks", 0, -1)
        pipe = self._r.pipeline(transaction=False)
        for i in ids:
            pipe.hget(f"{P}chunk:{i.decode()}", "doc")
        return [_CHUNK_DEC.decode(d) for d in pipe.execute() if d]

    def get_chunk(self, chunk_id: str) -> Chunk | None:
        doc = self._r.hget(f"{P}chunk:{chunk_id}", "doc")
        return _CHUNK_DEC.decode(doc) if doc else None

    def transition(
        self,
        chunk_id: str,
        from_states: tuple[str, ...],
        new_children: list[Chunk] | None = None,
        **fields: Any,
    ) -> Chunk | None:
        """Set `fields` on the chunk iff its state is in `from_states`; add children atomically.

        Returns the updated chunk, or None when another step got there first.
        """
        key = f"{P}chunk:{chunk_id}"
        for _ in range(CAS_RETRIES):
            state, v, doc = self._r.hmget(key, "state", "v", "doc")
            if doc is None or state.decode() not in from_states:
                return None
            chunk = _CHUNK_DEC.decode(doc)
            for name, value in fields.items():
                setattr(chunk, name, value)
            args: list[Any] = [v, chunk.state, _enc.encode(chunk), chunk.vendor_batch_id or ""]
            for c in new_children or []:
                args += [c.chunk_id, c.state, _enc.encode(c)]
            keys = [key, f"{P}run:{chunk.run_id}:chunks", f"{P}batch_ids"]
            if self._transition(keys=keys, args=args):
                return chunk
        raise RuntimeError(f"chunk {chunk_id}: too much contention to update it")

    def known_batch_ids(self) -> set[str]:
        return {i.decode() for i in self._r.smembers(f"{P}batch_ids")}

    def coordinators_alive(self) -> bool:
        """Whether any coordinator refreshed its arq health key lately."""
        return bool(self._r.exists(f"{P}coordinator:health-check"))

    # --- leases (one coordinator works on a run at a time) -------------------------------
    def take_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        return bool(self._r.set(f"{P}lease:{name}", owner, nx=True, px=int(ttl_s * 1000)))

    def renew_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        script = (
            "if redis.call('GET', KEYS[1]) == ARGV[1] then "
            "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end"
        )
        return bool(self._r.eval(script, 1, f"{P}lease:{name}", owner, int(ttl_s * 1000)))

    def release_lease(self, name: str, owner: str) -> None:
        script = (
            "if redis.call('GET', KEYS[1]) == ARGV[1] then "
            "return redis.call('DEL', KEYS[1]) else return 0 end"
        )
        self._r.eval(script, 1, f"{P}lease:{name}", owner)

    # --- claims (drop-folder files, scheduled firings): first writer wins -----------------
    def claim(self, namespace: str, key: str, value: str) -> bool:
        """Record `key` in `namespace` iff nobody has (HSETNX); True for the one that did."""
        return bool(self._r.hsetnx(f"{P}claims:{namespace}", key, value))

    def unclaim(self, namespace: str, key: str) -> None:
        self._r.hdel(f"{P}claims:{namespace}", key)

    def claims(self, namespace: str) -> dict[str, str]:
        raw = self._r.hgetall(f"{P}claims:{namespace}")
        return {k.decode(): raw[k].decode() for k in sorted(raw)}

    # --- planner observations (sums added atomically) --------------------------------
    def add_observations(self, sums: dict[str, tuple[float, float]]) -> None:
        pipe = self._r.pipeline(transaction=True)
        for key, (num, den) in sums.items():
            pipe.hincrbyfloat(f"{P}obs:num", key, num)
            pipe.hincrbyfloat(f"{P}obs:den", key, den)
        pipe.execute()

    def observations(self) -> dict[str, tuple[float, float]]:
        pipe = self._r.pipeline(transaction=True)
        pipe.hgetall(f"{P}obs:num")
        pipe.hgetall(f"{P}obs:den")
        nums, dens = pipe.execute()
        return {
            k.decode(): (float(v), float(dens.get(k, 0.0))) for k, v in nums.items() if k in dens
        }

    def close(self) -> None:
        self._r.close()
