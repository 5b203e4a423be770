"""Stage one of ingest: raw lines -> Parsed records. Pure, so it runs in worker processes.

Each line is decoded, parsed (any of the three formats), routed to a backend, keyed,
and - when valid - already encoded as its line of a vendor chunk file. What needs the
whole file (duplicate ids, in-run dedup, cache lookup, chunking) stays in the main
process (ingest.py), which receives records in input order.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import msgspec

from batchd.backends.base import UnsupportedRequest
from batchd.backends.capabilities import needs
from batchd.cache.semantic.scope import scope_and_text
from batchd.intake.column_lane import ColumnLane
from batchd.intake.express import Express
from batchd.intake.line_sizes import max_tokens_of, prompt_tokens_of
from batchd.intake.lines import RawBlock, lines_of
from batchd.intake.plain import plain_request
from batchd.intake.records import (
    BLANK_LINE,
    INTERNAL_ERROR,
    Block,
    Columns,
    ParseContext,
    Parsed,
    digest,
    invalid,
    paused_gc,
)
from batchd.intake.screen import (
    BOM,
    MAX_DEPTH,
    huge_int,
    line_id,
    lone_surrogate,
    no_long_digits,
    stray_bom,
    too_deep,
)
from batchd.intake.vendor_ids import GUARD_TAGS, NO_CACHE_PREFIX, cacheable, key_of, vendor_id
from batchd.planning.estimates import VLLM
from batchd.planning.routing import Choice, Route, RouteError, Router
from batchd.requests import (
    CHAT,
    Invalid,
    LineFault,
    Request,
    parse_request,
    salted_key,
)

log = logging.getLogger("batchd.intake")
__all__ = [  # re-exported
    "BLANK_LINE",
    "GUARD_TAGS",
    "INTERNAL_ERROR",
    "NO_CACHE_PREFIX",
    "Block",
    "ParseContext",
    "Parsed",
    "cacheable",
    "key_of",
    "paused_gc",
    "vendor_id",
]

_decode = msgspec.json.decode
_digest = digest
_invalid = invalid


def parse_block(first_line_no: int, block: RawBlock, ctx: ParseContext) -> Block:
    """Every line of a block as one record, in order: no line's fault escapes it.

    In a block with no byte-order mark and no 19-digit run anywhere (screened once, on the
    whole block), a line takes the fast path (`_parse_clean`, with one `Express` lane for the
    block); any other line, and every line of any other block, `parse_line`. A plan's clean
    block whose every line the column lane takes comes back as Columns (intake.column_lane).
    """
    if isinstance(block, bytes):  # every line within the limit, as read
        joined, n_bytes = block, len(block) + 1
        whole = True  # joined holds exactly the block's lines
    else:
        joined = b"\n".join(raw for raw in block if raw is not None)
        n_bytes = sum(len(raw) + 1 for raw in block if raw is not None)
        whole = None not in block and joined.count(b"\n") + 1 == len(block)
    with paused_gc():
        if ctx.columns and whole:  # the C lane screens each line as below, itself
            columns = ColumnLane(ctx).take_joined(joined, first_line_no)
            if columns is not None:
                return Block([], 0, n_bytes, columns)
        clean = BOM not in joined and no_long_digits(joined)
        raw_lines = lines_of(block)
        if clean and ctx.columns:
            columns, records = _columns_or_records(first_line_no, raw_lines, ctx)
            if columns is not None:
                return Block([], 0, n_bytes, columns)
        elif clean:
            lane = Express(ctx)
            records = [
                _parse_clean(raw, first_line_no + i, ctx, lane) for i, raw in enumerate(raw_lines)
            ]
        else:
            records = [parse_line(raw, first_line_no + i, ctx) for i, raw in enumerate(raw_lines)]
    blank = sum(1 for r in records if r.error_type == BLANK_LINE)
    return Block(records, blank, n_bytes)


def _columns_or_records(
    first_line_no: int, raw_lines: list[bytes | None], ctx: ParseContext
) -> tuple[Columns | None, list[Parsed]]:
    """A clean block of a plan as Columns when the column lane takes every line; else its
    records, a taken line's made from what the lane took (the express lane's record)."""
    lane = ColumnLane(ctx)
    taken = lane.take_block(raw_lines, first_line_no)
    if taken and -1 not in taken:
        return lane.columns(first_line_no), []
    express = Express(ctx)
    return None, [
        _parse_clean(raw, first_line_no + i, ctx, express)
        if t < 0
        else lane.record(t, first_line_no + i)
        for i, (raw, t) in enumerate(zip(raw_lines, taken, strict=True))
    ]


def _parse_clean(raw: bytes | None, line_no: int, ctx: ParseContext, lane: Express) -> Parsed:
    """A line of a clean block: a plain chat line on a known model straight to its record
    (the screens parse_line makes cannot fire on it), by the lane when its model's route is
    the common one; any other line, or any surprise, to parse_line, which gives exactly the
    record it always gave."""
    if raw and raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        try:
            item = plain_request(_decode(raw), line_no, ctx.default_tenant)
            if item is not None:
                record = lane.record(item)
                if record is not None:
                    return record
                route = ctx.router.route(item.model)
                if type(route) is not RouteError:
                    return _valid(item, route, ctx, _Where())  # type: ignore[arg-type]
        except Exception:  # not JSON, or a fault: parse_line gives the line's own row
            pass
    return parse_line(raw, line_no, ctx)


class _Where:
    """How far one line got, for the row of a fault nobody foresaw."""

    __slots__ = ("item", "stage")

    def __init__(self) -> None:
        self.stage = "decode"
        self.item: Request | None = None


def parse_line(raw: bytes | None, line_no: int, ctx: ParseContext) -> Parsed:
    """One raw line as a record. The fault barrier: any exception makes an invalid row."""
    where = _Where()
    try:
        return _parse_line(raw, line_no, ctx, where)
    except Exception as exc:
        stage = where.stage
        custom_id = where.item.custom_id if where.item is not None else None
        if isinstance(exc, LineFault):
            stage, custom_id = exc.stage, exc.custom_id
            exc = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
        return fault(raw, line_no, where.item, custom_id, stage, exc)


def fault(
    raw: bytes | None,
    line_no: int,
    item: Request | None,
    custom_id: str | None,
    stage: str,
    exc: Exception,
) -> Parsed:
    log.debug("line %d: %s in %s", line_no, type(exc).__name__, stage, exc_info=exc)
    if custom_id is None and raw is not None:
        custom_id = line_id(raw)
    text = _printable(str(exc))
    message = (
        f"batchd failed on this line ({type(exc).__name__} in {stage}: {text[:300]}); "
        "the rest of the run went on. Please report it with the line; BATCHD_DEBUG=1 logs "
        "the traceback"
    )
    if item is None:
        return _invalid(line_no, custom_id or f"line-{line_no}", INTERNAL_ERROR, message)
    return _invalid(
        line_no,
        item.custom_id,
        INTERNAL_ERROR,
        message,
        item.tenant,
        item.tags,
        _printable(item.model),
    )


def _printable(text: str) -> str:
    """Text that encodes as UTF-8 (lone surrogates escaped), for a result row."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def _parse_line(raw: bytes | None, line_no: int, ctx: ParseContext, where: _Where) -> Parsed:
    if raw is None:
        return _invalid(
            line_no,
            f"line-{line_no}",
            "line_too_long",
            f"line is longer than the limit of {ctx.max_line_bytes:,} bytes",
        )
    if not raw or raw.isspace():
        return _invalid(
            line_no,
            f"line-{line_no}",
            BLANK_LINE,
            "blank line: it has no request (its row keeps the output in step with the input)",
        )
    if line_no == 1 and raw.startswith(BOM):
        raw = raw[len(BOM) :]
    problem = stray_bom(raw, line_no) or too_deep(raw)
    if problem is not None:
        return _invalid(line_no, line_id(raw) or f"line-{line_no}", *problem)
    try:
        obj = _decode(raw)
    except (UnicodeDecodeError, msgspec.DecodeError) as exc:
        return _undecodable(raw, line_no, exc)
    problem = huge_int(raw, obj)
    if problem is not None:
        return _invalid(line_no, _id_of(obj) or f"line-{line_no}", *problem)
    where.stage = "validate"
    try:  # the plain chat lines, quickly; None (or a surprise): parse_request decides
        item: Request | Invalid | None = plain_request(obj, line_no, ctx.default_tenant)
    except Exception:
        item = None
    if item is None:
        item = parse_request(obj, line_no, ctx.default_tenant)
    if type(item) is not Request:
        inv: Invalid = item  # type: ignore[assignment]
        return _invalid(
            line_no,
            inv.custom_id,
            inv.error_type,
            inv.error_message,
            inv.tenant,
            inv.tags,
            inv.model,
        )
    where.item = item
    where.stage = "route"
    route = ctx.router.route(item.model)
    if type(route) is RouteError:
        return _invalid(
            line_no,
            item.custom_id,
            route.error_type,
            route.message,
            item.tenant,
            item.tags,
            item.model,
        )
    return _valid(item, route, ctx, where)  # type: ignore[arg-type]


