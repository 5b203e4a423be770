"""Ingest benchmark (DESIGN §7): `batchd plan FILE` and the ingest of `batchd submit FILE`,
side by side with the floor and with DuckDB, on the same file in the same run.

- floor: a fresh process reads the file line by line and decodes each line with orjson;
- duckdb: `read_csv` of the raw lines + `json()` + md5 of tenant and body (the Anthropic
  params, or a native line without its id and metadata) + `count(DISTINCT ...)`: the read, key
  and dedup step a user would otherwise script (all cores, as DuckDB does);
- plan: `batchd plan FILE`;
- submit: `batchd submit FILE` with no OPENAI_API_KEY, so it reads, keys, dedups, looks up
  the cache, writes lines.parquet and the chunk files, and stops at the preflight before the
  first vendor call (the bench checks it stopped there).
Each batchd child has an empty BATCHD_HOME (empty cache, no batchd.toml) and a temp cwd, and
runs under its own tiny wrapper process, which times it and reports its peak RSS
(RUSAGE_CHILDREN), so the peak is that child's alone.

    python bench/ingest.py [--lines 1000000 --lines 10000000] [--dup-fraction 0.3]
                           [--workdir bench/out] [--seed 7] [--repeat 1]

Input files are generated once per (lines, dup-fraction, seed) and reused from the workdir.
batchd's bytecode is compiled first, as an install does, so no child pays for compiling it
(a run with PYTHONDONTWRITEBYTECODE=1 would otherwise compile every module each time).
Prints a table; targets are reported as met / not met, never asserted.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import importlib.util
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

DUCKDB = """import duckdb, sys
src = (
    "SELECT json(line) AS j FROM read_csv(?, columns={'line': 'VARCHAR'}, header=false, "
    "delim='\\x01', quote='', escape='', auto_detect=false, max_line_size=16777216)"
)
key = (
    "md5(coalesce(j->>'$.metadata.tenant', 'default') || chr(0) || coalesce(j->'$.body', "
    "j->'$.params', json_merge_patch(j, '{\\"id\\": null, \\"metadata\\": null}'))::VARCHAR)"
)
q = f"SELECT count(*), count(DISTINCT {key}) FROM ({src})"
duckdb.execute("SET enable_progress_bar = false")
lines, unique = duckdb.execute(q, [sys.argv[1]]).fetchone()
print(f"duckdb: {lines} lines, {unique} unique keys")
"""

WRAPPER = """import json, resource, subprocess, sys, time
t0 = time.perf_counter()
rc = subprocess.call(sys.argv[2:])
wall = time.perf_counter() - t0
with open(sys.argv[1], "w") as f:
    json.dump([wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss], f)
