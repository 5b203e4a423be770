"""A plan's plain chat lines as columns: the typed lane of stage one.

In a dry run that keeps no rows (`batchd plan`), a plain chat line on a model with one
vendor target of the same name whose backend can size a line without writing it (OpenAI's
`line_bytes`) needs only a few values: its id and digest, model, key, max_tokens and its
vendor line's size. `ColumnLane.take` decodes the line into a typed struct
(intake.typed_plain: the shape checked in C), keys its material, sizes it and appends it
to the lane's columns; a block whose every line was taken goes to the main process as one
`Columns`, which it settles in bulk (intake.column_settle). Any other line is not taken,
and the block is made of records as before, a taken line's being exactly the express
lane's (`record`). `take_joined` first offers a whole block to the C lane
(intake.native_lane), which reads the same lines to the same values many times faster.
"""

from __future__ import annotations

from array import array
from typing import Any

import msgspec
import numpy as np

from batchd.intake import native_lane
from batchd.intake.express import direct_route, plain_asks
from batchd.intake.records import Columns, ParseContext, Parsed, digest
from batchd.intake.screen import MAX_DEPTH
from batchd.intake.typed_plain import DECODERS, plain_of
from batchd.intake.vendor_ids import vendor_id
from batchd.planning.routing import Route, Router
from batchd.requests import CHAT, KEY_BYTES, key_scope, scope_hash

MISSES_MAX = 32  # lines a block's lane may fail to take before it stops trying
PARAMS_WITHIN = 128  # bytes: where an Anthropic line's "params" key is looked for first
_OPENAI, _ANTHROPIC, _NATIVE = DECODERS
_UNSEEN: Any = object()


class _Miss(Exception):
    """A line the lane does not take."""


class _Target:
    """A model's one vendor target: its backend, line overhead and what it can serve."""

    __slots__ = ("able", "backend", "model_no", "overhead", "route")

    def __init__(self, route: Route, overhead: int, model_no: int) -> None:
        self.route = route
        self.backend = route.backend
        self.overhead = overhead  # a line's size less its body's JSON, newline included
        self.model_no = model_no
        self.able: dict[frozenset[str], bool] = {}

    def serves(self, asked: frozenset[str], router: Router) -> bool:
        """Whether the target can serve a line that asks for `asked` (memoised)."""
        able = self.able.get(asked)
        if able is None:
            able = self.able[asked] = not router.lacks(asked, self.route)
        return able


