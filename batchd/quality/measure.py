"""A run's quality guard at finalize: each shadow sample or probe scored against the
reference's answer, summed per alias and target with a Wilson 95% interval, written as
quality.parquet, and added to the running figures in the observations store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from batchd.backends.vllm.pooling_embedder import open_vllm_embedder
from batchd.cache.embedders import open_embedder
from batchd.config.cache_settings import VLLM_PREFIX
from batchd.config.quality import QualitySettings
from batchd.config.settings import Settings
from batchd.errors import BatchdError
from batchd.outcome import SUCCEEDED, Outcome
from batchd.planning.gate import PROBE_TAG, Sums, is_gated, measured, quality_key, wilson
from batchd.planning.shadows import PAIRS_PATH, Pair, PairsFile, read_pairs
from batchd.quality.judging import JUDGE_TAG
from batchd.quality.metrics import Score, score_pairs
from batchd.quality.verdicts import parse_verdict

log = logging.getLogger("batchd.quality")


def load_embedder(target: str) -> Callable[[list[str]], Any]:
    """The embedding metric's embed(texts) -> float32 (n, d) L2-normalized, for an
    `embedding` setting ("local:<dir>" or "vllm:<dir>"; the same embedders, and the same
    one engine per directory, as the semantic cache)."""
    if target.startswith(VLLM_PREFIX):
        return open_vllm_embedder(target[len(VLLM_PREFIX) :]).embed
    return open_embedder(target).embed


Lookup = Callable[[list[bytes]], dict[bytes, Outcome]]

QUALITY_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("alias", pa.string()),
        ("target", pa.string()),  # backend:model compared with the reference
        ("reference", pa.string()),
        ("metric", pa.string()),
        ("samples", pa.int64()),  # scored pairs in this run
        ("agreed", pa.int64()),
        ("agreement", pa.float64()),  # NULL: no samples
        ("ci_low", pa.float64()),  # Wilson 95% interval of this run's agreement
        ("ci_high", pa.float64()),
        ("unscored", pa.int64()),  # a side failed or could not be judged (no label, ...)
        ("unparsable_verdicts", pa.int64()),  # judge: answers that were not a strict verdict
        ("probes", pa.int64()),  # of the pairs, lines of a gated target served by the reference
        ("field_agreement", pa.float64()),  # json: share of top-level fields that agree
        ("min_agreement", pa.float64()),
        ("gated_in_run", pa.bool_()),  # gated when this run was planned (probe lines only)
        ("total_samples", pa.int64()),  # over every run so far, this one included
        ("total_agreed", pa.int64()),
        ("total_ci_low", pa.float64()),
        ("total_ci_high", pa.float64()),
        ("gated", pa.bool_()),  # gated for the next runs (total interval below min_agreement)
        ("guard_cost_usd", pa.float64()),  # what the extra lines (shadows, probes) cost
    ]
)


class _Group:
    def __init__(self, pair: Pair) -> None:
        self.reference = pair.reference
        self.texts: list[tuple[str, str]] = []
        self.verdicts: list[bool] = []  # judge: the parsed verdicts
        self.unparsable = 0
        self.unscored = 0
        self.probes = 0
        self.guard_cost_usd = 0.0


def _sides(p: Pair) -> tuple[bytes, bytes]:
    """(routed answer's key, reference answer's key) of a pair."""
    tagged = p.key + p.tag
    return (tagged, p.key) if p.tag == PROBE_TAG else (p.key, tagged)


def measure(
    run_id: str,
    pairs: PairsFile,
    lookup: Lookup,
    settings: Settings,
    sums_before: Sums,
    embed: Callable[[str], Any] = load_embedder,
) -> tuple[pa.Table, Sums]:
    """The run's quality table and the (agreed, samples) sums it adds to the store."""
    keys = [k for p in pairs.pairs for k in (p.key, p.key + p.tag, p.key + JUDGE_TAG)]
    outcomes = lookup(keys) if keys else {}
    groups: dict[tuple[str, str], _Group] = {}
    for p in pairs.pairs:
        g = groups.get((p.alias, p.target))
        if g is None:
            g = groups[(p.alias, p.target)] = _Group(p)
        extra = outcomes.get(p.key + p.tag)
        g.guard_cost_usd += extra.cost_usd if extra is not None else 0.0
        g.probes += p.tag == PROBE_TAG
        routed, ref = (outcomes.get(k) for k in _sides(p))
        a, b = _text(routed), _text(ref)
        if a is None or b is None:
            g.unscored += 1
        elif _quality(settings, p.alias).metric == "judge":
            _judged(g, outcomes.get(p.key + JUDGE_TAG))
        else:
            g.texts.append((a, b))
    for alias, targets in pairs.gated.items():
        for t in targets:
            groups.setdefault((alias, t), _Group(Pair(b"", b"", alias, t, "")))
    rows, sums = [], {}
    for (alias, target), g in sorted(groups.items()):
        q = _quality(settings, alias)
        scores = [Score(agreed=v) for v in g.verdicts] if q.metric == "judge" else []
        scores = scores or _scores(q, g.texts, embed)
        scored = [s for s in scores if s.agreed is not None]
        agreed = sum(1 for s in scored if s.agreed)
        n = len(scored)
        if n:
            sums[quality_key(alias, target, q.metric)] = (float(agreed), float(n))
        before_agreed, before_n = measured(sums_before, alias, target, q.metric)
        total_agreed, total_n = before_agreed + agreed, before_n + n
        lo, hi = wilson(agreed, n)
        tlo, thi = wilson(total_agreed, total_n)
        rows.append(
            {
                "run_id": run_id,
                "alias": alias,
                "target": target,
                "reference": g.reference or _reference(settings, alias),
                "metric": q.metric,
                "samples": n,
                "agreed": agreed,
                "agreement": agreed / n if n else None,
                "ci_low": lo if n else None,
                "ci_high": hi if n else None,
                "unscored": g.unscored + len(scores) - n,
                "unparsable_verdicts": g.unparsable,
                "probes": g.probes,
                "field_agreement": _field_share(scored),
                "min_agreement": q.min_agreement,
                "gated_in_run": target in pairs.gated.get(alias, []),
                "total_samples": total_n,
                "total_agreed": total_agreed,
                "total_ci_low": tlo if total_n else None,
                "total_ci_high": thi if total_n else None,
                "gated": is_gated(total_agreed, total_n, q.min_agreement),
                "guard_cost_usd": g.guard_cost_usd,
            }
        )
    return pa.Table.from_pylist(rows, schema=QUALITY_SCHEMA), sums


