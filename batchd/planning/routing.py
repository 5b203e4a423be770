"""Model name -> target(s): a concrete vendor model has one route, an alias a choice of
several (backend, model) targets with a reference model for its baseline price; and which
targets can serve a line (the capability table, `backends.capabilities`).
"""

from __future__ import annotations

import msgspec

from batchd.backends.base import BatchBackend
from batchd.backends.capabilities import ENDPOINTS, cannot, family_of, missing, needs
from batchd.config.pricing import PriceBook, unknown_model_message
from batchd.config.quality import QualitySettings
from batchd.config.settings import Settings
from batchd.planning.estimates import VLLM
from batchd.planning.tokens import TokenCounter
from batchd.requests import Request


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
    escalate_on: tuple[str, ...] = ()  # [models.<alias>].escalate_on (planning/escalation.py)


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
        self.vllm_names = frozenset(vllm.served_names())  # every model the GPU worker serves
        self.tokens = TokenCounter(vllm.model if vllm.enabled else "")
        self._memo: dict[str, Route | Choice | RouteError] = {}
        self._lacks: dict[tuple[str, str, frozenset[str]], list[str]] = {}
        self._capable: dict[frozenset[str], str] = {}

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
            got = self._choice(model, alias.targets, alias.reference, alias.quality)
            if isinstance(got, Choice):
                got.escalate_on = tuple(alias.escalate_on)
            return got
        served = model.removeprefix(f"{VLLM}:")
        if served in self.vllm_names:
            return Route(VLLM, served)
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
            engine = self._settings.backends.vllm.engine(route.model)
            return engine.reference_model if engine is not None else ""
        return route.model

    # --- capabilities ---------------------------------------------------------------------
    def lacks(self, asked: frozenset[str], route: Route) -> list[str]:
        """What of `asked` (capabilities.needs) this target cannot serve."""
        key = (route.backend, route.model, asked)
        hit = self._lacks.get(key)
        if hit is None:
            hit = self._lacks[key] = missing(
                asked, family_of(route.backend, route.model, self._settings)
            )
        return hit

    def refusal(self, request: Request, routes: list[Route], alias: str = "") -> RouteError:
        """The invalid line's reason: what it asked that no target can, and who can."""
        asked = needs(request)
        reasons = [cannot(self.target_name(r), self.lacks(asked, r)) for r in routes]
        lacked = {k for r in routes for k in self.lacks(asked, r)}
        kind = "unsupported_endpoint" if lacked & set(ENDPOINTS) else "unsupported_parameter"
        alt = self.capable_model(asked)
        if alt:
            hint = f"; {alt} can"
            if alias:
                hint += f" (add it to [models.{alias}].targets, or ask for it by name)"
        else:
            hint = "; no model batchd knows can: remove what it cannot serve"
        if alias:
            return RouteError(
                kind, f"no target of {alias!r} can serve this line: {'; '.join(reasons)}{hint}"
            )
        return RouteError(kind, reasons[0] + hint)

    def target_name(self, route: Route) -> str:
        return f"{VLLM}:{route.model}" if route.backend == VLLM else route.model

    def capable_model(self, asked: frozenset[str]) -> str:
        """The cheapest model batchd can reach that serves everything in `asked` ("" none)."""
        if asked not in self._capable:
            best: tuple[float, str] | None = None
            for p in self._prices.models():
                if p.vendor not in self._backends:
                    continue
                if self.lacks(asked, Route(p.vendor, p.model)):
                    continue
                rank = (p.input_per_mtok + p.output_per_mtok, p.model)
                best = rank if best is None or rank < best else best
            name = best[1] if best else ""
            if not name and self.vllm_name and not self.lacks(asked, Route(VLLM, self.vllm_name)):
                name = f"{VLLM}:{self.vllm_name}"
            self._capable[asked] = name
        return self._capable[asked]
