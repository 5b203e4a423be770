"""The live progress display of `batchd submit`: a rich table on a TTY, log lines elsewhere."""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from batchd.intake.ingest import IngestStats
from batchd.state.base import (
    CHUNK_COLLECTED,
    CHUNK_CREATING,
    CHUNK_ENDED,
    CHUNK_PENDING,
    CHUNK_SUBMITTED,
    RUN_DISPATCHING,
    RUN_DONE,
    Chunk,
    Run,
)

LOG_EVERY_S = 10.0
log = logging.getLogger("batchd.progress")


def snapshot(run: Run, chunks: list[Chunk], ingest: IngestStats | None) -> dict[str, Any]:
    """Counts a person watching a run wants: read, cached, sent, done, failed, cost so far."""
    if ingest is not None:
        st: dict[str, Any] = {
            "lines": ingest.lines,
            "invalid": ingest.invalid,
            "cache_hits": ingest.cache_hits,
            "in_run": ingest.in_run_duplicates,
        }
        phase = "reading input"
    else:
        st = dict((run.stats or {}).get("ingest", {}))
        phase = run.state
    sent = done = failed = 0
    cost = 0.0
    for c in chunks:
        moved = c.counts.get("moved")  # handed to other chunks (split, released, requeued)
        if (
            c.attempt == 1
            and not moved
            and c.state in (CHUNK_SUBMITTED, CHUNK_ENDED, CHUNK_COLLECTED)
        ):
            sent += c.n_requests
        if c.state == CHUNK_COLLECTED:
            done += c.counts.get("succeeded", 0)
            failed += c.counts.get("final", 0) - c.counts.get("succeeded", 0)
            cost += c.cost_usd
        elif c.state in (CHUNK_SUBMITTED, CHUNK_ENDED):
            done_here = c.counts.get("done", 0)
            done += done_here
            if c.n_requests:  # not billed yet: the plan's estimate for the lines done
                cost += c.est_cost_usd * done_here / c.n_requests
    open_chunks = [c for c in chunks if c.state != CHUNK_COLLECTED]
    vendor = Counter(c.vendor_status or c.state for c in open_chunks)
    ended = run.state == RUN_DONE and run.updated_at
    elapsed_s = (run.updated_at if ended else time.time()) - run.created_at
    problems = {"waiting on": run.blocked, "last error": run.error}
    snap = {
        "run": run.run_id,
        "phase": _phase(run, chunks) if ingest is None else phase,
        "elapsed": _elapsed(elapsed_s) if run.created_at else "-",
        "lines read": st.get("lines", 0),
        "invalid": st.get("invalid", 0),
        "cached": st.get("cache_hits", 0),
        "in-run duplicates": st.get("in_run", st.get("in_run_duplicates", 0)),
        "unique requests sent": sent,
        "requests done": done,
        "requests failed": failed,
        "chunks": f"{sum(c.state == CHUNK_COLLECTED for c in chunks)}/{len(chunks)} collected"
        + (
            ""
            if not vendor
            else " (" + ", ".join(f"{n} {s}" for s, n in sorted(vendor.items())) + ")"
        ),
        "cost so far": f"${cost:,.4f}"
        + (" (estimated for lines not yet collected)" if open_chunks and done else ""),
        **{k: v for k, v in problems.items() if v},
    }
    counts = (run.stats or {}).get("status_counts")
    if run.state == RUN_DONE and counts:  # the rows, counted as the summary counts them
        del snap["requests done"], snap["requests failed"]
        snap["rows"] = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    for c in open_chunks[:MAX_CHUNKS_SHOWN]:
        snap[f"  {c.backend}:{c.model}"] = _chunk_line(c)
    if len(open_chunks) > MAX_CHUNKS_SHOWN:
        snap["  ..."] = f"{len(open_chunks) - MAX_CHUNKS_SHOWN} more open chunks"
    return snap


MAX_CHUNKS_SHOWN = 5


def _phase(run: Run, chunks: list[Chunk]) -> str:
    """What the run is waiting for, in words (the store's state alone says 'dispatching')."""
    if run.state != RUN_DISPATCHING:
        return run.state
    states = Counter(c.state for c in chunks)
    if states[CHUNK_PENDING] or states[CHUNK_CREATING]:
        return "dispatching: sending batches"
    if states[CHUNK_SUBMITTED]:
        return "dispatching: waiting for the vendors"
    if states[CHUNK_ENDED]:
        return "dispatching: collecting results"
    return "dispatching"


def _chunk_line(c: Chunk) -> str:
    status = c.vendor_status or c.state
    total = c.counts.get("total") or c.n_requests
    done = c.counts.get("done", 0) + c.counts.get("failed", 0)
    return f"{status} {done}/{total}" + (f" (attempt {c.attempt})" if c.attempt > 1 else "")


def _elapsed(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    def __init__(self, console: Console, quiet: bool = False) -> None:
        self._console = console
        self._quiet = quiet
        self._live: Live | None = None
        self._last_log = 0.0
        self._tty = console.is_terminal
        self._failed = False

    def __enter__(self) -> Progress:
        if self._tty and not self._quiet:
            self._live = Live(console=self._console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def update(self, run: Run, chunks: list[Chunk], ingest: IngestStats | None) -> None:
        """Show progress; a display problem is logged and never stops the run."""
        if self._quiet:
            return
        try:
            self._show(snapshot(run, chunks, ingest), run)
        except Exception:
            if not self._failed:  # say it once, not at every refresh
                log.exception("progress display failed (the run goes on)")
            self._failed = True

    def _show(self, snap: dict[str, Any], run: Run) -> None:
        if self._live is not None:
            table = Table(show_header=False, box=None, pad_edge=False)
            for k, v in snap.items():
                table.add_row(f"[bold]{k}[/]", str(v))
            self._live.update(table)
            return
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY_S or run.state == "done":
            self._last_log = now
            print(
                " ".join(f"{k.strip()}={v}" for k, v in snap.items() if k != "run"), file=sys.stderr
            )
