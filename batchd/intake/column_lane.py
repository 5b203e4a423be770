"""A plan's plain chat lines as columns: the typed lane of stage one.

In a dry run that keeps no rows (`batchd plan`), a plain chat line on a model with one
vendor target of the same name whose backend can size a line without writing it (OpenAI's
`line_bytes`) needs only a few values: its id and digest, tenant, model, key, max_tokens and
its vendor line's size. `ColumnLane.take` decodes the line into a typed struct
(intake.typed_plain: the shape checked in C), keys its material and sizes it; a block
whose every line was taken goes to the main process as one `Columns`, which it settles
in bulk (intake.ingest). Any other line is None here, and the block is made of records as
before, a taken line's record being exactly the express lane's (`record`).
"""

from __future__ import annotations

import hashlib
from array import array

import msgspec

from batchd.intake.express import plain_asks
from batchd.intake.records import Columns, ParseContext, Parsed
from batchd.intake.typed_plain import DECODERS, plain_of
from batchd.intake.vendor_ids import vendor_id
from batchd.planning.estimates import VLLM
from batchd.planning.routing import Route
from batchd.requests import CHAT, KEY_BYTES, key_of_material

MISSES_MAX = 32  # lines a block's lane may fail to take before it stops trying
_blake2b = hashlib.blake2b


class _Target:
    """A model's one vendor target: its backend, line overhead and what it can serve."""

    __slots__ = ("able", "backend", "model_no", "overhead", "route")

    def __init__(self, route: Route, overhead: int, model_no: int) -> None:
        self.route = route
        self.backend = route.backend
        self.overhead = overhead  # a line's size less its body's JSON, newline included
        self.model_no = model_no
        self.able: dict[frozenset[str], bool] = {}


class Taken(msgspec.Struct, array_like=True, gc=False):
    custom_id: str
    id_digest: bytes
    tenant: str
    tags: dict[str, str]
    model: str
    model_no: int
    backend: str
    key: bytes
    max_tokens: int
    vendor_bytes: int


class ColumnLane:
    """One block's lane: `take(raw, line_no)` is the line's values, or None."""

    def __init__(self, ctx: ParseContext) -> None:
        self._ctx = ctx
        self._on = ctx.columns and ctx.sizes_only and ctx.semantic is None
        self._targets: dict[str, _Target | None] = {}
        self._models: list[str] = []
        self._backends: list[str] = []
        self._misses = 0
        # a line's vendor id is its key's hex (marked uncacheable without the cache)
        self._vendor_id = vendor_id(bytes(KEY_BYTES), ctx.use_cache)

    def take(self, raw: bytes, line_no: int) -> Taken | None:
        if self._on:
            try:
                taken = self._take(raw, line_no)
            except Exception:  # anything odd: the record path decides
                taken = None
            if taken is not None:
                return taken
            self._misses += 1
            self._on = self._misses < MISSES_MAX
        return None

    def _take(self, raw: bytes, line_no: int) -> Taken | None:
        # the format a line's keys suggest first (a guess: a miss tries the others)
        first = 1 if b'"params"' in raw else 0 if b'"custom_id"' in raw else 2
        try:
            typed = DECODERS[first].decode(raw)
        except msgspec.ValidationError:
            for i, dec in enumerate(DECODERS):
                if i != first:
                    try:
                        typed = dec.decode(raw)
                        break
                    except msgspec.ValidationError:
                        continue
            else:
                return None
        plain = plain_of(typed, line_no, self._ctx.default_tenant)
        if plain is None:
            return None
        model = plain.model
        try:
            target = self._targets[model]
        except KeyError:
            target = self._targets[model] = self._target(model)
        if target is None:
            return None
        asked = plain_asks(plain.needs_n, plain.needs_seed)
        able = target.able.get(asked)
        if able is None:
            able = target.able[asked] = not self._ctx.router.lacks(asked, target.route)
        if not able:
            return None
        custom_id = plain.custom_id
        return Taken(
            custom_id,
            _blake2b(custom_id.encode(), digest_size=16).digest(),  # records.digest
            plain.tenant,
            plain.tags,
            model,
            target.model_no,
            target.backend,
            key_of_material(plain.tenant, CHAT, plain.material),
            plain.max_tokens,
            target.overhead + len(plain.material),
        )

    def _target(self, model: str) -> _Target | None:
        """The model's target when the express lane would take its lines (intake.express)
        and its backend sizes a line from its body's size; else None."""
        router = self._ctx.router
        route = router.route(model)
        if type(route) is not Route or route.backend == VLLM or route.model != model:
            return None
        line_bytes = getattr(router.backend(route.backend), "line_bytes", None)
        if line_bytes is None:
            return None
        self._models.append(model)
        self._backends.append(route.backend)
        overhead = line_bytes(self._vendor_id, CHAT, 0) + 1
        return _Target(route, overhead, len(self._models) - 1)

    def columns(self, first_line_no: int, taken: list[Taken]) -> Columns:
        return Columns(
            first_line_no,
            [t.custom_id for t in taken],
            b"".join([t.id_digest for t in taken]),
            b"".join([t.key for t in taken]),
            array("I", [t.model_no for t in taken]).tobytes(),
            self._models,
            self._backends,
            array("q", [t.vendor_bytes for t in taken]).tobytes(),
            array("q", [t.max_tokens for t in taken]).tobytes(),
        )


def record(taken: Taken, line_no: int) -> Parsed:
    """The express lane's record of a taken line."""
    return Parsed(
        line_no,
        taken.custom_id,
        taken.id_digest,
        taken.tenant,
        taken.tags,
        taken.model,
        None,
        None,
        taken.key,
        True,
        taken.backend,
        b"",
        taken.max_tokens,
        None,
        [],
        -1,
        CHAT,
        None,
        b"",
        "",
        taken.vendor_bytes,
    )
