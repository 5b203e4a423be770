"""Many small runs through batchd: embedded mode vs distributed mode (Redis + coordinators).

    python bench/distributed.py [--runs 30] [--requests 50]

Every run is a separate file of distinct requests (no cache hits), sent to the OpenAI
Batch emulator from tests/emulators (no network). Embedded: one `batchd submit` after
another. Distributed: every file submitted with --no-wait, then waiting until all runs are
done, with 1 and then 2 coordinator processes. Prints runs/s, requests/s and the time per
request against the embedded mode. A benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batchd.state.redis_store import RedisStore  # noqa: E402
from tests.emulators.openai_batch import OpenAIBatchEmulator  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402


def make_runs(folder: Path, tag: str, runs: int, requests: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in range(runs):
        path = folder / f"{tag}-{r:03d}.jsonl"
        with open(path, "w") as f:
            for i in range(requests):
                f.write(
                    json.dumps(
                        {
                            "custom_id": f"{r}-{i}",
                            "method": "POST",
                            "url": "/v1/chat/completions",
                            "body": {
                                "model": "gpt-5.4-nano",
                                "max_tokens": 16,
                                "messages": [
                                    {"role": "user", "content": f"{tag} run {r} request {i}"}
                                ],
                            },
                        }
                    )
                    + "\n"
                )
        paths.append(path)
    return paths


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchd.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def embedded(base_env: dict[str, str], tmp: Path, files: list[Path]) -> float:
    env = {**base_env, "BATCHD_HOME": str(tmp / "emb-home")}
    t0 = time.perf_counter()
    for f in files:
        proc = cli(env, "submit", str(f), "--output", str(tmp / "emb-out"), "--quiet")
        if proc.returncode != 0:
            raise SystemExit(f"embedded submit failed: {proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def distributed(
    base_env: dict[str, str], tmp: Path, files: list[Path], coordinators: int, label: str
) -> tuple[float, float]:
    """(seconds to submit every run, seconds for the coordinators to finish them all)."""
    server = RedisServer(tmp / f"redis-{label}").start()
    env = {
        **base_env,
        "BATCHD_HOME": str(tmp / f"home-{label}"),
        "BATCHD_REDIS_URL": server.url,
        "BATCHD_WORKDIR": str(tmp / f"work-{label}"),
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        t0 = time.perf_counter()
        run_ids = []
        for f in files:  # queued in Redis: no coordinator is running yet
            proc = cli(env, "submit", str(f), "--output", str(tmp / f"out-{label}"), "--no-wait")
            if proc.returncode != 0:
                raise SystemExit(f"distributed submit failed: {proc.stderr[-2000:]}")
            run_ids.append(proc.stdout.strip().splitlines()[-1])
        submit_s = time.perf_counter() - t0
        t1 = time.perf_counter()  # includes the coordinators' own start (~1 s)
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "arq", "workers.coordinator.WorkerSettings"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(coordinators)
        ]
        store = RedisStore(server.url)
        while any(store.get_run(r).state != "done" for r in run_ids):  # type: ignore[union-attr]
            time.sleep(0.1)
        return submit_s, time.perf_counter() - t1
    finally:
        for p in procs:
            p.kill()
            p.wait()
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--requests", type=int, default=50)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="batchd-bench-"))
    with OpenAIBatchEmulator(api_key="sk-bench") as emu:
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")}
        base_env.update(
            OPENAI_API_KEY="sk-bench",
            OPENAI_BASE_URL=emu.base_url,
            BATCHD_POLL_INTERVAL_S="0.05",
            HF_HUB_OFFLINE="1",
        )
        n_req = args.runs * args.requests
        emb = embedded(base_env, tmp, make_runs(tmp / "in", "emb", args.runs, args.requests))
        dist = {
            k: distributed(
                base_env, tmp, make_runs(tmp / "in", f"d{k}", args.runs, args.requests), k, f"d{k}"
            )
            for k in (1, 2)
        }
    print(
        f"\n{args.runs} runs x {args.requests} requests = {n_req} requests "
        "(OpenAI emulator, poll interval 0.05 s; every run a separate CLI submit)\n"
    )
    print(
        f"{'mode':34} {'submit s':>9} {'process s':>10} {'total s':>8} {'runs/s':>7} "
        f"{'req/s':>7} {'ms/req':>7} {'vs emb.':>8}"
    )
    rows = [("embedded (submits in sequence)", 0.0, emb)]
    rows += [(f"distributed, {k} coordinator{'s' if k > 1 else ''}", *dist[k]) for k in (1, 2)]
    for name, sub, proc in rows:
        total = sub + proc
        print(
            f"{name:34} {sub:9.1f} {proc:10.1f} {total:8.1f} {args.runs / total:7.2f} "
            f"{n_req / total:7.1f} {1000 * total / n_req:7.2f} {total / emb:7.2f}x"
        )
    one = sum(dist[1])
    print(
        f"\ntarget: distributed <= 2x embedded time per request: "
        f"{'met' if one / emb <= 2 else 'NOT met'} ({one / emb:.2f}x)"
    )
    print(
        f"target: a second coordinator raises throughput (processing only): "
        f"{'met' if dist[2][1] < dist[1][1] else 'NOT met'} "
        f"({dist[1][1] / dist[2][1]:.2f}x the throughput of one)"
    )


if __name__ == "__main__":
    main()
