"""The S3 drop folder: files dropped under s3://bucket/inbox/ are claimed exactly once, run,
and moved to done/ or failed/ with a small JSON report beside them.

Everything stays under the watched prefix, so no key, however odd, leads anywhere else:

    inbox/<name>                    dropped by a user (only direct children are taken)
    inbox/processing/<name>         claimed and running
    inbox/done/<name>               its run finished   (+ <name>.report.json)
    inbox/failed/<name>             not run: not JSONL, too big, odd name, error (+ report)

A file is claimed through the store (SQLite or Redis) under bucket, key and ETag, so
however many watchers or coordinators scan the inbox, one runs a given upload; a
replaced file (new ETag) is a new drop. An object whose multipart upload is still in
progress is not listed by S3 yet, and a key with an upload in progress is skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from batchd.errors import BatchdError
from batchd.run import follow_ups
from batchd.run.endings import RUN_FAILED
from batchd.run.identity import parse_deadline, start_run
from batchd.run.pipeline import RUN_CANCELED
from batchd.run.services import Services
from batchd.state.base import Run
from batchd.storage.s3 import join, split

log = logging.getLogger("batchd.triggers")

CLAIMS = "drop"
RUNS = "drop-runs"  # processing/ URI -> the run of that file (to resume after a crash)
PROCESSING, DONE, FAILED = "processing", "done", "failed"
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@-]{0,199}")
SNIFF_BYTES = 64 * 1024


class Dropped(msgspec.Struct, frozen=True):
    inbox: str  # s3://bucket/inbox/
    name: str  # the key below the inbox
    etag: str
    size_bytes: int

    @property
    def uri(self) -> str:
        return self.inbox + self.name

    @property
    def claim_key(self) -> str:
        bucket, key = split(self.uri)
        return f"{bucket}/{key}#{self.etag}"


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _inbox(uri: str) -> str:
    split(uri)  # names a bucket
    return uri.rstrip("/") + "/"


def scan(svc: Services, inbox: str) -> Iterator[Dropped]:
    """Files directly under the inbox that are complete (no upload in progress)."""
    inbox = _inbox(inbox)
    writing = svc.s3.uploads_in_progress(inbox)
    prefix_len = len(split(inbox)[1])
    for obj in svc.s3.list(inbox, delimiter="/"):
        name = obj["Key"][prefix_len:]
        if not name or obj["Key"] in writing:
            continue
        yield Dropped(inbox, name, str(obj["ETag"]).strip('"'), int(obj["Size"]))


def safe_name(name: str) -> str:
    """A name that stays one path segment under the inbox, whatever the key held."""
    if SAFE_NAME.fullmatch(name) and ".." not in name:
        return name
    digest = hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=4).hexdigest()
    cleaned = re.sub(r"[^A-Za-z0-9._+=@-]", "_", name).replace("..", "_").lstrip("._-")
    return f"{cleaned[:150] or 'file'}-{digest}"


def refusal(svc: Services, d: Dropped) -> str | None:
    """Why the file cannot be run (it goes to failed/), or None."""
    if d.name != safe_name(d.name):
        return f"odd file name {d.name!r}: use letters, digits and ._+=@- only (no '..', no '/')"
    limit = svc.settings.s3.max_drop_bytes
    if d.size_bytes > limit:
        return f"file is {d.size_bytes:,} bytes, over the limit s3.max_drop_bytes={limit:,}"
    if d.size_bytes == 0:
        return "empty file"
    head = svc.s3.read_range(d.uri, SNIFF_BYTES)
    if head[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(wbits=31).decompress(head, SNIFF_BYTES)
        except zlib.error:
            return "not JSONL: a .gz file that does not decompress"
    first = next((ln for ln in head.split(b"\n") if ln.strip()), b"")
    complete = b"\n" in head or len(head) < SNIFF_BYTES
    try:
        ok = isinstance(json.loads(first), dict) if complete else first.lstrip()[:1] == b"{"
    except ValueError:
        ok = False
    if not ok:
        return "not JSONL: the first line is not a JSON object (one request per line)"
    return None


def take(svc: Services, d: Dropped, output: str, options: dict[str, Any], owner: str) -> Run | None:
    """Claim the file, refuse it or move it to processing/ and start its run.

    None when another watcher has it, or when it went to failed/.
    """
    value = json.dumps({"owner": owner, "claimed_at": time.time()})
    if not svc.store.claim(CLAIMS, d.claim_key, value):
        return None
    try:
        reason = refusal(svc, d)
        if reason:
            log.warning("drop %s refused: %s", d.uri, reason)
            _report(svc, d.inbox, FAILED, safe_name(d.name), {"source": d.uri, "error": reason})
            svc.s3.move(d.uri, join(d.inbox, FAILED, safe_name(d.name)))
            return None
        processing = join(d.inbox, PROCESSING, d.name)
        svc.s3.move(d.uri, processing, if_match=f'"{d.etag}"')
    except BatchdError as exc:  # S3 trouble: let the next scan try again
        log.warning("drop %s not taken: %s", d.uri, exc)
        svc.store.unclaim(CLAIMS, d.claim_key)
        return None
    drop = {"inbox": d.inbox, "name": d.name, "etag": d.etag, "source": d.uri}
    opts = {**options, "drop": drop}
    try:
        run, _ = start_run(
            svc, processing, output, opts, parse_deadline(opts.get("deadline"), time.time())
        )
    except BatchdError as exc:
        fail_drop(svc, drop, processing, str(exc))
        return None
    svc.store.claim(RUNS, processing, run.run_id)
    log.info("drop %s: run %s", d.uri, run.run_id)
    return run


def unfinished(svc: Services, inbox: str) -> list[Run]:
    """Runs of files left in processing/ (their watcher died): resume or finish them."""
    processing = join(_inbox(inbox), PROCESSING) + "/"
    known = svc.store.claims(RUNS)
    runs = []
    for obj in svc.s3.list(processing, delimiter="/"):
        uri = f"s3://{split(processing)[0]}/{obj['Key']}"
        run = svc.store.get_run(known[uri]) if uri in known else None
        if run is not None:
            runs.append(run)
    return runs


def watch_once(
    svc: Services,
    inbox: str,
    output: str,
    options: dict[str, Any],
    on_run: Callable[[Run], None] | None = None,
    owner: str | None = None,
) -> list[Run]:
    """One scan: take every file this watcher can claim; `on_run` drives each (embedded)."""
    runs = []
    for d in scan(svc, inbox):
        run = take(svc, d, output, options, owner or owner_id())
        if run is None:
            continue
        runs.append(run)
        if on_run is not None:
            on_run(run)
    return runs


def finish_drop(svc: Services, run: Run) -> None:
    """After the run is done: report beside the file, then the file to done/ (idempotent)."""
    drop = run.options["drop"]
    processing = run.source
    try:
        if svc.s3.head(processing) is None:
            return  # moved already (finalize and the watcher may both call this)
        st = run.stats or {}
        ingest = st.get("ingest") or {}
        report = {
            "run_id": run.run_id,
            "source": drop["source"],
            "etag": drop["etag"],
            "outcome": run.outcome,
            "counts": st.get("status_counts", {}),
            "cost_usd": st.get("cost_usd", 0.0),
            "baseline_cost_usd": st.get("baseline_cost_usd", 0.0),
            "errors": ingest.get("invalid_by_type") or {},
            "results": join(run.output, run.output_name(), "results.parquet"),
            "finished_at": time.time(),
        }
        if run.error:
            report["error"] = run.error
        folder = FAILED if run.outcome in (RUN_CANCELED, RUN_FAILED) else DONE
        _report(svc, drop["inbox"], folder, drop["name"], report)
        svc.s3.move(processing, join(drop["inbox"], folder, drop["name"]))
    except BatchdError as exc:
        log.error("run %s: could not move %s: %s", run.run_id, processing, exc)


def fail_drop(svc: Services, drop: dict[str, Any], processing: str, error: str) -> None:
    """The run could not go on (e.g. a refused API key): file and report to failed/."""
    try:
        report = {"source": drop["source"], "etag": drop["etag"], "error": error}
        _report(svc, drop["inbox"], FAILED, drop["name"], report)
        if svc.s3.head(processing) is not None:
            svc.s3.move(processing, join(drop["inbox"], FAILED, drop["name"]))
    except BatchdError as exc:
        log.error("could not move %s to failed/: %s", processing, exc)


def _report(svc: Services, inbox: str, folder: str, name: str, report: dict[str, Any]) -> None:
    data = json.dumps(report, indent=2, sort_keys=True).encode()
    svc.s3.put_bytes(join(inbox, folder, name + ".report.json"), data, "application/json")


follow_ups.register("drop", finish_drop)
