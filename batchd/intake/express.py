"""The express lane of stage one: a plain chat line's record in few steps.

`decode._valid` handles every valid line whatever its route; for a plain chat line
(`intake.plain`) on a model with one vendor target of the same name, most of its steps
give the same answer for every line of the model: the route, the backend's encoder, what
the target can serve. `Express` works them out once per model (per block) and builds the
record from the Request directly. It returns None for anything else (an alias, a vLLM
target, a renamed target, a line its target cannot serve or its backend cannot express,
a run with the semantic cache), and `_valid` decides, so every reason comes from one place.

What a plain line asks for (`backends.capabilities.needs`) is its endpoint, chat, plus a
seed when it gives one and n when it asks for more than one choice: its messages are
strings (no images), and it has no tools, response_format, logprobs or reasoning keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from batchd.backends.base import UnsupportedRequest
from batchd.backends.capabilities import SEED, N
from batchd.intake.records import ParseContext, Parsed, digest
from batchd.intake.vendor_ids import vendor_id
from batchd.planning.estimates import VLLM
from batchd.planning.routing import Route, Router
from batchd.requests import CHAT, Request, salted_key

_ASKS = {
    (n, seed): frozenset({CHAT} | ({N} if n else set()) | ({SEED} if seed else set()))
    for n in (False, True)
    for seed in (False, True)
}


def plain_needs(body: dict[str, Any]) -> frozenset[str]:
    """`capabilities.needs` of a plain chat line's body."""
    n = body.get("n")
    return _ASKS[type(n) is int and n > 1, body.get("seed") is not None]


def plain_asks(n: bool, seed: bool) -> frozenset[str]:
    """What a plain chat line asks for: chat, and n (more than one choice) and seed if given."""
    return _ASKS[n, seed]


def direct_route(router: Router, model: str) -> Route | None:
    """The model's route when it is one vendor target of the same name (no alias, no vLLM,
    no renamed target): the lines the express lanes take; else None."""
    route = router.route(model)
    if type(route) is not Route or route.backend == VLLM or route.model != model:
        return None
    return route


class _Model:
    """One model's route worked out once: its backend, encoder and what it can serve."""

    __slots__ = ("able", "backend", "encode_line", "route")

    def __init__(self, route: Route, encode_line: Callable[[str, Request], bytes]) -> None:
        self.route = route
        self.backend = route.backend
        self.encode_line = encode_line
        self.able: dict[frozenset[str], bool] = {}


class Express:
    """The lane for one block: `record(item)` is `_valid`'s record, or None."""

    def __init__(self, ctx: ParseContext) -> None:
        self._ctx = ctx
        self._off = ctx.semantic is not None  # scope and text per line: `_valid` does it
        self._models: dict[str, _Model | None] = {}

    def _model(self, model: str) -> _Model | None:
        router = self._ctx.router
        route = direct_route(router, model)
        if route is None:
            return None
        return _Model(route, router.backend(route.backend).encode_line)

    def record(self, item: Request) -> Parsed | None:
        if self._off or item.endpoint != CHAT or item.fmt == "gemini":
            return None
        model = item.model
        try:
            m = self._models[model]
        except KeyError:
            m = self._models[model] = self._model(model)
        if m is None:
            return None
        body = item.body
        asked = plain_needs(body)
        able = m.able.get(asked)
        if able is None:
            able = m.able[asked] = not self._ctx.router.lacks(asked, m.route)
        if not able:
            return None
        key = item.key
        cache_ok = item.cache_ok
        if not cache_ok:
            key = salted_key(key, f"{self._ctx.run_salt}:{item.line_no}")
        try:
            line = m.encode_line(vendor_id(key, cache_ok and self._ctx.use_cache), item)
        except UnsupportedRequest:  # the line's row gives the reason: `_valid` makes it
            return None
        max_tokens = body.get("max_tokens")
        size = len(line) + 1 if self._ctx.sizes_only else -1
        return Parsed(
            item.line_no,
            item.custom_id,
            digest(item.custom_id),
            item.tenant,
            item.tags,
            model,
            None,
            None,
            key,
            cache_ok,
            m.backend,
            b"" if size >= 0 else line + b"\n",
            max_tokens if type(max_tokens) is int else 0,
            item.deadline_at,
            [],
            -1,
            CHAT,
            None,
            b"",
            "",
            size,
        )