sys.exit(rc)
"""

TARGET_RATE = 400_000  # batchd plan at 1M lines (issue 20)
TARGET_DUCKDB_RATIO = 2.0  # plan's time at most 2x DuckDB's
TARGET_RSS_MB = 1024.0
TARGET_RSS_GROWTH = 1.2  # peak RSS from the smallest to the largest size
STOPPED_AT = b"OPENAI_API_KEY is not set"  # submit's preflight: before the first vendor call


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


def measure(
    argv: list[str], cwd: str, env: dict[str, str], expect_rc: int = 0
) -> tuple[float, float, bytes]:
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
    if rc != expect_rc:
        msg = text.decode(errors="replace")
        sys.exit(f"{argv} failed with exit code {rc}:\n{msg}")
    return wall, maxrss_kib / 1024, text  # ru_maxrss is in KiB on Linux


def best(
    argv: list[str], env: dict[str, str], repeat: int, expect_rc: int = 0
) -> tuple[float, float, bytes]:
    """The fastest of `repeat` runs, each with a fresh empty BATCHD_HOME and cwd."""
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            home, cwd = Path(tmp, "home"), Path(tmp, "cwd")
            home.mkdir()
            cwd.mkdir()
            child_env = {**env, "BATCHD_HOME": str(home)}
            argv_here = [a.replace("{tmp}", tmp) for a in argv]
            runs.append(measure(argv_here, str(cwd), child_env, expect_rc))
    return min(runs, key=lambda r: r[0])


TOOLS = ("floor", "duckdb", "plan", "submit")


def bench_one(path: Path, repeat: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")}
    env.pop("OPENAI_API_KEY", None)  # submit stops at its preflight, before any vendor call
    env["COLUMNS"] = "160"
    batchd = [sys.executable, "-m", "batchd.cli"]
    argvs = {
        "floor": ([sys.executable, "-c", FLOOR, str(path)], 0),
        "duckdb": ([sys.executable, "-c", DUCKDB, str(path)], 0),
        "plan": ([*batchd, "plan", str(path)], 0),
        "submit": ([*batchd, "submit", str(path), "--output", "{tmp}/out"], 1),
    }
    r: dict = {}
    for tool in TOOLS:
        argv, rc = argvs[tool]
        print(f"  {tool} ...", flush=True)
        r[f"{tool}_s"], r[f"{tool}_rss"], text = best(argv, env, repeat, rc)
        r[f"{tool}_out"] = text.decode(errors="replace")
        if tool == "submit" and STOPPED_AT not in text:
            sys.exit(f"submit did not stop at its preflight:\n{r['submit_out']}")
    return r


def check_models() -> None:
    book = tomllib.loads(resources.files("batchd.config").joinpath("data/prices.toml").read_text())
    for m in MODELS:
        vendor = book["models"].get(m, {}).get("vendor")
        if vendor != "openai":
            sys.exit(f"model {m} is not an openai model in batchd/data/prices.toml ({vendor})")


def compile_batchd() -> None:
    """batchd's bytecode written next to its sources, as `pip install` writes it."""
    spec = importlib.util.find_spec("batchd")
    for where in (spec.submodule_search_locations or []) if spec else []:
        if not compileall.compile_dir(where, quiet=1):
            sys.exit(f"compiling batchd's bytecode in {where} failed")


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--lines",
        type=int,
        action="append",
        help="lines per file; repeat for several sizes (default 1M and 10M)",
    )
    ap.add_argument("--dup-fraction", type=float, default=0.3)
    ap.add_argument("--workdir", type=Path, default=Path(__file__).parent / "out")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement; best is kept")
    args = ap.parse_args()
    sizes = sorted(set(args.lines or [1_000_000, 10_000_000]))
    check_models()
    compile_batchd()
    args.workdir.mkdir(parents=True, exist_ok=True)

    rows = []
    for n in sizes:
        path, dups = input_file(args.workdir, n, args.dup_fraction, args.seed)
        print(f"measuring {path.name} ...", flush=True)
        r = bench_one(path, args.repeat)
        r.update(lines=n, dups=dups, mb=path.stat().st_size / 1e6)
        rows.append(r)

    print_table(rows)


def print_table(rows: list[dict]) -> None:
    head = ("lines", "tool", "seconds", "lines/s", "x floor", "x duckdb", "peak RSS MB")
    print()
    print(f"{head[0]:>12}  {head[1]:<8}" + "".join(f"{h:>13}" for h in head[2:]))
    for r in rows:
        for tool in TOOLS:
            t = r[f"{tool}_s"]
            cells = (
                f"{t:.2f}",
                f"{r['lines'] / t:,.0f}",
                f"{t / r['floor_s']:.2f}",
                f"{t / r['duckdb_s']:.2f}",
                f"{r[f'{tool}_rss']:,.0f}",
            )
            print(f"{r['lines']:>12,}  {tool:<8}" + "".join(f"{c:>13}" for c in cells))
    print()
    for r in rows:
        summary = [s.strip() for s in r["plan_out"].splitlines()[:3]]
        print(
            f"{r['lines']:,} lines ({r['mb']:,.0f} MB), {r['dups']:,} generated duplicates; "
            f"{r['duckdb_out'].strip()}; plan says: " + " | ".join(summary)
        )
    first, last = rows[0], rows[-1]
    rate = first["lines"] / first["plan_s"]
    print(
        f"target plan >= {TARGET_RATE:,} lines/s at {first['lines']:,} lines: {rate:,.0f} -> "
        f"{verdict(rate >= TARGET_RATE)}"
    )
    worst = max(r["plan_s"] / r["duckdb_s"] for r in rows)
    print(
        f"target plan <= {TARGET_DUCKDB_RATIO:g}x DuckDB's time: worst {worst:.2f}x -> "
        f"{verdict(worst <= TARGET_DUCKDB_RATIO)}"
    )
    for tool in ("plan", "submit"):
        peak = max(r[f"{tool}_rss"] for r in rows)
        print(
            f"target {tool} peak RSS < 1 GB: worst {peak:,.0f} MB -> "
            f"{verdict(peak < TARGET_RSS_MB)}"
        )
        if len(rows) > 1:
            growth = last[f"{tool}_rss"] / first[f"{tool}_rss"]
            print(
                f"target {tool} peak RSS growth < {TARGET_RSS_GROWTH - 1:.0%} from "
                f"{first['lines']:,} to {last['lines']:,} lines: {growth:.2f}x -> "
                f"{verdict(growth < TARGET_RSS_GROWTH)}"
            )


if __name__ == "__main__":
    main()
