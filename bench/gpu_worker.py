"""GPU worker benchmark (DESIGN §7): batchd's worker against plain vLLM, on the same prompts.

On the tiny random Llama the tests build, with mixed `max_tokens` (8..256, greedy, so
every variant generates the same tokens), four ways to run the same N prompts:

- batchd:   the GpuRunner (continuous feed, ~2 x max_num_seqs in flight) over N/256
            chunk files, all queued at once, checkpoints on;
- generate: one `LLM.generate` call over all prompts;
- chunked:  `LLM.generate` called once per 256 prompts, one after another;
- run-batch: `vllm run-batch` on the same requests as an OpenAI batch file.

Each variant runs in its own process with its own engine and repeats the whole workload
`--repeats` times on it (the median run is shown: on a shared 2-core machine single runs
vary by +-15%). The engine start is not timed; chat templates are (batchd applies them
per chunk, the `LLM` variants before each run). run-batch runs once and its wall time
includes its start (estimated as the `generate` variant's measured engine start and
subtracted for the "gen s" column).

"steps" counts engine steps and "tok/step" is output tokens per step, the mean batch
actually filled. On a GPU a decode step costs about the same at any batch size up to
`max_num_seqs` (it is memory-bound), so fewer steps for the same tokens is what makes a
continuous feed faster there; on a CPU a step's cost grows with the batch ("ms/step"
rises with "tok/step"), so the tokens/s columns come closer together than the step
counts. Nothing is asserted.

    python bench/gpu_worker.py [--prompts 1024] [--max-num-seqs 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 256


def engine_kwargs(model: Path, max_num_seqs: int) -> dict[str, Any]:
    return {
        "model": str(model),
        "dtype": "float32",
        "max_model_len": 512,
        "kv_cache_memory_bytes": 1 << 30,
        "enforce_eager": True,
        "max_num_seqs": max_num_seqs,
        "enable_prefix_caching": True,
        "seed": 0,
    }


def requests(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    topics = ["ticket", "invoice", "review", "log line", "email"]
    out = []
    for i in range(n):
        out.append(
            {
                "messages": [
                    {"role": "system", "content": "you are a helpful model"},
                    {"role": "user", "content": f"summarise {rng.choice(topics)} {i}"},
                ],
                "max_tokens": rng.randint(8, 256),
                "temperature": 0,
            }
        )
    return out


# -- variants (each runs in a child process: `python bench/gpu_worker.py --variant X`) ----


def run_batchd(
    model: Path, reqs: list[dict[str, Any]], max_num_seqs: int, repeats: int
) -> dict[str, Any]:
    from batchd.backends.vllm.runner import GpuRunner, checkpointed
    from batchd.config.settings import VllmSettings
    from batchd.storage.blobs import LocalBlobs

    kw = engine_kwargs(model, max_num_seqs)
    cfg = VllmSettings(
        model=kw["model"],
        dtype="float32",
        max_model_len=kw["max_model_len"],
        kv_cache_memory_bytes=kw["kv_cache_memory_bytes"],
        enforce_eager=True,
        max_num_seqs=max_num_seqs,
        checkpoint_every=256,
    )
    runner = GpuRunner(cfg)
    t0 = time.monotonic()
    runner.feeder.tokenizer()  # engine up
    start_s = time.monotonic() - t0
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        blobs = LocalBlobs(tmp)
        paths = []
        for c in range(0, len(reqs), CHUNK):
            path = f"chunks/c{c // CHUNK:04d}.jsonl"
            with blobs.writer(path) as f:
                for i, body in enumerate(reqs[c : c + CHUNK], start=c):
                    f.write(json.dumps({"custom_id": f"r{i}", "body": body}).encode() + b"\n")
            paths.append(path)
        for rnd in range(repeats):
            ids = [f"r{rnd}c{n:04d}" for n in range(len(paths))]  # fresh checkpoints per run
            steps0 = runner.feeder.steps
            t0 = time.monotonic()
            pairs = zip(ids, paths, strict=True)
            jobs = [runner.start_chunk(cid, "tiny", path, blobs) for cid, path in pairs]
            for job in jobs:
                job.finished.wait()
            gen_s = time.monotonic() - t0
            tokens = sum(o.output_tokens for cid in ids for o in checkpointed(blobs, cid).values())
            runs.append((gen_s, tokens, runner.feeder.steps - steps0))
    runner.close()
    return _summary(start_s, runs)


def _summary(start_s: float, runs: list[tuple[float, int, int]]) -> dict[str, Any]:
    """The median run by time; every run must have produced the same tokens."""
    tokens = {r[1] for r in runs}
    if len(tokens) != 1:
        raise SystemExit(f"runs produced different token counts: {sorted(tokens)}")
    median_s, _, steps = sorted(runs)[len(runs) // 2]
    return {
        "start_s": start_s,
        "gen_s": median_s,
        "gen_s_all": [round(r[0], 2) for r in runs],  # in run order
        "output_tokens": tokens.pop(),
        "steps": steps,
    }


def _llm(model: Path, max_num_seqs: int) -> tuple[Any, float]:
    from vllm import LLM

    t0 = time.monotonic()
    llm = LLM(**engine_kwargs(model, max_num_seqs))
    return llm, time.monotonic() - t0


def _prompts(llm: Any, reqs: list[dict[str, Any]]) -> tuple[list[str], list[Any]]:
    from vllm import SamplingParams

    tok = llm.get_tokenizer()
    prompts = [
        tok.apply_chat_template(r["messages"], tokenize=False, add_generation_prompt=True)
        for r in reqs
    ]
    params = [SamplingParams(max_tokens=r["max_tokens"], temperature=0) for r in reqs]
    return prompts, params


def run_generate(
    model: Path, reqs: list[dict[str, Any]], max_num_seqs: int, chunk: int, repeats: int
) -> dict[str, Any]:
    """`LLM.generate` in calls of `chunk` prompts; chat templates applied inside the timing,
    as batchd's worker does (and as `LLM.chat` would)."""
    llm, start_s = _llm(model, max_num_seqs)
    engine = llm.llm_engine
    steps = [0]
    step = engine.step

    def counted_step() -> Any:
        steps[0] += 1
        return step()

    engine.step = counted_step
    runs = []
    for _ in range(repeats):
        steps[0] = 0
        t0 = time.monotonic()
        prompts, params = _prompts(llm, reqs)
        tokens = 0
        for c in range(0, len(prompts), chunk):
            outs = llm.generate(prompts[c : c + chunk], params[c : c + chunk], use_tqdm=False)
            tokens += sum(len(o.outputs[0].token_ids) for o in outs)
        runs.append((time.monotonic() - t0, tokens, steps[0]))
    return _summary(start_s, runs)


