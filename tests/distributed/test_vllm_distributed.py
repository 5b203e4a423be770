"""Distributed mode with vLLM: coordinators enqueue GPU chunks, a `gpu` worker runs them.

Real redis-server, a real coordinator and a real gpu worker process (its own engine on
the tiny model), the OpenAI emulator for the vendor lines.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import VLLM_TOML
from tests.support.stack import Stack

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def stack(tmp_path: Path, emulator: OpenAIBatchEmulator, tiny_model: Path) -> Iterator[Stack]:
    config = tmp_path / "batchd.toml"
    config.write_text(VLLM_TOML.format(model=tiny_model, checkpoint_every=2, max_num_seqs=8))
    s = Stack(tmp_path, emulator)
    s.env["BATCHD_CONFIG"] = str(config)
    yield s
    s.stop()


def test_gpu_worker_runs_vllm_chunks_for_the_coordinators(stack: Stack) -> None:
    lines = [
        {"id": f"g{i}", "model": "tiny", "prompt": f"ticket {i}", "max_tokens": 6} for i in range(6)
    ]
    lines.append({"id": "v", "model": "gpt-5.4-mini", "prompt": "hello"})
    src = stack.tmp / "in.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    run_id = stack.submit_no_wait(src)
    stack.start_coordinator()
    log = open(stack.tmp / "gpu.log", "wb")  # noqa: SIM115
    gpu = subprocess.Popen(
        [sys.executable, "-m", "arq", "workers.gpu.WorkerSettings"],
        env=stack.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=stack.tmp,
    )
    try:
        stack.wait_done(run_id, timeout_s=240)
    finally:
        gpu.send_signal(signal.SIGTERM)
        try:
            gpu.wait(timeout=60)
        except subprocess.TimeoutExpired:
            gpu.kill()
            gpu.wait()
    rows = stack.rows(run_id)
    assert [r["custom_id"] for r in rows] == [x["id"] for x in lines]
    assert Counter((r["backend"], r["status"]) for r in rows) == {
        ("vllm", "succeeded"): 6,
        ("openai", "succeeded"): 1,
    }
    assert all(r["gpu_seconds"] > 0 for r in rows if r["backend"] == "vllm")
    assert "gpu_chunk" in (stack.tmp / "gpu.log").read_text()
