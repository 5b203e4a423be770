"""The price book (dated, sourced data) and the cost of a usage record.

Token convention (same for every backend): `input_tokens` is the whole prompt,
of which `cached_input_tokens` were read from the vendor's prompt cache and
`cache_write_tokens` were written to it; the rest is billed at the input price.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

import msgspec

from batchd.config.settings import PriceOverride, Settings
from batchd.config.suggest import did_you_mean
from batchd.errors import BatchdError

PER_MTOK = 1_000_000.0
_SNAPSHOT_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8})$")


@dataclass(frozen=True, slots=True)
class Price:
    model: str
    vendor: str
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float
    batch_discount: float
    cache_write_5m_multiplier: float
    cache_write_1h_multiplier: float
    min_cache_tokens: int
    as_of: str
    source: str


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    cache_write_1h_tokens: int = 0  # the part of cache_write_tokens at the 1-hour TTL price


class PriceBook:
    def __init__(self, prices: dict[str, Price], version: str) -> None:
        self._prices = prices
        self.version = version

    def lookup(self, model: str) -> Price | None:
        """Exact name first, then the name without a dated snapshot suffix."""
        price = self._prices.get(model)
        if price is None:
            base = _SNAPSHOT_SUFFIX.sub("", model)
            price = self._prices.get(base)
        return price

    def require(self, model: str) -> Price:
        price = self.lookup(model)
        if price is None:
            raise BatchdError(unknown_model_message(model, self._prices))
        return price

    def models(self) -> list[Price]:
        return list(self._prices.values())

    def names(self) -> list[str]:
        return list(self._prices)

    def cost_usd(self, price: Price, usage: Usage, *, batch: bool) -> float:
        """What the vendor bills for `usage`, at the batch price when `batch`."""
        plain = max(usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens, 0)
        write_1h = min(usage.cache_write_1h_tokens, usage.cache_write_tokens)
        write_5m = usage.cache_write_tokens - write_1h
        total = (
            plain * price.input_per_mtok
            + usage.cached_input_tokens * price.cached_input_per_mtok
            + write_5m * price.input_per_mtok * price.cache_write_5m_multiplier
            + write_1h * price.input_per_mtok * price.cache_write_1h_multiplier
            + usage.output_tokens * price.output_per_mtok
        ) / PER_MTOK
        return total * (price.batch_discount if batch else 1.0)

    def baseline_usd(self, price: Price, usage: Usage) -> float:
        """Realtime list price, no prompt cache, no batch discount."""
        return (
            usage.input_tokens * price.input_per_mtok + usage.output_tokens * price.output_per_mtok
        ) / PER_MTOK


def unknown_model_message(model: str, known: Iterable[str] = ()) -> str:
    return (
        f"model {model!r} is not in the price book.{did_you_mean(model, known)} "
        "`batchd models` lists the known models; to add one, put it in batchd.toml as "
        f'[prices."{model}"] with vendor, input_per_mtok and output_per_mtok '
        "(see README 'Prices')"
    )


def _price(model: str, o: PriceOverride) -> Price:
    return Price(
        model=model,
        vendor=o.vendor,
        input_per_mtok=o.input_per_mtok,
        output_per_mtok=o.output_per_mtok,
        cached_input_per_mtok=(
            o.cached_input_per_mtok if o.cached_input_per_mtok is not None else o.input_per_mtok
        ),
        batch_discount=o.batch_discount,
        cache_write_5m_multiplier=o.cache_write_5m_multiplier,
        cache_write_1h_multiplier=o.cache_write_1h_multiplier,
        min_cache_tokens=o.min_cache_tokens,
        as_of=o.as_of,
        source=o.source,
    )


def load_price_book(settings: Settings) -> PriceBook:
    """The bundled price book, with the lines of settings.prices added or replacing."""
    raw = tomllib.loads(
        resources.files("batchd.config").joinpath("data/prices.toml").read_text(encoding="utf-8")
    )
    prices = {
        model: _price(model, msgspec.convert(row, PriceOverride))
        for model, row in raw["models"].items()
    }
    prices.update({model: _price(model, o) for model, o in settings.prices.items()})
    version = str(raw["version"]) + ("+overrides" if settings.prices else "")
    return PriceBook(prices, version)
