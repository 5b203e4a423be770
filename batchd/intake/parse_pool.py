"""Stage one (decode.parse_block) over a whole input, in worker processes for big inputs.

Blocks come back in input order. A worker that raises, or dies, never stops or hangs the
run: its block is parsed again in this process under the same per-line barrier; after a
death the pool is shut down and the rest of the input is parsed here as well.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import msgspec

from batchd.intake import decode
from batchd.intake.decode import Block, ParseContext, Parsed
from batchd.intake.lines import lines_of
from batchd.intake.spans import Job, raw_of

log = logging.getLogger("batchd.intake")

_worker_ctx: ParseContext | None = None
_block_enc = msgspec.msgpack.Encoder()
_block_dec = msgspec.msgpack.Decoder(Block)


def _init_worker(ctx: ParseContext) -> None:
    global _worker_ctx
    _worker_ctx = ctx
    # What the worker inherited is never garbage: no collection walks it (nor copies its
    # pages, shared with the parent since the fork); cycles made from here on are collected.
    gc.freeze()


def _work(job: Job) -> bytes:
    assert _worker_ctx is not None
    block = decode.parse_block(job[0], raw_of(job[1]), _worker_ctx)
    try:
        return _block_enc.encode(block)
    except Exception:  # one record that does not encode: it becomes its own fault row
        block.records = [_encodable(r, job, _worker_ctx) for r in block.records]
        return _block_enc.encode(block)


def _encodable(record: Parsed, job: Job, ctx: ParseContext) -> Parsed:
    try:
        _block_enc.encode(record)
    except Exception as exc:
        raw = lines_of(raw_of(job[1]))[record.line_no - job[0]]
        return decode.fault(raw, record.line_no, None, record.custom_id, "hand-over", exc)
    return record


def parse_blocks(blocks: Iterable[Job], ctx: ParseContext, workers: int) -> Iterator[Block]:
    """Stage one over every block, in order; with workers > 1, in a process pool.

    A worker that raises, or dies, never stops or hangs the run: its block is parsed again
    here, under the same per-line barrier; after a death the pool is shut and the rest of
    the input is parsed here too.
    """
    if workers <= 1:
        for first, lines in blocks:
            yield decode.parse_block(first, raw_of(lines), ctx)
        return
    # fork is fastest, but forking a process with other threads (a coordinator: asyncio
    # loop, lease renewer, Redis clients) can copy a held lock: use a fork server there.
    mp: Any = multiprocessing.get_context("fork" if threading.active_count() == 1 else "forkserver")
    pool = ProcessPoolExecutor(workers, mp_context=mp, initializer=_init_worker, initargs=(ctx,))
    in_flight: deque[tuple[Job, Future[bytes] | None]] = deque()  # bounded: memory stays flat
    broken = False
    try:
        for job in blocks:
            future = None
            if not broken:
                try:
                    future = pool.submit(_work, job)
                except BrokenProcessPool:
                    broken = _died()
            in_flight.append((job, future))
            while len(in_flight) > 2 * workers or (broken and in_flight):
                block, broken = _collect(in_flight.popleft(), ctx, broken)
                yield block
                del block  # not held while the next one is decoded: one block alive
        while in_flight:
            block, broken = _collect(in_flight.popleft(), ctx, broken)
            yield block
            del block
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _died() -> bool:
    log.warning("an ingest worker died; parsing the rest of the input in this process")
    return True


def _collect(
    item: tuple[Job, Future[bytes] | None], ctx: ParseContext, broken: bool
) -> tuple[Block, bool]:
    """A block from the pool, or parsed here when its worker raised or died."""
    job, future = item
    if future is not None and not broken:
        try:
            data = future.result()
            with decode.paused_gc():
                return _block_dec.decode(data), False
        except BrokenProcessPool:
            broken = _died()
        except Exception:
            log.warning("an ingest worker failed on lines %d+; parsing them here", job[0])
            log.debug("ingest worker failure", exc_info=True)
    return decode.parse_block(job[0], raw_of(job[1]), ctx), broken