def _id_of(obj: Any) -> str | None:
    if type(obj) is not dict:
        return None
    value = obj.get("custom_id", obj.get("id"))
    return value if isinstance(value, str) and value else None


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


def _valid(item: Request, route: Route | Choice, ctx: ParseContext, where: _Where) -> Parsed:
    where.stage = "key"
    key = item.key
    if not item.cache_ok:
        key = salted_key(key, f"{ctx.run_salt}:{item.line_no}")
    vid = vendor_id(key, item.cache_ok and ctx.use_cache)
    max_tokens = max_tokens_of(item)
    options: list[bytes] = []
    backend = ""
    where.stage = "capabilities"
    targets = _targets_of(route)
    asked = needs(item)
    able = [not ctx.router.lacks(asked, t) for t in targets]
    if not any(able):
        alias = route.alias if isinstance(route, Choice) else ""
        err = ctx.router.refusal(item, targets, alias)
        return _invalid(
            item.line_no,
            item.custom_id,
            err.error_type,
            err.message,
            item.tenant,
            item.tags,
            item.model,
        )
    try:
        if type(route) is Choice:
            options = _options(vid, item, route, ctx.router, where, able)
            line = b""
        else:
            backend = route.backend  # type: ignore[union-attr]
            where.stage = f"translation for {backend}"
            if backend != VLLM and route.model != item.model:  # type: ignore[union-attr]
                sent = _as_target(item, route.model)  # type: ignore[union-attr]
            else:
                sent = item
            line = ctx.router.backend(backend).encode_line(vid, sent) + b"\n"
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
    where.stage = "token count"
    prompt_tokens = prompt_tokens_of(item, targets, ctx.router)
    sem = ctx.semantic
    where.stage = "semantic scope"
    scoped = (
        scope_and_text(item.tenant, item.body, sem.compare)
        if sem is not None
        and item.cache_ok
        and ctx.use_cache
        and item.endpoint == CHAT  # chat lines only (cache.semantic.scope)
        and item.fmt != "gemini"
        and sem.applies(item.model)
        else None
    )
    size = len(line) if ctx.sizes_only and line else -1
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
        b"" if size >= 0 else line,
        max_tokens,
        item.deadline_at,
        options,
        prompt_tokens,
        item.endpoint,
        fmt if isinstance(fmt := item.body.get("encoding_format"), str) else None,
        *(scoped or (b"", "")),
        size,
    )


