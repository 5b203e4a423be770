"""Stage one of ingest: raw lines -> Parsed records. Pure, so it runs in worker processes.

Each line is decoded, parsed (any of the three formats), routed to a backend, keyed,
and - when valid - already encoded as its line of a vendor chunk file. What needs the
whole file (duplicate ids, in-run dedup, cache lookup, chunking) stays in the main
process (ingest.py), which receives records in input order.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from batchd.backends.base import UnsupportedRequest
from batchd.planning.routing import Choice, Route, RouteError, Router
from batchd.requests import Invalid, Request, parse_request, salted_key

# Vendor ids of requests whose answers must not enter the cache start with this.
NO_CACHE_PREFIX = "x"


def vendor_id(key: bytes, cacheable: bool) -> str:
    """The custom_id batchd sends for a request key: safe for every vendor's id rules."""
    return key.hex() if cacheable else NO_CACHE_PREFIX + key.hex()


def key_of(vendor_id: str) -> bytes:
    """The request key behind a vendor custom_id."""
    return bytes.fromhex(vendor_id.removeprefix(NO_CACHE_PREFIX))


def cacheable(vendor_id: str) -> bool:
    return not vendor_id.startswith(NO_CACHE_PREFIX)


_BOM = b"\xef\xbb\xbf"
_decode = msgspec.json.decode


class Parsed(msgspec.Struct, array_like=True, gc=False):
    line_no: int
    custom_id: str
    id_digest: bytes
    tenant: str
    tags: dict[str, str]
    model: str
    error_type: str | None = None  # set: the line is invalid
    error_message: str | None = None
    key: bytes = b""
    cache_ok: bool = True
    backend: str = ""
    vendor_line: bytes = b""  # its line of a chunk file, newline included
    max_tokens: int = 0
    deadline_at: float | None = None
    options: list[bytes] = []  # an alias: one chunk line per target ("" = target can't take it)
    prompt_tokens: int = -1  # counted by the vLLM model's tokenizer, when it has a vLLM target


class Block(msgspec.Struct, array_like=True, gc=False):
    records: list[Parsed]
    blank: int
    bytes_read: int


@dataclass(frozen=True)
class ParseContext:
    router: Router
    default_tenant: str
    run_salt: str
    use_cache: bool
    max_line_bytes: int


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def _invalid(
    line_no: int,
    custom_id: str,
    error_type: str,
    message: str,
    tenant: str = "",
    tags: dict[str, str] | None = None,
    model: str = "",
) -> Parsed:
    return Parsed(
        line_no, custom_id, _digest(custom_id), tenant, tags or {}, model, error_type, message
    )


def parse_block(first_line_no: int, raw_lines: list[bytes | None], ctx: ParseContext) -> Block:
    records: list[Parsed] = []
    blank = 0
    n_bytes = 0
    route_of = ctx.router.route
    line_no = first_line_no - 1
    for raw in raw_lines:
        line_no += 1
        if raw is None:
            records.append(
                _invalid(
                    line_no,
                    f"line-{line_no}",
                    "line_too_long",
                    f"line is longer than the limit of {ctx.max_line_bytes:,} bytes",
                )
            )
            continue
        n_bytes += len(raw) + 1
        if line_no == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        try:
            obj = _decode(raw)
        except (UnicodeDecodeError, msgspec.DecodeError) as exc:
            if not raw.strip():
                blank += 1
            else:
                records.append(_undecodable(raw, line_no, exc))
            continue
        item = parse_request(obj, line_no, ctx.default_tenant)
        if type(item) is not Request:
            inv: Invalid = item  # type: ignore[assignment]
            records.append(
                _invalid(
                    line_no,
                    inv.custom_id,
                    inv.error_type,
                    inv.error_message,
                    inv.tenant,
                    inv.tags,
                    inv.model,
                )
            )
            continue
        route = route_of(item.model)
        if type(route) is RouteError:
            records.append(
                _invalid(
                    line_no,
                    item.custom_id,
                    route.error_type,
                    route.message,
                    item.tenant,
                    item.tags,
                    item.model,
                )
            )
            continue
        records.append(_valid(item, route, ctx))  # type: ignore[arg-type]
    return Block(records, blank, n_bytes)


