"""Model name -> target(s): a concrete vendor model has one route, an alias a choice of
several (backend, model) targets with a reference model for its baseline price.
"""

from __future__ import annotations

import msgspec

from batchd.backends.base import BatchBackend
from batchd.config.pricing import PriceBook, unknown_model_message
from batchd.config.quality import QualitySettings
from batchd.config.settings import Settings
from batchd.planning.estimates import VLLM
from batchd.planning.tokens import TokenCounter


class Route(msgspec.Struct, gc=False):
    backend: str
    model: str


class Choice(msgspec.Struct, gc=False):
    """A model alias: the planner picks one of its targets per request."""

    alias: str
    targets: list[Route]
    reference: str
    # The quality guard (config/quality.py): the reference's column in `targets` (-1: none);
    # `reserve`: that column was added for the guard and takes lines only when gated ones
    # leave it the lines (planning/shadows.py).
    quality: QualitySettings | None = None
    ref_col: int = -1
    reserve: bool = False


class RouteError(msgspec.Struct, gc=False):
    error_type: str
    message: str


class Router:
    """Model name -> target(s). A concrete vendor model has one choice; an alias several."""

    def __init__(
        self,
        prices: PriceBook,
        backends: dict[str, BatchBackend],
        settings: Settings | None = None,
    ) -> None:
        self._prices = prices
        self._backends = backends
        self._settings = settings or Settings()
        vllm = self._settings.backends.vllm
        self.vllm_name = vllm.name if vllm.enabled else ""
        self.tokens = TokenCounter(vllm.model if vllm.enabled else "")
        self._memo: dict[str, Route | Choice | RouteError] = {}

    def backend(self, name: str) -> BatchBackend:
        """The backend that encodes `name`'s lines (vLLM without its backend: OpenAI format)."""
        found = self._backends.get(name)
        return found if found is not None else self._backends["openai"]

    def has_backend(self, name: str) -> bool:
        return name in self._backends

    def route(self, model: str) -> Route | Choice | RouteError:
        hit = self._memo.get(model)
        if hit is None:
            hit = self._memo[model] = self._route(model)
        return hit

    def _route(self, model: str) -> Route | Choice | RouteError:
        alias = self._settings.models.get(model)
        if alias is not None:
            return self._choice(model, alias.targets, alias.reference, alias.quality)
        if self.vllm_name and model in (self.vllm_name, f"{VLLM}:{self.vllm_name}"):
            return Route(VLLM, self.vllm_name)
        return self._vendor(model)

    def _vendor(self, model: str) -> Route | RouteError:
        price = self._prices.lookup(model)
        if price is None:
            return RouteError("unknown_model", unknown_model_message(model, self._prices.names()))
        if price.vendor not in self._backends:
            return RouteError(
                "no_backend",
                f"model {model!r} is served by {price.vendor!r}, and batchd has no "
                f"{price.vendor} backend configured; send these lines to a supported model",
            )
        return Route(price.vendor, model)

    def _choice(
        self,
        alias: str,
        targets: list[str],
        reference: str,
        quality: QualitySettings | None = None,
    ) -> Route | Choice | RouteError:
        routes = []
        for t in targets:
            kind, _, name = t.partition(":")
            if kind == VLLM:
                routes.append(Route(VLLM, name))
                continue
            r = self._vendor(name)
            if isinstance(r, RouteError):
                return RouteError(r.error_type, f"alias {alias!r}, target {t!r}: {r.message}")
            if r.backend != kind:
                return RouteError(
                    "bad_alias",
                    f"alias {alias!r}: the price book says {name!r} is served by "
                    f"{r.backend!r}, not {kind!r}; fix [models.{alias}].targets",
                )
            routes.append(r)
        if not reference:
            reference = next((r.model for r in routes if r.backend != VLLM), "")
        if quality is not None and reference:
            return self._guarded(alias, routes, reference, quality)
        if len(routes) == 1 and routes[0].backend != VLLM:
            return routes[0]  # nothing to choose: plans and runs exactly like its one target
        return Choice(alias, routes, reference)

    def _guarded(
        self, alias: str, routes: list[Route], reference: str, quality: QualitySettings
    ) -> Route | Choice | RouteError:
        """An alias with a quality guard: its reference is a column of the choice."""
        ref_col = next(
            (j for j, r in enumerate(routes) if r.backend != VLLM and r.model == reference), -1
        )
        if ref_col >= 0 and len(routes) == 1:
            return routes[0]  # its one target is the reference: nothing to guard
        reserve = ref_col < 0
        if reserve:
            ref = self._vendor(reference)
            if isinstance(ref, RouteError):
                return RouteError(
                    ref.error_type,
                    f"alias {alias!r}, reference {reference!r} (the quality guard sends "
                    f"samples to it): {ref.message}",
                )
            routes = [*routes, ref]
            ref_col = len(routes) - 1
        return Choice(alias, routes, reference, quality, ref_col, reserve)

    def baseline_model(self, model: str) -> str:
        """The realtime model whose list price is a line's baseline (DESIGN §3)."""
        route = self.route(model)
        if isinstance(route, Choice):
            return route.reference
        if isinstance(route, Route):
            return self.reference_of(route)
        return model

    def reference_of(self, route: Route) -> str:
        if route.backend == VLLM:
            return self._settings.backends.vllm.reference_model
        return route.model
