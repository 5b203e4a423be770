"""The failed outcomes of requests the planner could not place: no target finishes them
before their deadline, or the vLLM target they went to has no backend in this batchd."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from batchd.config.settings import Settings
from batchd.outcome import FAILED, Outcome
from batchd.planning.estimates import MIN_SYNC_S, UNMEETABLE, VLLM, Planner, TargetSet
from batchd.requests import KEY_BYTES


def failures(
    sets: list[TargetSet], has_vllm: bool, settings: Settings, planner: Planner
) -> list[tuple[bytes, Outcome]]:
    """(request key, failed outcome) of every decided request no target can run."""
    out: list[tuple[bytes, Outcome]] = []
    for ts in sets:
        if ts.direct:  # the ones decided and dropped during ingest (TargetSet.drop_decided)
            for i, d in ts.folded_failed.items():
                out.append((ts.failed_keys[i], unmeetable(ts, d, settings, planner)))
        gpu_cols = [j for j, (b, _) in enumerate(ts.targets) if b == VLLM]
        failed = ts.choice == UNMEETABLE
        if not has_vllm and gpu_cols:
            failed |= ts.choice == gpu_cols[0]
        for i in np.flatnonzero(failed).tolist():
            key = (
                ts.failed_keys[ts.base + i]
                if ts.direct
                else bytes(ts.keys[i * KEY_BYTES : (i + 1) * KEY_BYTES])
            )
            if ts.choice[i] == UNMEETABLE:
                o = unmeetable(ts, ts.deadline_at[i], settings, planner)
            else:
                o = no_vllm_outcome()
            out.append((key, o))
    return out


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
