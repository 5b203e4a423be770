"""What batchd knows: `batchd models` (the price book) and `batchd settings` (the effective
settings and where each value came from)."""

from __future__ import annotations

import sys
from typing import Annotated

import msgspec
import typer
from rich.table import Table

from batchd.cli.common import out
from batchd.config.explain import explain
from batchd.config.pricing import load_price_book
from batchd.config.settings import load_settings


def models(
    match: Annotated[
        str | None,
        typer.Argument(metavar="[MATCH]", help="Show only models whose name or vendor has this."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document, for scripts.")
    ] = False,
) -> None:
    """List the models batchd can price (the price book and batchd.toml overrides).

    Prices are USD per 1M tokens at the realtime list price; vendor batches bill
    batch_discount of them.
    """
    book = load_price_book(load_settings())
    rows = [
        p
        for p in sorted(book.models(), key=lambda p: (p.vendor, p.model))
        if not match or match.lower() in p.model.lower() or match.lower() in p.vendor.lower()
    ]
    if as_json:
        doc = {"price_book_version": book.version, "models": [msgspec.to_builtins(p) for p in rows]}
        sys.stdout.write(msgspec.json.encode(doc).decode() + "\n")
        return
    t = Table("model", "vendor", "in $/M", "out $/M", "batch", "as of")
    for p in rows:
        t.add_row(
            p.model,
            p.vendor,
            f"{p.input_per_mtok:g}",
            f"{p.output_per_mtok:g}",
            f"{p.batch_discount:.0%}",
            p.as_of,
        )
    out.print(t)
    out.print(f"{len(rows)} models, price book {book.version}")


def settings(
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document, for scripts.")
    ] = False,
) -> None:
    """Show the effective settings and where each value came from.

    Sources, lowest first: default < file (batchd.toml or BATCHD_CONFIG) < environment
    (BATCHD_<KEY>, e.g. BATCHD_OPENAI_MAX_RETRIES for openai.max_retries). Secrets are masked.
    """
    rows = [r for r in explain() if not r.key.startswith("prices.")]
    if as_json:
        sys.stdout.write(msgspec.json.encode(rows).decode() + "\n")
        return
    t = Table("setting", "value", "from")
    for r in rows:
        t.add_row(r.key, str(r.value), r.source)
    out.print(t)