def _as_target(item: Request, model: str) -> Request:
    """The request as sent to one target of an alias: the target's model name in it."""
    if item.model == model:
        return item
    params = item.source_params
    return msgspec.structs.replace(
        item,
        model=model,
        body={**item.body, "model": model},
        source_params=None if params is None else {**params, "model": model},
    )


def _valid(item: Request, route: Route | Choice, ctx: ParseContext) -> Parsed:
    key = item.key
    if not item.cache_ok:
        key = salted_key(key, f"{ctx.run_salt}:{item.line_no}")
    vid = vendor_id(key, item.cache_ok and ctx.use_cache)
    body = item.body
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 0
    options: list[bytes] = []
    backend = ""
    try:
        if type(route) is Choice:
            options = _options(vid, item, route, ctx.router)
            line = b""
            targets = route.targets
        else:
            backend = route.backend  # type: ignore[union-attr]
            line = ctx.router.backend(backend).encode_line(vid, item) + b"\n"
            targets = [route]  # type: ignore[list-item]
    except UnsupportedRequest as exc:
        return _invalid(
            item.line_no,
            item.custom_id,
            "unsupported_parameter",
            str(exc),
            item.tenant,
            item.tags,
            item.model,
        )
    return Parsed(
        item.line_no,
        item.custom_id,
        _digest(item.custom_id),
        item.tenant,
        item.tags,
        item.model,
        None,
        None,
        key,
        item.cache_ok,
        backend,
        line,
        max_tokens,
        item.deadline_at,
        options,
        _prompt_tokens(item, targets, ctx.router),
    )


def _options(vid: str, item: Request, choice: Choice, router: Router) -> list[bytes]:
    """One chunk line per target; b"" where a target cannot express the request."""
    lines = []
    first_error: UnsupportedRequest | None = None
    for t in choice.targets:
        try:
            lines.append(router.backend(t.backend).encode_line(vid, _as_target(item, t.model)))
            lines[-1] += b"\n"
        except UnsupportedRequest as exc:
            first_error = first_error or exc
            lines.append(b"")
    if first_error is not None and not any(lines):
        raise first_error
    return lines


def _prompt_tokens(item: Request, targets: list[Route], router: Router) -> int:
    if router.vllm_name and any(t.backend == "vllm" for t in targets):
        return router.tokens.count(item.body["messages"])
    return -1


def _undecodable(raw: bytes, line_no: int, exc: Exception) -> Parsed:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return _invalid(line_no, f"line-{line_no}", "invalid_utf8", f"line is not UTF-8: {bad}")
    return _invalid(line_no, f"line-{line_no}", "invalid_json", f"line is not JSON: {exc}")


# --- running stage one in worker processes ----------------------------------------------
_worker_ctx: ParseContext | None = None
_block_enc = msgspec.msgpack.Encoder()
_block_dec = msgspec.msgpack.Decoder(Block)


def _init_worker(ctx: ParseContext) -> None:
    global _worker_ctx
    _worker_ctx = ctx


def _work(job: tuple[int, list[bytes | None]]) -> bytes:
    assert _worker_ctx is not None
    return _block_enc.encode(parse_block(job[0], job[1], _worker_ctx))


def auto_workers(size_bytes: int) -> int:
    """Worker processes worth starting for an input of this size (1 = parse inline)."""
    if size_bytes < 16 * 1024 * 1024:
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


def parse_blocks(
    blocks: Iterable[tuple[int, list[bytes | None]]], ctx: ParseContext, workers: int
) -> Iterator[Block]:
    """Stage one over every block, in order; with workers > 1, in a process pool."""
    if workers <= 1:
        for first, lines in blocks:
            yield parse_block(first, lines, ctx)
        return
    # fork is fastest, but forking a process with other threads (a coordinator: asyncio
    # loop, lease renewer, Redis clients) can copy a held lock: use a fork server there.
    mp: Any = multiprocessing.get_context("fork" if threading.active_count() == 1 else "forkserver")
    in_flight: deque[Any] = deque()  # bounded, so memory stays flat whoever is slower
    with mp.Pool(workers, initializer=_init_worker, initargs=(ctx,)) as pool:
        for job in blocks:
            in_flight.append(pool.apply_async(_work, (job,)))
            if len(in_flight) > 2 * workers:
                yield _block_dec.decode(in_flight.popleft().get())
        while in_flight:
            yield _block_dec.decode(in_flight.popleft().get())
