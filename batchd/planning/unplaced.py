"""The failed outcomes of requests the planner could not place: no target finishes them
before their deadline, or the vLLM target they went to has no backend in this batchd."""

from __future__ import annotations

from datetime import UTC, datetime

from batchd.config.settings import Settings
from batchd.outcome import FAILED, Outcome
from batchd.planning.estimates import MIN_SYNC_S, VLLM, Planner, TargetSet


def unmeetable(ts: TargetSet, deadline_at: float, settings: Settings, planner: Planner) -> Outcome:
    when = datetime.fromtimestamp(deadline_at, tz=UTC).isoformat()
    return Outcome(
        status=FAILED,
        backend="none",
        error_type="deadline_unmeetable",
        error_message=(
            f"no target of {ts.name!r} can finish this request before its "
            f"deadline {when}: {_turnaround_words(ts, settings, planner)}, the GPU windows "
            "before it are full or too short, and no synchronous tier can "
            f"(fallback {settings.fallback!r}; a call needs "
            f"{MIN_SYNC_S:g} s); give a later deadline (--within, --deadline or "
            "the line's deadline), or --fallback realtime"
        ),
    )


def no_vllm_outcome() -> Outcome:
    return Outcome(
        status=FAILED,
        backend="none",
        error_type="no_backend",
        error_message=(
            "the planner placed this request on vLLM, and this batchd has no "
            "vLLM worker backend; drop the vllm target from the alias or run "
            "a batchd with the GPU worker"
        ),
    )


def _turnaround_words(ts: TargetSet, settings: Settings, planner: Planner) -> str:
    pct = settings.planner.turnaround_percentile
    parts = []
    for backend, model in ts.targets:
        if backend == VLLM:
            continue
        took_s = planner.ready_at(backend, model) - planner.now
        source = planner.turnaround[f"{backend}:{model}"][1]
        parts.append(f"{backend}:{model} batches take {took_s / 60:.1f} min (p{pct:g}, {source})")
    return "; ".join(parts) or "no vendor target"
