"""Run and chunk state in Redis (distributed mode): the same interface as SqliteStore.

Runs are JSON documents; chunks are hashes {state, v, doc}. Every chunk change is a
compare-and-set on the version `v` (a Lua script), so two coordinators can never both
move a chunk out of the same state; children of a transition are added in the same
atomic step. Only small state lives here: bulk data stays on blobs.

Leases are fenced: each acquisition gets a token from a counter that only grows, and a
write carrying a fence (base.Fence) is refused, atomically with the write itself, unless
the lease still holds that acquisition's value.
"""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec
import redis

from batchd.errors import BatchdError
from batchd.state.base import RUN_DONE, Chunk, Fence, Run, StaleLease

P = "batchd:"
_enc = msgspec.json.Encoder()
_RUN_DEC = msgspec.json.Decoder(Run)
_CHUNK_DEC = msgspec.json.Decoder(Chunk)
CAS_RETRIES = 20


def redact(url: str) -> str:
    """The URL without its password (redis://user:secret@host -> redis://user:***@host)."""
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


NO_LEASE = f"{P}lease:-"  # the lease key a write without a fence names (never checked)

# KEYS: chunk hash, run's chunk zset, batch-id set, lease key
# ARGV: fence holder or "", expected v, new state, new doc, batch id or "",
#       then (id, state, doc) per child
_TRANSITION = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[1] then return -1 end
local v = redis.call('HGET', KEYS[1], 'v')
if v ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'doc', ARGV[4], 'v', tonumber(v) + 1)
if ARGV[5] ~= '' then redis.call('SADD', KEYS[3], ARGV[5]) end
for i = 6, #ARGV, 3 do
  local ck = 'batchd:chunk:' .. ARGV[i]
  if redis.call('EXISTS', ck) == 0 then
    redis.call('HSET', ck, 'state', ARGV[i + 1], 'doc', ARGV[i + 2], 'v', 0)
    redis.call('ZADD', KEYS[2], 0, ARGV[i])
  end
end
return 1
"""

# KEYS: lease key, token counter. ARGV: owner, ttl ms. The new token, or 0 when held.
_TAKE_LEASE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '#' .. token, 'PX', ARGV[2])
return token
"""


def _lease_key(name: str) -> str:
    return f"{P}lease:{name}"


def _stale(fence: Fence) -> StaleLease:
    return StaleLease(f"lease {fence.name} (token {fence.token}) is no longer held")


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
        self._take_lease = self._r.register_script(_TAKE_LEASE)

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

    def update_run(self, run_id: str, fence: Fence | None = None, **fields: Any) -> Run:
        key = f"{P}run:{run_id}"
        with self._r.pipeline() as pipe:
            while True:
                try:
                    self._watch_fence(pipe, fence)
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
    def add_chunks(self, chunks: list[Chunk], fence: Fence | None = None) -> None:
        """Insert chunks; ones that exist already are left as they are (idempotent)."""

        def queue(pipe: Any) -> None:
            for c in chunks:
                key = f"{P}chunk:{c.chunk_id}"
                pipe.hsetnx(key, "doc", _enc.encode(c))
                pipe.hsetnx(key, "state", c.state)
                pipe.hsetnx(key, "v", 0)
                pipe.zadd(f"{P}run:{c.run_id}:chunks", {c.chunk_id: 0})

        self._fenced_multi(fence, queue)

    def _watch_fence(self, pipe: Any, fence: Fence | None) -> None:
        """In a WATCH block: raise StaleLease unless the fence's lease is still held."""
        if fence is None:
            return
        pipe.watch(_lease_key(fence.name))
        held = pipe.get(_lease_key(fence.name))
        if held is None or held.decode() != fence.holder:
            pipe.unwatch()
            raise _stale(fence)

    def _fenced_multi(self, fence: Fence | None, queue: Any) -> None:
        """Run the commands `queue(pipe)` adds in one MULTI, only while `fence` holds."""
        with self._r.pipeline() as pipe:
            while True:
                try:
                    self._watch_fence(pipe, fence)
                    pipe.multi()
                    queue(pipe)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

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
        fence: Fence | None = None,
        **fields: Any,
    ) -> Chunk | None:
        """Set `fields` on the chunk iff its state is in `from_states`; add children atomically.

        Returns the updated chunk, or None when another step got there first; raises
        StaleLease (changing nothing) when `fence` is given and its lease is no longer held.
        """
        key = f"{P}chunk:{chunk_id}"
        for _ in range(CAS_RETRIES):
            state, v, doc = self._r.hmget(key, "state", "v", "doc")
            if doc is None or state.decode() not in from_states:
                return None
            chunk = _CHUNK_DEC.decode(doc)
            for name, value in fields.items():
                setattr(chunk, name, value)
            args: list[Any] = [fence.holder if fence else ""]
            args += [v, chunk.state, _enc.encode(chunk), chunk.vendor_batch_id or ""]
            for c in new_children or []:
                args += [c.chunk_id, c.state, _enc.encode(c)]
            lease = _lease_key(fence.name) if fence else NO_LEASE
            keys = [key, f"{P}run:{chunk.run_id}:chunks", f"{P}batch_ids", lease]
            done = self._transition(keys=keys, args=args)
            if done == -1 and fence is not None:
                raise _stale(fence)
            if done:
                return chunk
        raise RuntimeError(f"chunk {chunk_id}: too much contention to update it")

    def check_fence(self) -> None:
        """No fence on this store's own writes (FencedStore adds one): nothing to check."""

    def known_batch_ids(self) -> set[str]:
        return {i.decode() for i in self._r.smembers(f"{P}batch_ids")}

    def coordinators_alive(self) -> bool:
        """Whether any coordinator refreshed its arq health key lately."""
        return bool(self._r.exists(f"{P}coordinator:health-check"))

    # --- leases (one coordinator works on a run at a time), fenced by tokens ----------------
    def take_lease(self, name: str, owner: str, ttl_s: float) -> Fence | None:
        """The lease's new fence (its token one more than any before), or None when held."""
        keys = [_lease_key(name), f"{P}lease-token:{name}"]
        token = int(self._take_lease(keys=keys, args=[owner, int(ttl_s * 1000)]))
        if not token:
            return None
        return Fence(name=name, token=token, holder=f"{owner}#{token}")

    def lease_held(self, fence: Fence) -> bool:
        held = self._r.get(_lease_key(fence.name))
        return held is not None and held.decode() == fence.holder

    def lease_taken(self, name: str) -> bool:
        """Whether anyone holds the lease `name` now."""
        return bool(self._r.exists(_lease_key(name)))

    def renew_lease(self, fence: Fence, ttl_s: float) -> bool:
        script = (
            "if redis.call('GET', KEYS[1]) == ARGV[1] then "
            "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end"
        )
        return bool(
            self._r.eval(script, 1, _lease_key(fence.name), fence.holder, int(ttl_s * 1000))
        )

    def release_lease(self, fence: Fence) -> None:
        script = (
            "if redis.call('GET', KEYS[1]) == ARGV[1] then "
            "return redis.call('DEL', KEYS[1]) else return 0 end"
        )
        self._r.eval(script, 1, _lease_key(fence.name), fence.holder)

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
    def add_observations(
        self, sums: dict[str, tuple[float, float]], fence: Fence | None = None
    ) -> None:
        def queue(pipe: Any) -> None:
            for key, (num, den) in sums.items():
                pipe.hincrbyfloat(f"{P}obs:num", key, num)
                pipe.hincrbyfloat(f"{P}obs:den", key, den)

        self._fenced_multi(fence, queue)

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
