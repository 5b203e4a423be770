"""A small distributed deployment for tests: Redis, coordinators and the CLI, one workdir."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from batchd.state.redis_store import RedisStore
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import ANTHROPIC_KEY, API_KEY
from tests.support.redis_server import RedisServer


class Stack:
    """Redis + coordinators + the CLI, all sharing one workdir (one 'cluster')."""

    def __init__(self, tmp: Path, emu: OpenAIBatchEmulator) -> None:
        self.tmp = tmp
        self.redis = RedisServer(tmp / "redis").start()
        self.out = tmp / "out"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHD_", "OPENAI_"))}
        self.env.update(
            OPENAI_API_KEY=API_KEY,
            OPENAI_BASE_URL=emu.base_url,
            ANTHROPIC_API_KEY=ANTHROPIC_KEY,
            BATCHD_REDIS_URL=self.redis.url,
            BATCHD_WORKDIR=str(tmp / "work"),
            BATCHD_HOME=str(tmp / "home"),
            BATCHD_POLL_INTERVAL_S="0.05",
            BATCHD_LEASE_TTL_S="2",
            HF_HUB_OFFLINE="1",
            PYTHONUNBUFFERED="1",  # a killed coordinator's log keeps what it printed
        )
        self.coordinators: list[subprocess.Popen[bytes]] = []

    def start_coordinator(self, **env: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"coordinator-{len(self.coordinators)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "arq", "workers.coordinator.WorkerSettings"],
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.tmp,
        )
        self.coordinators.append(proc)
        return proc

    def cli(
        self, *args: str, home: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        e = {**self.env, **env}
        if home:
            e["BATCHD_HOME"] = home  # another machine: its own home, the same Redis
        return subprocess.run(
            [sys.executable, "-m", "batchd.cli", *args],
            env=e,
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def submit_no_wait(self, path: Path, **env: str) -> str:
        proc = self.cli("submit", str(path), "--output", str(self.out), "--no-wait", **env)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip().splitlines()[-1]

    def store(self) -> RedisStore:
        return RedisStore(self.redis.url)

    def lease_holder_pid(self, name: str) -> int | None:
        """The pid of the coordinator holding lease `name` now (its value: host:pid:id#token)."""
        import redis

        value = redis.Redis.from_url(self.redis.url).get(f"batchd:lease:{name}")
        if value is None:
            return None
        return int(value.decode().rsplit("#", 1)[0].split(":")[-2])

    def wait_done(self, run_id: str, timeout_s: float = 90, supervise: bool = False) -> Any:
        """Wait for the run to be done; `supervise`: restart a coordinator whenever none is
        alive, as a process supervisor (honcho, systemd) would."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if supervise and all(p.poll() is not None for p in self.coordinators):
                self.start_coordinator()
            try:
                run = self.store().get_run(run_id)
            except Exception:  # Redis restarting
                run = None
            if run is not None and run.state == "done":
                return run
            time.sleep(0.2)
        raise AssertionError(f"run {run_id} not done in {timeout_s}s\n{self.describe(run_id)}")

    def describe(self, run_id: str) -> str:
        """The run's and its chunks' states, and the last coordinator's log tail (for failures)."""
        try:
            store = self.store()
            run = store.get_run(run_id)
            lines = [f"run: {run}"]
            lines += [
                f"chunk {c.chunk_id}: {c.state} failures={c.failures} "
                f"retry_at={c.retry_at} error={c.error!r}"
                for c in store.chunks(run_id)
            ]
        except Exception as exc:  # Redis gone: say so, keep the log tail
            lines = [f"store unreadable: {exc!r}"]
        logs = sorted(self.tmp.glob("coordinator-*.log"), key=lambda p: p.stat().st_mtime)
        for log in logs[-2:]:
            lines.append(f"--- {log.name} (last 40 lines)")
            lines += log.read_text(errors="replace").splitlines()[-40:]
        return "\n".join(lines)

    def rows(self, run_id: str) -> list[dict[str, Any]]:
        return pq.read_table(self.out / run_id / "results.parquet").to_pylist()  # type: ignore[no-any-return]

    def stop(self) -> None:
        for p in self.coordinators:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.redis.stop()
