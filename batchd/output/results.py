"""Result rows (DESIGN §3): Parquet schema, row assembly, cost summary, OpenAI-format export.

Finalize joins the lines parts (one row per input line, in input order) with the
outcomes of the unique requests, by request key, in batches.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from functools import reduce
from operator import attrgetter
from typing import Any, BinaryIO

import msgspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from batchd.config.pricing import PER_MTOK, PriceBook, Usage
from batchd.intake.ingest import CACHE_EXACT, CACHE_IN_RUN, CACHE_NONE, CACHED
from batchd.outcome import FAILED, INVALID, SUCCEEDED, Outcome

_TS = pa.timestamp("us", tz="UTC")

RESULTS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("line_no", pa.int64()),
        ("custom_id", pa.string()),
        ("request_key", pa.string()),
        ("tenant", pa.string()),
        ("tags", pa.map_(pa.string(), pa.string())),
        ("model_requested", pa.string()),
        ("model_used", pa.string()),
        ("backend", pa.string()),
        ("tier", pa.string()),  # batch | flex | realtime | gpu; NULL: not served by this run
        ("status", pa.string()),
        ("cache", pa.string()),
        ("output_text", pa.string()),
        ("response_json", pa.string()),
        ("finish_reason", pa.string()),
        ("error_type", pa.string()),
        ("error_message", pa.string()),
        ("input_tokens", pa.int64()),
        ("cached_input_tokens", pa.int64()),
        ("cache_write_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("cost_usd", pa.float64()),
        ("baseline_cost_usd", pa.float64()),
        ("gpu_seconds", pa.float64()),
        ("submitted_at", _TS),
        ("completed_at", _TS),
    ]
)

COSTS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("backend", pa.string()),
        ("model", pa.string()),
        ("requests", pa.int64()),
        ("succeeded", pa.int64()),
        ("not_succeeded", pa.int64()),
        ("cache_hits", pa.int64()),
        ("in_run_hits", pa.int64()),
        ("input_tokens", pa.int64()),
        ("cached_input_tokens", pa.int64()),
        ("cache_write_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("cost_usd", pa.float64()),
        ("baseline_cost_usd", pa.float64()),
        ("savings_usd", pa.float64()),
        ("prompt_cache_savings_usd", pa.float64()),
        ("cache_saved_input_tokens", pa.int64()),  # not billed: answered from the cache
        ("cache_saved_output_tokens", pa.int64()),
        ("gpu_seconds", pa.float64()),
        ("price_book_version", pa.string()),
    ]
)

_SUM_FIELDS = (
    "cache_saved_input_tokens",
    "cache_saved_output_tokens",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "cost_usd",
    "baseline_cost_usd",
    "gpu_seconds",
)
_outcome_dec = msgspec.msgpack.Decoder(Outcome)
_json = msgspec.json.Encoder()
_json_dec = msgspec.json.Decoder()

MISSING_RESULT = Outcome(
    status=FAILED,
    error_type="no_result",
    error_message="batchd recorded no result for this request (internal error); resubmit the file",
)


class CostSummary:
    """Sums over result rows, grouped by backend and model: costs.parquet equals the row sums.

    Float sums are added row by row in input order (functools.reduce), so they are the very
    numbers a row-at-a-time sum gives."""

    def __init__(self, run_id: str, price_book_version: str) -> None:
        self._run_id = run_id
        self._version = price_book_version
        self._groups: dict[tuple[str, str], dict[str, Any]] = {}

    def add_rows(self, cols: dict[str, Any]) -> None:
        """One batch of result columns (numpy arrays or lists; `saved_*`, `prompt_cache_*`
        included), each row summed into its (backend, model used or requested) group."""
        backend = cols["backend"]
        used, requested = cols["model_used"], cols["model_requested"]
        model = [u or r or "" for u, r in zip(used, requested, strict=True)]
        for (b, m), rows in _groups(backend, model):
            g = self._groups.get((b, m))
            if g is None:
                g = self._groups[(b, m)] = {
                    "requests": 0,
                    "succeeded": 0,
                    "not_succeeded": 0,
                    "cache_hits": 0,
                    "in_run_hits": 0,
                    **dict.fromkeys(_SUM_FIELDS, 0),
                    "prompt_cache_savings_usd": 0.0,
                }
            succeeded = int((cols["status"][rows] == SUCCEEDED).sum())
            g["requests"] += len(rows)
            g["succeeded"] += succeeded
            g["not_succeeded"] += len(rows) - succeeded
            g["cache_hits"] += int((cols["cache"][rows] == CACHE_EXACT).sum())
            g["in_run_hits"] += int((cols["cache"][rows] == CACHE_IN_RUN).sum())
            for f in (*_SUM_FIELDS, "prompt_cache_savings_usd"):
                values = cols[f][rows]
                if values.dtype.kind == "f":
                    g[f] = reduce(operator.add, values.tolist(), g[f])
                else:
                    g[f] += int(values.sum())

    def total(self, field: str) -> float:
        return float(sum(g[field] for g in self._groups.values()))

    def table(self) -> pa.Table:
        rows = []
        for (backend, model), g in sorted(
            self._groups.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])
        ):
            rows.append(
                {
                    "run_id": self._run_id,
                    "backend": backend,
                    "model": model,
                    **g,
                    "savings_usd": g["baseline_cost_usd"] - g["cost_usd"],
                    "price_book_version": self._version,
                }
            )
        return pa.Table.from_pylist(rows, schema=COSTS_SCHEMA)


def _groups(*keys: list[Any]) -> list[tuple[tuple[Any, ...], npt.NDArray[np.intp]]]:
    """Row numbers per distinct key tuple, each in input order, groups by first row."""
    first: dict[tuple[Any, ...], int] = {}
    rows = zip(*keys, strict=True)
    ids = np.fromiter((first.setdefault(k, len(first)) for k in rows), np.intp, len(keys[0]))
    order = np.argsort(ids, kind="stable")
    bounds = np.searchsorted(ids[order], np.arange(len(first) + 1))
    return [(k, order[bounds[i] : bounds[i + 1]]) for k, i in first.items()]


# Outcome fields copied to result columns of the same name as they are (None: NULL). A new
# nullable column from the Outcome is one name here and its field in RESULTS_SCHEMA.
OUTCOME_COLUMNS = ("output_text", "response_json", "finish_reason", "error_type", "error_message")
_TOKENS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens")


class RowAssembler:
    """Lines-part batches in, result-row batches out (same order, same count), a column at a
    time: one Outcome chosen per row, then every column built from them in bulk."""

    def __init__(
        self,
        run_id: str,
        prices: PriceBook,
        lookup: Callable[[list[bytes]], dict[bytes, Outcome]],
        summary: CostSummary,
        baseline_model: Callable[[str], str] | None = None,
    ) -> None:
        """`baseline_model(requested)`: the realtime model priced as the line's baseline
        (an alias's reference model); by default the requested model itself."""
        self._run_id = run_id
        self._baseline_model = baseline_model or (lambda m: m)
        self._prices = prices
        self._lookup = lookup
        self.summary = summary
        self.status_counts: dict[str, int] = {}
        # per tier: lines, cost_usd, and batch_price_usd (the same usage at the batch price)
        self.tiers: dict[str, dict[str, float]] = {}
        self._rates: dict[str | None, tuple[float, float] | None] = {}  # per requested model

    def assemble(self, lines: pa.RecordBatch) -> pa.RecordBatch:
        c = lines.to_pydict()
        n = lines.num_rows
        keys, state, cache = c["request_key"], c["state"], c["cache"]
        wanted = [k for k, s in zip(keys, state, strict=True) if k is not None and s != CACHED]
        found = self._lookup(wanted) if wanted else {}
        outs = _outcomes(c, found)
        state_a, cache_a = np.array(state, dtype=object), np.array(cache, dtype=object)
        billed = cache_a == CACHE_NONE
        o = {f: list(map(attrgetter(f), outs)) for f in (*_TOKENS, *OUTCOME_COLUMNS)}
        tok = {f: np.array(o[f], dtype=np.int64) for f in _TOKENS}
        cost = np.array(list(map(attrgetter("cost_usd"), outs)), dtype=np.float64)
        gpu = np.array(list(map(attrgetter("gpu_seconds"), outs)), dtype=np.float64)
        in_run = cache_a == CACHE_IN_RUN
        cost[in_run], gpu[in_run] = 0.0, 0.0
        cols: dict[str, Any] = {
            "run_id": [self._run_id] * n,
            "line_no": c["line_no"],
            "custom_id": c["custom_id"],
            "request_key": [k.hex() if k else None for k in keys],
            "tenant": [t or None for t in c["tenant"]],
            "tags": c["tags"],
            "model_requested": [m or None for m in c["model_requested"]],
            "model_used": [o.model_used or None for o in outs],
            "backend": [o.backend or None for o in outs],
            "status": np.array([o.status for o in outs], dtype=object),
            "cache": cache_a,
            **{f: o[f] for f in OUTCOME_COLUMNS},
            "baseline_cost_usd": self._baselines(c["model_requested"], tok),
            "cost_usd": cost,
            "gpu_seconds": gpu,
            "submitted_at": [_ts(o.submitted_at) for o in outs],
            "completed_at": [_ts(o.completed_at) for o in outs],
            "cache_saved_input_tokens": np.where(billed, 0, tok["input_tokens"]),
            "cache_saved_output_tokens": np.where(billed, 0, tok["output_tokens"]),
        }
        served = (state_a != INVALID) & (state_a != CACHED)
        served_l = served.tolist()
        cols["tier"] = [served_tier(x) if s else None for x, s in zip(outs, served_l, strict=True)]
        for f in _TOKENS:
            cols[f] = np.where(billed, tok[f], 0)  # a cache answer billed nothing
        cols["prompt_cache_savings_usd"] = self._prompt_cache_savings(billed, outs, cols)
        self.summary.add_rows({**cols, "backend": np.array(cols["backend"], dtype=object)})
        for status, rows in _groups(cols["status"].tolist()):
            self.status_counts[status[0]] = self.status_counts.get(status[0], 0) + len(rows)
        self._count_tiers(cols)
        return pa.RecordBatch.from_pydict(
            {name: cols[name] for name in RESULTS_SCHEMA.names}, schema=RESULTS_SCHEMA
        )

    def _baselines(self, models: list[str | None], tok: dict[str, Any]) -> npt.NDArray[Any]:
        """Each row's realtime list price of its tokens on its baseline model (0: unpriced)."""
        out = np.zeros(len(models), dtype=np.float64)
        for (model,), rows in _groups(models):
            if model not in self._rates:
                price = self._prices.lookup(self._baseline_model(model)) if model else None
                self._rates[model] = (
                    None if price is None else (price.input_per_mtok, price.output_per_mtok)
                )
            rates = self._rates[model]
            if rates is None:
                continue
            i, o = tok["input_tokens"][rows], tok["output_tokens"][rows]
            value = (i * rates[0] + o * rates[1]) / PER_MTOK
            out[rows] = np.where((i == 0) & (o == 0), 0.0, value)
        return out

    def _prompt_cache_savings(
        self, billed: npt.NDArray[np.bool_], outs: list[Outcome], cols: dict[str, Any]
    ) -> npt.NDArray[np.float64]:
        """What the vendor's prompt cache saved on each row (negative: writes never reused)."""
        saved = np.zeros(len(outs), dtype=np.float64)
        marked = billed & ((cols["cached_input_tokens"] != 0) | (cols["cache_write_tokens"] != 0))
        for i in np.flatnonzero(marked).tolist():
            o = outs[i]
            price = self._prices.lookup(o.model_used)
            if price is not None:
                plain = Usage(o.input_tokens, 0, 0, o.output_tokens)
                saved[i] = self._prices.cost_usd(price, plain, batch=True) - o.cost_usd
        return saved

    def _count_tiers(self, cols: dict[str, Any]) -> None:
        for (tier,), rows in _groups(cols["tier"]):
            if tier is None:
                continue
            t = self.tiers.setdefault(tier, {"lines": 0, "cost_usd": 0.0, "batch_price_usd": 0})
            costs = cols["cost_usd"][rows].tolist()
            t["lines"] += len(rows)
            t["cost_usd"] = reduce(operator.add, costs, t["cost_usd"])
            at_batch = costs
            if tier == "realtime":
                pairs = zip(rows.tolist(), costs, strict=True)
                at_batch = [self._at_batch(cols, i, x) for i, x in pairs]
            t["batch_price_usd"] = reduce(operator.add, at_batch, t["batch_price_usd"])

    def _at_batch(self, cols: dict[str, Any], i: int, cost_usd: float) -> float:
        """A realtime row's usage at the batch price (its cost when unpriced)."""
        price = self._prices.lookup(cols["model_used"][i] or "")
        if price is None:
            return cost_usd
        usage = Usage(*(int(cols[f][i]) for f in _TOKENS))
        return self._prices.cost_usd(price, usage, batch=True) if cost_usd else 0.0


def _outcomes(c: dict[str, list[Any]], found: dict[bytes, Outcome]) -> list[Outcome]:
    """Each row's Outcome: its invalid reason, its cache answer, or its request's outcome."""
    outs = []
    for key, state, error_type, message, cached in zip(
        c["request_key"],
        c["state"],
        c["error_type"],
        c["error_message"],
        c["cached_outcome"],
        strict=True,
    ):
        if state == INVALID:
            o = Outcome(status=INVALID, error_type=error_type, error_message=message)
        elif state == CACHED:
            o = _outcome_dec.decode(cached)
            o.backend, o.cost_usd, o.gpu_seconds = "cache", 0.0, 0.0
        else:
            o = found.get(key) or MISSING_RESULT
        outs.append(o)
    return outs


def served_tier(o: Outcome) -> str | None:
    """How a line was served: its outcome's tier; vLLM work is `gpu`; None when not served."""
    if o.tier is not None:
        return o.tier
    if o.backend == "vllm" and o.status in (SUCCEEDED, FAILED):
        return "gpu"
    return None


def _ts(epoch_s: float | None) -> int | None:
    return None if epoch_s is None else int(epoch_s * 1_000_000)


def write_openai_jsonl(batch: pa.RecordBatch, out: BinaryIO) -> None:
    """The OpenAI batch output format, one line per input line, for existing consumers."""
    cols = batch.to_pydict()
    for i in range(batch.num_rows):
        status = cols["status"][i]
        body = cols["response_json"][i]
        line: dict[str, Any] = {
            "id": f"batchd-{cols['run_id'][i]}-{cols['line_no'][i]}",
            "custom_id": cols["custom_id"][i],
        }
        if status == SUCCEEDED and body is not None:
            line["response"] = {
                "status_code": 200,
                "request_id": None,
                "body": _json_dec.decode(body),
            }
            line["error"] = None
        else:
            line["response"] = None
            line["error"] = {
                "code": cols["error_type"][i] or status,
                "message": cols["error_message"][i] or status,
            }
        out.write(_json.encode(line) + b"\n")
