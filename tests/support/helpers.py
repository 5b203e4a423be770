"""Helpers the tests share (fixtures are in conftest.py): test keys, the CLI runner, input
writers and the vLLM test settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.gemini_batch import GeminiBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator

API_KEY = "sk-test-SECRET-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-test-SECRET-fedcba9876543210"
GEMINI_KEY = "AIza-test-SECRET-0a1b2c3d4e5f6789"


class Batchd:
    """Runs the real `batchd` CLI in a subprocess against one isolated home and output."""

    def __init__(
        self,
        tmp: Path,
        emu: OpenAIBatchEmulator,
        claude: AnthropicBatchEmulator,
        gemini: GeminiBatchEmulator | None = None,
    ) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        self.out = tmp / "out"
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("BATCHD_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_"))
        }
        self.env.update(
            OPENAI_API_KEY=API_KEY,
            OPENAI_BASE_URL=emu.base_url,
            ANTHROPIC_API_KEY=ANTHROPIC_KEY,
            ANTHROPIC_BASE_URL=claude.base_url,
            BATCHD_HOME=str(self.home),
            BATCHD_POLL_INTERVAL_S="0.02",
            HF_HUB_OFFLINE="1",
            # wide: a path in the output is never wrapped, however long the test's tmp path
            # (xdist adds a folder per worker); a test of the 80-column layout says COLUMNS=80
            COLUMNS="200",
        )
        if gemini is not None:
            self.env.update(GEMINI_API_KEY=GEMINI_KEY, GOOGLE_GEMINI_BASE_URL=gemini.base_url)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "batchd.cli", *args]

    def run(self, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            env={**self.env, **env},
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            env={**self.env, **env},
            cwd=self.tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def submit(self, path: Path, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.run("submit", str(path), "--output", str(self.out), *extra, **env)

    def run_dirs(self) -> list[Path]:
        return sorted(p for p in self.out.iterdir() if p.is_dir()) if self.out.exists() else []

    def results(self, run_dir: Path | None = None) -> list[dict[str, Any]]:
        run_dir = run_dir or self.only_run_dir()
        return pq.read_table(run_dir / "results.parquet").to_pylist()  # type: ignore[no-any-return]

    def costs(self, run_dir: Path | None = None) -> list[dict[str, Any]]:
        run_dir = run_dir or self.only_run_dir()
        return pq.read_table(run_dir / "costs.parquet").to_pylist()  # type: ignore[no-any-return]

    def only_run_dir(self) -> Path:
        dirs = self.run_dirs()
        assert len(dirs) == 1, dirs
        return dirs[0]


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    """Objects become JSON lines; str and bytes are written as they are (for bad lines)."""
    with open(path, "wb") as f:
        for line in lines:
            if isinstance(line, bytes):
                f.write(line + b"\n")
            elif isinstance(line, str):
                f.write(line.encode() + b"\n")
            else:
                f.write(json.dumps(line).encode() + b"\n")
    return path


def chat(custom_id: str, text: str, model: str = "gpt-5.4-nano", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": text}], **body},
    }


VLLM_TOML = """
[backends.vllm]
model = "{model}"
served_model_name = "tiny"
reference_model = "gpt-5.4-mini"
dtype = "float32"
max_model_len = 256
kv_cache_memory_bytes = 268435456
enforce_eager = true
max_num_seqs = {max_num_seqs}
gpu_hourly_usd = 3.6
checkpoint_every = {checkpoint_every}
"""


def vllm_settings(model: Path, checkpoint_every: int = 4, **fields: Any) -> Any:
    from batchd.config.settings import VllmSettings

    base = {
        "model": str(model),
        "served_model_name": "tiny",
        "reference_model": "gpt-5.4-mini",
        "dtype": "float32",
        "max_model_len": 256,
        "kv_cache_memory_bytes": 256 << 20,
        "enforce_eager": True,
        "max_num_seqs": 8,
        "gpu_hourly_usd": 3.6,
        "checkpoint_every": checkpoint_every,
    }
    base.update(fields)
    return VllmSettings(**base)