def _targets_of(route: Route | Choice) -> list[Route]:
    return route.targets if isinstance(route, Choice) else [route]


def _options(
    vid: str, item: Request, choice: Choice, router: Router, where: _Where, able: list[bool]
) -> list[bytes]:
    """One chunk line per target; b"" where a target cannot serve or express the request."""
    lines = []
    first_error: UnsupportedRequest | None = None
    for t, can in zip(choice.targets, able, strict=True):
        if not can:  # the planner never places the line there
            lines.append(b"")
            continue
        where.stage = f"translation for {t.backend}"
        try:
            lines.append(router.backend(t.backend).encode_line(vid, _as_target(item, t.model)))
            lines[-1] += b"\n"
        except UnsupportedRequest as exc:
            first_error = first_error or exc
            lines.append(b"")
    if first_error is not None and not any(lines):
        raise first_error
    return lines


def _undecodable(raw: bytes, line_no: int, exc: Exception) -> Parsed:
    fallback = f"line-{line_no}"
    surrogate = lone_surrogate(raw)
    if surrogate is not None:
        return _invalid(line_no, line_id(raw) or fallback, *surrogate)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return _invalid(line_no, fallback, "invalid_utf8", f"line is not UTF-8: {bad}")
    if "out of range" in str(exc):
        return _invalid(
            line_no,
            line_id(raw) or fallback,
            "number_out_of_range",
            f"a number in the line is beyond what a 64-bit float holds ({exc}): give a "
            "smaller number",
        )
    return _invalid(line_no, fallback, "invalid_json", f"line is not JSON: {exc}")


def auto_workers(size_bytes: int) -> int:
    """Worker processes worth starting for an input of this size (1 = parse inline)."""
    if size_bytes < 16 * 1024 * 1024:
        return 1
    return max(1, min(os.cpu_count() or 1, 8))