def _judged(g: _Group, judge: Outcome | None) -> None:
    """A judge's answer for a pair: a verdict, unparsable, or unscored (no answer)."""
    if judge is not None:
        g.guard_cost_usd += judge.cost_usd
    text = _text(judge)
    if text is None:
        g.unscored += 1
        return
    verdict = parse_verdict(text)
    if verdict is None:
        g.unparsable += 1
    else:
        g.verdicts.append(verdict)


def _text(o: Outcome | None) -> str | None:
    """The answer's text, None unless it succeeded."""
    return o.output_text if o is not None and o.status == SUCCEEDED else None


def _quality(settings: Settings, alias: str) -> QualitySettings:
    a = settings.models.get(alias)
    return a.quality if a is not None and a.quality is not None else QualitySettings()


def _reference(settings: Settings, alias: str) -> str:
    a = settings.models.get(alias)
    return a.reference if a is not None else ""


def _scores(
    q: QualitySettings, texts: list[tuple[str, str]], embed: Callable[[str], Any]
) -> list[Score]:
    """The pairs' scores; all unscored (with a warning) when the metric's model cannot load:
    the run's answers are paid for and its results must still be written."""
    if not texts:
        return []
    try:
        return score_pairs(q, texts, embed(q.embedding) if q.metric == "embedding" else None)
    except BatchdError as exc:
        log.warning("quality guard: %s %s; its pairs count as unscored", exc, exc.hint)
        return [Score(agreed=None) for _ in texts]


def _field_share(scored: list[Score]) -> float | None:
    fields = sum(s.fields for s in scored)
    return sum(s.fields_agreed for s in scored) / fields if fields else None


def run_quality(
    run_id: str,
    read_pairs_file: Callable[[str], bytes | None],
    lookup: Lookup,
    settings: Settings,
    sums_before: Sums,
) -> tuple[pa.Table, Sums] | None:
    """The run's quality table and sums; None when it sent no guard lines and gated nothing."""
    data = read_pairs_file(PAIRS_PATH)
    if data is None:
        return None
    return measure(run_id, read_pairs(data), lookup, settings, sums_before)
