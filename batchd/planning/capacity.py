"""GPU capacity before a deadline: the GPU-seconds in the off-peak windows left until then.

Each window's last `admit_margin_s` is left out (the worker admits no new work then), and
a window counts `num_gpus x gpu_workers` GPU-seconds per second. No windows: always open.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from batchd.backends.vllm.windows import Windows
from batchd.config.settings import Settings

HORIZON_S = 92 * 86400.0  # capacity is counted this far ahead at most


def gpu_capacity_s(
    settings: Settings, now: float, deadlines: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """GPU-seconds usable between `now` and each deadline (same shape as `deadlines`)."""
    v = settings.backends.vllm
    gpus = v.num_gpus * settings.planner.gpu_workers
    # beyond the horizon, later deadlines add no capacity (and no dates out of range)
    ends = np.minimum(np.asarray(deadlines, dtype=np.float64), now + HORIZON_S)
    if not len(ends):
        return np.zeros(0)
    last = float(np.max(ends[np.isfinite(ends)], initial=now))
    if not v.windows:
        spans = [(now, float("inf"))]
    else:
        horizon = max(last, now) + 1.0
        w = Windows(v.windows, v.timezone)
        spans = w.open_spans(_dt(now), _dt(horizon))
    starts = np.array([s for s, _ in spans])
    stops = np.array([e for _, e in spans]) - (v.admit_margin_s if v.windows else 0.0)
    # capacity(d) = sum over windows of the open time before d, in GPU-seconds
    ends_col = np.where(np.isfinite(ends), ends, last)[:, None]
    per_span = np.clip(np.minimum(stops[None, :], ends_col) - starts[None, :], 0.0, None)
    return np.asarray(per_span.sum(axis=1) * gpus, dtype=np.float64)


def _dt(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)
