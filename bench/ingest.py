"""Ingest benchmark (DESIGN §7): `batchd plan FILE` against the floor of reading the file.

The floor is a fresh process that reads the same file line by line and decodes each line with
orjson. `batchd plan` runs in a fresh process too, with an empty BATCHD_HOME (empty cache, no
batchd.toml) and a temp cwd. Each child runs under its own tiny wrapper process, which times it
and reports its peak RSS (RUSAGE_CHILDREN), so the peak is that child's alone.

    python bench/ingest.py [--lines 1000000 --lines 3000000] [--dup-fraction 0.3]
                           [--workdir bench/out] [--seed 7] [--repeat 1]

Input files are generated once per (lines, dup-fraction, seed) and reused from the workdir.
Prints a table; targets are reported as met / not met, never asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time
import tomllib
from importlib import resources
from pathlib import Path

import orjson

GEN_VERSION = 1  # bump when the generator changes, so cached files are regenerated
MODELS = ("gpt-5.4-nano", "gpt-5.4-mini", "gpt-5-mini")
TENANTS = ("acme", "globex", "initech", "umbrella")
SYSTEMS = (
    "You are a concise support assistant.",
    "Classify the text. Answer with one label.",
    "You extract structured fields and reply in JSON.",
)
TASKS = (
    "Summarize ticket",
    "Classify review",
    "Translate to French, message",
    "Extract the order number and date from email",
    "Write a one-line reply to customer note",
)
TEXT = (
    "the order arrived late and the box was damaged so I would like a refund or a replacement "
    "please check my account because the invoice shows a double charge for the same item our "
    "team cannot log in since the last update and the password reset link has expired twice "
    "shipping to the warehouse took nine days which is longer than the three days promised on "
    "your website the product works well but the battery drains fast when the screen is on "
    "can you confirm the delivery address and the new date for the installation visit thanks"
)
WORDS = TEXT.split()

FLOOR = """import orjson, sys
with open(sys.argv[1], "rb") as f:
    for line in f:
        orjson.loads(line)
"""

WRAPPER = """import json, resource, subprocess, sys, time
t0 = time.perf_counter()
rc = subprocess.call(sys.argv[2:])
wall = time.perf_counter() - t0
with open(sys.argv[1], "w") as f:
    json.dump([wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss], f)
