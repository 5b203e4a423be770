"""Semantic cache speed (issue 19, point 3): a run of `--lines` lines against `--entries`
cached entries, seconds per phase and peak memory.

The lookup path is batchd's own (SemanticCache.lookup on a SQLite store and result cache,
in blocks of `--block` lines as ingest calls it): load (one read of the scope), index (the
usearch graph, or the exact matrix for a small scope), search, guard (thresholds, rules,
the answers' read). Vectors: `--sample` generated texts are embedded with the real
all-MiniLM-L6-v2; the cached entries' and the lines' vectors are those real vectors plus
small deterministic perturbations (cheap, so a million lines fit; said in the output), so
the index sees MiniLM's clustered geometry. Embedding is measured, not perturbed: MiniLM
on `--embed-sample` distinct line texts (batches of LocalEmbedder.BATCH, sorted by length),
and its rate extrapolated to the run's distinct texts.

    python bench/semantic_speed.py [--entries 100000] [--lines 1000000] [--block 20000]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchd.cache.embedders import LocalEmbedder, Spend, open_embedder
from batchd.cache.semantic import vector_index
from batchd.cache.semantic.entries import Entry
from batchd.cache.semantic.matcher import Query, SemanticCache, store_scope
from batchd.cache.semantic.scope import SemanticPlan
from batchd.cache.semantic.sqlite_entries import SqliteSemanticStore
from batchd.cache.sqlite_cache import SqliteCache
from batchd.config.cache_settings import SemanticSettings
from batchd.outcome import SUCCEEDED, Outcome

PLAN = SemanticPlan("last_user", True, frozenset(), frozenset())
SCOPE = b"speed-scope-0000"
VERBS = ["reset", "change", "update", "cancel", "renew", "transfer", "close", "verify"]
THINGS = ["password", "plan", "order", "address", "card", "account", "subscription", "invoice"]


def text(n: int) -> str:
    v, t = VERBS[n % 8], THINGS[(n // 8) % 8]
    return f"How do I {v} my {t} for customer {n // 64} in region {n % 97}?"


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class Table:
    """Vectors by text for the lookup (precomputed): the speed of everything but the model."""

    def __init__(self, name: str, dim: int) -> None:
        self.name, self.dim = name, dim
        self.spend = Spend()
        self.by_text: dict[str, np.ndarray] = {}
        self.s = 0.0

    def embed(self, texts: list[str]) -> np.ndarray:
        t0 = time.perf_counter()
        out = np.stack([self.by_text[t] for t in texts])
        self.s += time.perf_counter() - t0
        return out


class Clock:
    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def wrap(self, owner: object, name: str, phase: str) -> None:
        inner = getattr(owner, name)

        def timed(*a: object, **k: object) -> object:
            w, c = time.perf_counter(), time.process_time()
            try:
                return inner(*a, **k)
            finally:
                self.wall[phase] = self.wall.get(phase, 0.0) + time.perf_counter() - w
                self.cpu[phase] = self.cpu.get(phase, 0.0) + time.process_time() - c

        setattr(owner, name, timed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--block", type=int, default=20_000, help="lines per lookup call")
    ap.add_argument("--sample", type=int, default=2_000, help="texts embedded for real")
    ap.add_argument("--embed-sample", type=int, default=2_000)
    ap.add_argument("--noise", type=float, default=0.3, help="entries around the sample's vectors")
    ap.add_argument("--line-noise", type=float, default=0.1, help="lines around their entry")
    args = ap.parse_args()
    model = open_embedder("")
    assert isinstance(model, LocalEmbedder)
    base = model.embed([text(n) for n in range(args.sample)])
    dim = base.shape[1]

    def noisy(around: np.ndarray, norm: float, salt: int) -> np.ndarray:
        noise = np.random.default_rng(salt).standard_normal(around.shape, dtype=np.float32)
        return unit(around + (norm / np.sqrt(dim)) * noise)

    def vectors(ids: np.ndarray, salt: int) -> np.ndarray:
        """Entry vectors: a sampled MiniLM vector + noise of norm --noise (deterministic)."""
        return noisy(base[ids % args.sample], args.noise, salt)

    t0 = time.perf_counter()
    sample = [text(args.entries + n) for n in range(args.embed_sample)]
    model.embed(sample)
    embed_per_s = len(sample) / (time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteSemanticStore(Path(tmp) / "cache.db")
        results = SqliteCache(Path(tmp) / "cache.db")
        table = Table(model.name, dim)
        scope = store_scope(SCOPE, model.name)
        ids = np.arange(args.entries)
        ev = vectors(ids, 1)
        t0 = time.perf_counter()
        keys = [int(i).to_bytes(16, "big") for i in ids]
        store.add_entries(
            scope,
            [Entry(k, text(int(i)), v.tobytes()) for k, i, v in zip(keys, ids, ev, strict=True)],
        )
        results.put_many((k, Outcome(status=SUCCEEDED, output_text="ok")) for k in keys)
        stored_s = time.perf_counter() - t0
        clock = Clock()
        clock.wrap(store, "load", "load")
        clock.wrap(vector_index.ScopeIndex, "__init__", "index")
        clock.wrap(vector_index.ScopeIndex, "search", "search")
        sc = SemanticCache(SemanticSettings(enabled=True), store, results, PLAN, table, "speed")
        hits = candidates = 0
        lookup_s = lookup_cpu_s = 0.0  # inside SemanticCache.lookup (not the bench's own work)
        w0, c0 = time.perf_counter(), time.process_time()
        for start in range(0, args.lines, args.block):
            line_ids = np.arange(start, min(start + args.block, args.lines))
            target = (line_ids * 7919) % args.entries  # the entry each line resembles
            lv = noisy(ev[target], args.line_noise, 1_000_003 + start)
            qs = []
            for n, t, v in zip(line_ids.tolist(), target.tolist(), lv, strict=True):
                # half the lines ask the same as their entry (the rules agree), half differ
                q_text = text(t) if n % 2 else text(t) + f" Ticket {n}."
                table.by_text[q_text] = v
                qs.append(Query(b"q" + n.to_bytes(15, "big"), SCOPE, q_text))
            l0, lc0 = time.perf_counter(), time.process_time()
            matches, _ = sc.lookup(qs)
            lookup_s += time.perf_counter() - l0
            lookup_cpu_s += time.process_time() - lc0
            hits += sum(m.kind in ("hit", "verify") for m in matches.values())
            candidates += sum(m.kind == "candidate" for m in matches.values())
            table.by_text.clear()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    named = sum(clock.wall.get(p, 0.0) for p in ("load", "index", "search"))
    guard_wall = lookup_s - named - table.s
    named_cpu = sum(clock.cpu.get(p, 0.0) for p in ("load", "index", "search"))
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"vectors: {args.sample:,} texts embedded with the real all-MiniLM-L6-v2, entries and "
        f"lines are those vectors + deterministic noise (norm {args.noise}; lines "
        f"{args.line_noise} around their entry); load "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall times are shared)"
    )
    print(f"\n| phase ({args.lines:,} lines, {args.entries:,} entries in one scope) "
          "| wall s | CPU s |\n|---|---|---|")  # fmt: skip
    print(f"| (before: store the entries and answers, SQLite) | {stored_s:.1f} | |")
    for p in ("load", "index", "search"):
        print(f"| {p} | {clock.wall.get(p, 0.0):.1f} | {clock.cpu.get(p, 0.0):.1f} |")
    guard_cpu = lookup_cpu_s - named_cpu
    print(f"| guard (+ answers read, grouping) | {guard_wall:.1f} | {guard_cpu:.1f} |")
    print(f"| lookup without the model, total | {lookup_s:.1f} | {lookup_cpu_s:.1f} |")
    print(
        f"| (the bench making lines and vectors) | {wall - lookup_s:.1f} "
        f"| {cpu - lookup_cpu_s:.1f} |"
    )
    distinct = args.lines  # every line's text differs here: nothing deduplicated
    print(
        f"| embed: MiniLM measured {embed_per_s:,.0f} lines/s (batch {LocalEmbedder.BATCH}) "
        f"-> {distinct:,} distinct texts | {distinct / embed_per_s:.0f} (extrapolated) | |"
    )
    print(f"\nhits {hits:,}, candidates {candidates:,}; peak RSS {rss_mib:,.0f} MiB")


if __name__ == "__main__":
    main()