class ColumnLane:
    """One block's lane: `take_block` appends the lines it takes to its columns."""

    def __init__(self, ctx: ParseContext) -> None:
        self._ctx = ctx
        self._on = ctx.columns and ctx.sizes_only and ctx.semantic is None
        self._targets: dict[str, _Target | None] = {}
        self._scopes: dict[str, Any] = {}  # tenant -> a key hash holding its scope
        self._misses = 0
        # a line's vendor id is its key's hex (marked uncacheable without the cache)
        self._vendor_id = vendor_id(bytes(KEY_BYTES), ctx.use_cache)
        self.models: list[str] = []
        self.backends: list[str] = []
        self.custom_ids: list[str] = []
        self.id_digests: list[bytes] = []
        self.keys: list[bytes] = []
        self.model_nos = array("I")
        self.vendor_bytes = array("q")
        self.max_tokens = array("q")
        self.tenants: list[str] = []  # for `record` only (a plan keeps no rows)
        self.tags: list[dict[str, str]] = []

    def take(self, raw: bytes, line_no: int) -> int:
        """The line's index in the columns when the lane takes it; else -1."""
        return self.take_block([raw], line_no)[0]

    def take_block(self, raw_lines: list[bytes | None], first_line_no: int) -> list[int]:
        """`take` of each line of a block (the i-th numbered first_line_no + i), in one loop
        with what every line needs at hand."""
        out: list[int] = []
        if not self._on:
            return [-1] * len(raw_lines)
        tenant = self._ctx.default_tenant
        targets, scopes = self._targets, self._scopes
        add_id, add_digest, add_key = (
            self.custom_ids.append,
            self.id_digests.append,
            self.keys.append,
        )
        add_model, add_bytes, add_max = (
            self.model_nos.append,
            self.vendor_bytes.append,
            self.max_tokens.append,
        )
        add_tenant, add_tags = self.tenants.append, self.tags.append
        openai, anthropic = _OPENAI, _ANTHROPIC
        router = self._ctx.router
        for i, raw in enumerate(raw_lines):
            # sampling values are any JSON: a line that may nest too deep is parse_line's
            if not raw or raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
                out.append(-1)
                continue
            try:
                # the format the line's first key suggests (a miss tries the others)
                if not raw.startswith(b'{"custom_id"'):
                    first = _NATIVE
                elif raw.find(b'"params"', 0, PARAMS_WITHIN) >= 0:
                    first = anthropic
                else:
                    first = openai
                try:
                    typed = first.decode(raw)
                except msgspec.ValidationError:
                    typed = _other_format(raw, first)
                plain = plain_of(typed, first_line_no + i, tenant) if typed is not None else None
                if plain is None:
                    raise _Miss
                model = plain.model
                target = targets.get(model, _UNSEEN)
                if target is _UNSEEN:
                    target = targets[model] = self._target(model)
                if target is None:
                    raise _Miss
                if not target.serves(plain_asks(plain.needs_n, plain.needs_seed), router):
                    raise _Miss
                line_tenant = plain.tenant
                scope = scopes.get(line_tenant)
                if scope is None:
                    scope = scopes[line_tenant] = scope_hash(key_scope(line_tenant, CHAT))
                custom_id = plain.custom_id
                material = plain.material
                k = scope.copy()
                k.update(material)
                add_digest(digest(custom_id))
                add_key(k.digest())
                add_id(custom_id)
                add_model(target.model_no)
                add_bytes(target.overhead + len(material))
                add_max(plain.max_tokens)
                add_tenant(line_tenant)
                add_tags(plain.tags)
                out.append(len(self.custom_ids) - 1)
            except Exception:  # not the lane's line, or anything odd: the record path decides
                out.append(-1)
                self._misses += 1
                if self._misses >= MISSES_MAX:
                    self._on = False
                    out.extend([-1] * (len(raw_lines) - len(out)))
                    break
        return out

    def take_joined(self, block: bytes, first_line_no: int) -> Columns | None:
        """The block (lines joined by b"\\n") as Columns when the C lane takes every line
        and each line's model and what it asks for are the lane's (as `take_block` checks
        them); else None, and `take_block` decides."""
        if not self._on:
            return None
        got = native_lane.take(block, first_line_no, self._ctx.default_tenant)
        if got is None:
            return None
        targets = []
        for model in got.models:
            target = self._targets.get(model, _UNSEEN)
            if target is _UNSEEN:
                target = self._targets[model] = self._target(model)
            if target is None:
                return None
            targets.append(target)
        model_idx = np.frombuffer(got.model_idx, dtype=np.uint32)
        asks = np.frombuffer(got.asks, dtype=np.uint8)
        for combo in np.unique(model_idx.astype(np.int64) * 4 + asks).tolist():
            target, bits = targets[combo // 4], combo % 4
            asked = plain_asks(bool(bits & native_lane.ASKS_N), bool(bits & native_lane.ASKS_SEED))
            if not target.serves(asked, self._ctx.router):
                return None
        model_nos = np.array([t.model_no for t in targets], dtype=np.uint32)[model_idx]
        overheads = np.array([t.overhead for t in targets], dtype=np.int64)[model_idx]
        sizes = overheads + np.frombuffer(got.material_bytes, dtype=np.int64)
        return Columns(
            first_line_no,
            got.custom_ids,
            got.id_digests,
            got.keys,
            model_nos.tobytes(),
            self.models,
            self.backends,
            sizes.tobytes(),
            got.max_tokens,
        )

    def _target(self, model: str) -> _Target | None:
        """The model's target when the express lane would take its lines (intake.express)
        and its backend sizes a line from its body's size; else None."""
        router = self._ctx.router
        route = direct_route(router, model)
        if route is None:
            return None
        line_bytes = getattr(router.backend(route.backend), "line_bytes", None)
        if line_bytes is None:
            return None
        self.models.append(model)
        self.backends.append(route.backend)
        overhead = line_bytes(self._vendor_id, CHAT, 0) + 1
        return _Target(route, overhead, len(self.models) - 1)

    def columns(self, first_line_no: int) -> Columns:
        return Columns(
            first_line_no,
            self.custom_ids,
            b"".join(self.id_digests),
            b"".join(self.keys),
            self.model_nos.tobytes(),
            self.models,
            self.backends,
            self.vendor_bytes.tobytes(),
            self.max_tokens.tobytes(),
        )

    def record(self, i: int, line_no: int) -> Parsed:
        """The express lane's record of the i-th line taken."""
        m = self.model_nos[i]
        return Parsed(
            line_no,
            self.custom_ids[i],
            self.id_digests[i],
            self.tenants[i],
            self.tags[i],
            self.models[m],
            None,
            None,
            self.keys[i],
            True,
            self.backends[m],
            b"",
            self.max_tokens[i],
            None,
            [],
            -1,
            CHAT,
            None,
            b"",
            "",
            self.vendor_bytes[i],
        )


def _other_format(raw: bytes, tried: msgspec.json.Decoder[Any]) -> Any:
    """The line decoded as a plain line of a format other than the guess; None if none fits."""
    for dec in DECODERS:
        if dec is not tried:
            try:
                return dec.decode(raw)
            except msgspec.ValidationError:
                continue
    return None
