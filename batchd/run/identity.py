"""Run identity, creation/resume, and the one-driver-per-run lock (embedded mode).

The run id is derived from the input's content and the options that change the
work, so submitting the same file again while its run is unfinished resumes it;
once that run is done, a new generation (`<id>-2`, ...) starts and is answered
from the cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from batchd.config.settings import Settings
from batchd.errors import BatchdError
from batchd.run.services import Services
from batchd.state.base import RUN_DONE, Run
from batchd.storage.s3 import is_s3

_HASH_BLOCK = 1 << 20


def content_id(
    path: str | Path, options: dict[str, Any], s3_head: dict[str, Any] | None = None
) -> str:
    """Hash of the input's bytes and the options; an S3 input is known by key, ETag and size
    (`s3_head`), so it is not read twice."""
    h = hashlib.blake2b(digest_size=8)
    if s3_head is not None:
        h.update(f"{path}\0{s3_head['ETag']}\0{s3_head['ContentLength']}".encode())
        h.update(msgspec.json.encode(options, order="sorted"))
        return "run-" + h.hexdigest()
    try:
        with open(path, "rb") as f:
            while block := f.read(_HASH_BLOCK):
                h.update(block)
    except FileNotFoundError as exc:
        raise BatchdError(f"Input file {path} does not exist.", "Check the path.") from exc
    except IsADirectoryError as exc:
        raise BatchdError(f"{path} is a directory.", "Give a .jsonl or .jsonl.gz file.") from exc
    h.update(msgspec.json.encode(options, order="sorted"))
    return "run-" + h.hexdigest()


def start_run(
    svc: Services,
    source: str,
    output: str,
    options: dict[str, Any],
    deadline_at: float | None,
    stage: Callable[[str, str], str] | None = None,
) -> tuple[Run, bool]:
    """Return (run, resumed): the unfinished run for this input and options, or a new one.

    `stage(run_id, source)` (distributed mode) copies the input where every worker can read
    it and returns that path, before the run becomes visible to coordinators.
    """
    s3_head = None
    if is_s3(source):
        s3_head = svc.s3.head(source)
        if s3_head is None:
            raise BatchdError(
                f"No S3 object {source}.", "Check the key (`aws s3 ls` the prefix) and bucket."
            )
    base = content_id(source, options, s3_head)
    previous = svc.store.runs_with_base(base)
    if previous and previous[-1].state != RUN_DONE:
        return previous[-1], True
    run_id = base if not previous else f"{base}-{len(previous) + 1}"
    now = time.time()
    if is_s3(source):
        staged = source  # every worker reads it from S3 as it is
    else:
        staged = stage(run_id, source) if stage else str(Path(source).resolve())
    run = Run(
        run_id=run_id,
        base_id=base,
        source=staged,
        output=output,
        options=options,
        deadline_at=deadline_at or now + svc.settings.default_deadline_h * 3600,
    )
    if not svc.store.create_run(run):
        got = svc.store.get_run(run_id)
        assert got is not None
        return got, True
    return run, False


def parse_deadline(value: str | None, now: float) -> float | None:
    """'36h', '90m', '2d' from now, or an ISO 8601 time with a zone."""
    if not value:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", value)
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return now + float(m.group(1)) * unit
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        dt = None
    if dt is None or dt.tzinfo is None:
        raise BatchdError(
            f"Cannot read deadline {value!r}.",
            "Use a duration like 36h / 90m / 2d, or a time like 2026-11-25T06:00Z.",
        )
    return dt.timestamp()


def run_options(
    settings: Settings,
    *,
    no_cache: bool = False,
    tenant: str | None = None,
    deadline: str | None = None,
    export: str = "",
    no_prompt_cache: bool = False,
    fallback: str | None = None,
    guard_margin_s: float | None = None,
) -> dict[str, Any]:
    """The options fixed at submit that change a run's work (and so its id)."""
    return {
        "fallback": fallback or settings.fallback,
        "guard_margin_s": settings.guard_margin_s if guard_margin_s is None else guard_margin_s,
        "no_cache": no_cache or not settings.cache,
        "tenant": tenant or settings.default_tenant,
        "deadline": deadline or "",
        "export": export,
        "chunk_lines": settings.openai.max_lines_per_chunk,
        "chunk_bytes": settings.openai.max_bytes_per_chunk,
        "no_prompt_cache": no_prompt_cache or not settings.anthropic.prompt_cache,
        "anthropic_chunk_lines": settings.anthropic.max_lines_per_chunk,
        "anthropic_chunk_bytes": settings.anthropic.max_bytes_per_chunk,
    }


def stage_input(svc: Services) -> Callable[[str, str], str]:
    """Distributed mode: copy the input onto the shared workdir, where every worker reads it."""

    def stage(run_id: str, source: str) -> str:
        name = Path(source).name
        blobs = svc.blobs(run_id)
        with open(source, "rb") as src, blobs.writer(f"input/{name}") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        return blobs.uri(f"input/{name}")

    return stage


@contextmanager
def driver_lock(home: Path, run_id: str, wait: bool = False) -> Iterator[bool]:
    """Hold the run's lock while driving it; yields False when another process holds it."""
    lock_dir = home / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"{run_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield True
    finally:
        os.close(fd)