sys.exit(rc)
"""

TARGET_RATE = 100_000
TARGET_RATIO = 3.0
TARGET_RSS_MB = 1024.0


def content(u: int) -> dict:
    """Request number u: a pure function of u, so a duplicate is re-rendered, not stored."""
    d = hashlib.blake2b(u.to_bytes(8, "little"), digest_size=64).digest()
    n_words = 4 + d[0] % 30
    text = " ".join(WORDS[b % len(WORDS)] for b in d[8 : 8 + n_words])
    return {
        "fmt": d[1] % 3,  # 0 openai, 1 anthropic, 2 native
        "model": MODELS[d[2] % len(MODELS)],
        "system": SYSTEMS[d[3] % len(SYSTEMS)] if d[4] % 3 == 0 else None,
        "prompt": f"{TASKS[d[5] % len(TASKS)]} #{u}: {text}",
        "max_tokens": (64, 128, 256, 512, 1024)[d[6] % 5],
        "tenant": TENANTS[d[7] % len(TENANTS)],
    }


def render(line_id: str, c: dict) -> bytes:
    messages = [{"role": "user", "content": c["prompt"]}]
    if c["fmt"] == 0:
        if c["system"]:
            messages.insert(0, {"role": "system", "content": c["system"]})
        body = {"model": c["model"], "messages": messages, "max_tokens": c["max_tokens"]}
        obj = {"custom_id": line_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    elif c["fmt"] == 1:
        params = {"model": c["model"], "max_tokens": c["max_tokens"], "messages": messages}
        if c["system"]:
            params["system"] = c["system"]
        obj = {"custom_id": line_id, "params": params}
    else:
        obj = {
            "id": line_id,
            "model": c["model"],
            "prompt": c["prompt"],
            "max_tokens": c["max_tokens"],
            "metadata": {"tenant": c["tenant"], "tags": {"job": "nightly", "src": "bench"}},
        }
        if c["system"]:
            obj["system"] = c["system"]
    return orjson.dumps(obj)


def generate(path: Path, lines: int, dup_fraction: float, seed: int) -> int:
    """Write the file (atomically); return the number of duplicate lines."""
    rng = random.Random(seed)
    uniques = dups = 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        buf: list[bytes] = []
        for i in range(lines):
            if uniques and rng.random() < dup_fraction:
                u, dups = rng.randrange(uniques), dups + 1
            else:
                u, uniques = uniques, uniques + 1
            buf.append(render(f"req-{i:09d}", content(u)))
            if len(buf) == 100_000:
                f.write(b"\n".join(buf) + b"\n")
                buf.clear()
        if buf:
            f.write(b"\n".join(buf) + b"\n")
    tmp.replace(path)
    return dups


def input_file(workdir: Path, lines: int, dup_fraction: float, seed: int) -> tuple[Path, int]:
    path = workdir / f"ingest-{lines}-dup{dup_fraction:g}-seed{seed}-v{GEN_VERSION}.jsonl"
    meta = path.with_suffix(".dups")
    if path.exists() and meta.exists():
        return path, int(meta.read_text())
    t0 = time.perf_counter()
    dups = generate(path, lines, dup_fraction, seed)
    meta.write_text(str(dups))
    print(f"generated {path} ({lines:,} lines) in {time.perf_counter() - t0:.1f}s", flush=True)
    return path, dups


def measure(argv: list[str], cwd: str, env: dict[str, str]) -> tuple[float, float, bytes]:
    """Wall seconds, peak RSS in MB and output of one fresh child, run under WRAPPER.

    A child's ru_maxrss starts at its parent's peak (exec keeps the old mm's high-water mark), so
    the child is started by a tiny fresh wrapper rather than by this process.
    """
    with tempfile.TemporaryFile() as out, tempfile.NamedTemporaryFile() as report:
        cmd = [sys.executable, "-c", WRAPPER, report.name, *argv]
        rc = subprocess.call(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        out.seek(0)
        text = out.read()
        wall, maxrss_kib = orjson.loads(Path(report.name).read_bytes() or b"[0, 0]")
    if rc != 0:
        msg = text.decode(errors="replace")
        sys.exit(f"{argv} failed with exit code {rc}:\n{msg}")
    return wall, maxrss_kib / 1024, text  # ru_maxrss is in KiB on Linux


def best(argv: list[str], cwd: str, env: dict[str, str], repeat: int) -> tuple[float, float, bytes]:
    runs = [measure(argv, cwd, env) for _ in range(repeat)]
    return min(runs, key=lambda r: r[0])


def bench_one(path: Path, repeat: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        home, cwd = Path(tmp, "home"), Path(tmp, "cwd")
        home.mkdir()
        cwd.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")}
        env.update(BATCHD_HOME=str(home), COLUMNS="160")
        floor_s, floor_rss, _ = best(
            [sys.executable, "-c", FLOOR, str(path)], str(cwd), env, repeat
        )
        plan_argv = [sys.executable, "-m", "batchd.cli", "plan", str(path)]
        plan_s, plan_rss, text = best(plan_argv, str(cwd), env, repeat)
    return {
        "floor_s": floor_s,
        "floor_rss": floor_rss,
        "plan_s": plan_s,
        "plan_rss": plan_rss,
        "plan_out": text.decode(errors="replace"),
    }


def check_models() -> None:
    book = tomllib.loads(resources.files("batchd.config").joinpath("data/prices.toml").read_text())
    for m in MODELS:
        vendor = book["models"].get(m, {}).get("vendor")
        if vendor != "openai":
            sys.exit(f"model {m} is not an openai model in batchd/data/prices.toml ({vendor})")


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--lines",
        type=int,
        action="append",
        help="lines per file; repeat for several sizes (default 1M and 3M)",
    )
    ap.add_argument("--dup-fraction", type=float, default=0.3)
    ap.add_argument("--workdir", type=Path, default=Path(__file__).parent / "out")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement; best is kept")
    args = ap.parse_args()
    sizes = sorted(set(args.lines or [1_000_000, 3_000_000]))
    check_models()
    args.workdir.mkdir(parents=True, exist_ok=True)

    rows = []
    for n in sizes:
        path, dups = input_file(args.workdir, n, args.dup_fraction, args.seed)
        print(f"measuring {path.name} ...", flush=True)
        r = bench_one(path, args.repeat)
        r.update(lines=n, dups=dups, mb=path.stat().st_size / 1e6)
        rows.append(r)

    head = (
        "lines",
        "file MB",
        "floor s",
        "floor lines/s",
        "plan s",
        "plan lines/s",
        "plan/floor",
        "plan RSS MB",
        "floor RSS MB",
    )
    print()
    print("  ".join(f"{h:>13}" for h in head))
    for r in rows:
        cells = (
            f"{r['lines']:,}",
            f"{r['mb']:,.0f}",
            f"{r['floor_s']:.2f}",
            f"{r['lines'] / r['floor_s']:,.0f}",
            f"{r['plan_s']:.2f}",
            f"{r['lines'] / r['plan_s']:,.0f}",
            f"{r['plan_s'] / r['floor_s']:.2f}",
            f"{r['plan_rss']:,.0f}",
            f"{r['floor_rss']:,.0f}",
        )
        print("  ".join(f"{c:>13}" for c in cells))

    print()
    for r in rows:
        summary = [s.strip() for s in r["plan_out"].splitlines()[:3]]
        print(
            f"{r['lines']:,} lines, {r['dups']:,} generated duplicates; plan says: "
            + " | ".join(summary)
        )
    small, large = rows[0], rows[-1]
    if len(rows) > 1:
        print(
            f"plan peak RSS {small['plan_rss']:,.0f} MB at {small['lines']:,} lines -> "
            f"{large['plan_rss']:,.0f} MB at {large['lines']:,} lines "
            f"({large['plan_rss'] / small['plan_rss']:.2f}x for "
            f"{large['lines'] / small['lines']:.1f}x the lines; flat is ~1x)"
        )
    worst_rate = min(r["lines"] / r["plan_s"] for r in rows)
    worst_ratio = max(r["plan_s"] / r["floor_s"] for r in rows)
    worst_rss = max(r["plan_rss"] for r in rows)
    print(
        f"target >= {TARGET_RATE:,} lines/s: worst {worst_rate:,.0f} -> "
        f"{verdict(worst_rate >= TARGET_RATE)}"
    )
    print(
        f"target <= {TARGET_RATIO:g}x floor: worst {worst_ratio:.2f}x -> "
        f"{verdict(worst_ratio <= TARGET_RATIO)}"
    )
    print(
        f"target peak RSS < 1 GB: worst {worst_rss:,.0f} MB -> {verdict(worst_rss < TARGET_RSS_MB)}"
    )


if __name__ == "__main__":
    main()
