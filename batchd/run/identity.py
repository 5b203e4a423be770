"""Run identity, creation/resume, and the one-driver-per-run lock (embedded mode).

The run id is derived from the input's content and the options that change the
work, so submitting the same file again while its run is unfinished resumes it;
once that run is done, a new generation (`<id>-2`, ...) starts and is answered
from the cache. An id whose output folder already holds outputs unknown to this state is
never reused: the next generation is taken instead, with a warning.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
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
from batchd.intake.ingest import EMPTY_HINT
from batchd.run.destination import output_taken
from batchd.run.services import Services
from batchd.state.base import RUN_DONE, Run
from batchd.storage.private import make_dirs
from batchd.storage.s3 import is_s3, join

log = logging.getLogger("batchd.identity")

_HASH_BLOCK = 1 << 20


def content_id(
    path: str | Path, options: dict[str, Any], s3_head: dict[str, Any] | None = None
) -> str:
    """Hash of the input's bytes and the options; an S3 input is known by key, ETag and size
    (`s3_head`), so it is not read twice."""
    return _digests(path, options, s3_head)[0]


def _digests(
    path: str | Path, options: dict[str, Any], s3_head: dict[str, Any] | None = None
) -> tuple[str, str]:
    """(run base id, input digest) in one pass over the input."""
    h = hashlib.blake2b(digest_size=8)
    if s3_head is not None:
        known = f"{path}\0{s3_head['ETag']}\0{s3_head['ContentLength']}"
        h.update(known.encode())
        h.update(msgspec.json.encode(options, order="sorted"))
        etag = str(s3_head["ETag"]).strip('"')
        return "run-" + h.hexdigest(), f"s3-etag:{etag}:{s3_head['ContentLength']}"
    whole = hashlib.blake2b(digest_size=16)
    n_bytes = 0
    try:
        with open(path, "rb") as f:
            while block := f.read(_HASH_BLOCK):
                h.update(block)
                whole.update(block)
                n_bytes += len(block)
    except FileNotFoundError as exc:
        raise BatchdError(f"Input file {path} does not exist.", "Check the path.") from exc
    except IsADirectoryError as exc:
        raise BatchdError(f"{path} is a directory.", "Give a .jsonl or .jsonl.gz file.") from exc
    if n_bytes == 0:
        raise BatchdError(f"Input file {path} is empty.", EMPTY_HINT)
    h.update(msgspec.json.encode(options, order="sorted"))
    return "run-" + h.hexdigest(), "blake2b-128:" + whole.hexdigest()


def start_run(
    svc: Services,
    source: str,
    output: str,
    options: dict[str, Any],
    deadline_at: float | None,
    stage: Callable[[str, str], str] | None = None,
    *,
    refuse_other_options: bool = False,
) -> tuple[Run, bool]:
    """Return (run, resumed): the unfinished run for this input and options, or a new one.

    `stage(run_id, source)` (distributed mode) copies the input where every worker can read
    it and returns that path, before the run becomes visible to coordinators.
    `refuse_other_options`: an unfinished run of the same input with other options is a
    BatchdError naming it (how to resume or cancel it), not a second run beside it.
    """
    s3_head = None
    if is_s3(source):
        s3_head = svc.s3.head(source)
        if s3_head is None:
            raise BatchdError(
                f"No S3 object {source}.", "Check the key (`aws s3 ls` the prefix) and bucket."
            )
        if int(s3_head.get("ContentLength", 1)) == 0:
            raise BatchdError(f"Input {source} is empty.", EMPTY_HINT)
    base, digest = _digests(source, options, s3_head)
    previous = svc.store.runs_with_base(base)
    if previous and previous[-1].state != RUN_DONE:
        return previous[-1], True
    if refuse_other_options:
        _refuse_twin(svc, source, digest, options)
    run_id = _free_run_id(svc, base, len(previous) + 1, output)
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
        input_digest=digest,
    )
    if not svc.store.create_run(run):
        got = svc.store.get_run(run_id)
        assert got is not None
        return got, True
    return run, False


UNFINISHED_RUNS_SCANNED = 200
# How each run option is given on the command line (the rest come from settings).
_OPTION_FLAGS = {
    "no_cache": "--no-cache",
    "tenant": "--tenant",
    "deadline": "--deadline",
    "export": "--export",
    "no_prompt_cache": "--no-prompt-cache",
    "semantic_cache": "--semantic-cache / --no-semantic-cache",
    "chunk_lines": "BATCHD_OPENAI_MAX_LINES_PER_CHUNK",
    "chunk_bytes": "BATCHD_OPENAI_MAX_BYTES_PER_CHUNK",
    "anthropic_chunk_lines": "BATCHD_ANTHROPIC_MAX_LINES_PER_CHUNK",
    "anthropic_chunk_bytes": "BATCHD_ANTHROPIC_MAX_BYTES_PER_CHUNK",
}


def _refuse_twin(svc: Services, source: str, digest: str, options: dict[str, Any]) -> None:
    """An unfinished run of the same input under other options: name it and the way out."""
    for run in svc.store.list_runs(UNFINISHED_RUNS_SCANNED):
        if run.state == RUN_DONE or run.input_digest != digest:
            continue
        changed = [
            f"{_OPTION_FLAGS.get(k, k)} {run.options.get(k)!r} (now {options.get(k)!r})"
            for k in sorted(set(run.options) | set(options))
            if run.options.get(k) != options.get(k)
        ]
        raise BatchdError(
            f"Run {run.run_id} of {source} is unfinished ({run.state}) and was started with "
            f"other options: {'; '.join(changed)}.",
            "Resume it by submitting with its options, or stop it with "
            f"`batchd cancel {run.run_id}` and submit again (nothing was started).",
        )


def redirect_output(svc: Services, run: Run, output: str) -> tuple[Run, str]:
    """A resumed run told to write elsewhere: (the run, its previous output; "" if unchanged).

    A finalize waiting to retry is tried again at once.
    """
    if output == run.output:
        return run, ""
    moved = svc.store.update_run(run.run_id, output=output, retry_at=0.0)
    return moved, run.output


def _free_run_id(svc: Services, base: str, generation: int, output: str) -> str:
    """The run's id: `base`, or `base-<n>` after finished runs, skipping any id whose output
    folder already holds outputs this store does not know (never silently reused)."""
    while True:
        run_id = base if generation == 1 else f"{base}-{generation}"
        if svc.store.get_run(run_id) is None and not output_taken(svc, output, run_id):
            return run_id
        if svc.store.get_run(run_id) is None:
            log.warning(
                "%s already holds the outputs of a run %s that this state does not know "
                "(state lost or moved?); they are kept, and this run gets a new id",
                join(output, run_id),
                run_id,
            )
        generation += 1


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
    semantic_cache: bool | None = None,
) -> dict[str, Any]:
    """The options fixed at submit that change a run's work (and so its id)."""
    semantic = {} if semantic_cache is None else {"semantic_cache": semantic_cache}
    return {
        **semantic,
        "fallback": fallback or settings.fallback,
        "guard_margin_s": settings.guard_margin_s if guard_margin_s is None else guard_margin_s,
        "no_cache": no_cache or not settings.cache.enabled,
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
    make_dirs(lock_dir)
    fd = os.open(lock_dir / f"{run_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
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