def run_run_batch(model: Path, reqs: list[dict[str, Any]], max_num_seqs: int) -> dict[str, Any]:
    kw = engine_kwargs(model, max_num_seqs)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        with open(src, "w") as f:
            for i, body in enumerate(reqs):
                line = {
                    "custom_id": f"r{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": str(model), **body},
                }
                f.write(json.dumps(line) + "\n")
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.run_batch",
            "-i", str(src), "-o", str(dst), "--model", kw["model"], "--dtype", "float32",
            "--max-model-len", str(kw["max_model_len"]),
            "--kv-cache-memory-bytes", str(kw["kv_cache_memory_bytes"]),
            "--enforce-eager", "--max-num-seqs", str(max_num_seqs), "--seed", "0",
        ]  # fmt: skip
        t0 = time.monotonic()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall_s = time.monotonic() - t0
        tokens = 0
        for line in dst.read_text().splitlines():
            resp = json.loads(line)["response"]["body"]
            tokens += resp["usage"]["completion_tokens"]
    return {"wall_s": wall_s, "output_tokens": tokens}


def child(args: argparse.Namespace) -> None:
    reqs = requests(args.prompts, args.seed)
    model = Path(args.model)
    if args.variant == "batchd":
        res = run_batchd(model, reqs, args.max_num_seqs, args.repeats)
    elif args.variant == "generate":
        res = run_generate(model, reqs, args.max_num_seqs, len(reqs), args.repeats)
    elif args.variant == "chunked":
        res = run_generate(model, reqs, args.max_num_seqs, CHUNK, args.repeats)
    else:
        res = run_run_batch(model, reqs, args.max_num_seqs)
    Path(args.result).write_text(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--prompts", type=int, default=1024)
    ap.add_argument("--max-num-seqs", type=int, default=64)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--repeats", type=int, default=3, help="timed runs per engine; the median is shown"
    )
    ap.add_argument("--workdir", default=str(ROOT / "bench" / "out"))
    ap.add_argument("--variants", default="batchd,generate,chunked,run-batch")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        child(args)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    from tests.support.tiny_model import build_tiny_llama

    work = Path(args.workdir)
    model = work / "tiny-llama"
    if not (model / "config.json").exists():
        build_tiny_llama(model)
    results: dict[str, dict[str, Any]] = {}
    for variant in args.variants.split(","):
        out = work / f"gpu-{variant}.json"
        cmd = [
            sys.executable, __file__, "--variant", variant, "--model", str(model),
            "--result", str(out), "--prompts", str(args.prompts),
            "--max-num-seqs", str(args.max_num_seqs), "--seed", str(args.seed),
            "--repeats", str(args.repeats),
        ]  # fmt: skip
        print(f"running {variant} ...", file=sys.stderr, flush=True)
        subprocess.run(
            cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        results[variant] = json.loads(out.read_text())
    start_est = results.get("generate", {}).get("start_s", 0.0)
    if "run-batch" in results:
        rb = results["run-batch"]
        rb["gen_s"] = max(rb["wall_s"] - start_est, 1e-9)
    base = results.get("batchd")
    print(
        f"\n{args.prompts} prompts, max_tokens 8..256, max_num_seqs {args.max_num_seqs}, "
        f"median of {args.repeats} runs (run-batch: one run)"
    )
    head = f"{'variant':<10} {'out tokens':>10} {'gen s':>8} {'tokens/s':>9} {'batchd x':>9}"
    print(f"{head} {'steps':>6} {'tok/step':>8} {'ms/step':>7}  runs in order (s)")
    for name, r in results.items():
        tps = r["output_tokens"] / r["gen_s"]
        ratio = (base["output_tokens"] / base["gen_s"]) / tps if base else float("nan")
        cols = f"{r['output_tokens']:>10} {r['gen_s']:>8.2f} {tps:>9.0f} {ratio:>9.2f}"
        if "steps" in r:
            tok_step, ms_step = r["output_tokens"] / r["steps"], 1e3 * r["gen_s"] / r["steps"]
            cols += f" {r['steps']:>6} {tok_step:>8.1f} {ms_step:>7.2f}  {r['gen_s_all']}"
        else:
            cols += f" {'-':>6} {'-':>8} {'-':>7}  wall incl. start, minus est. start"
        print(f"{name:<10} {cols}")


if __name__ == "__main__":
    main()
