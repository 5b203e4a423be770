"""Vendor batch turnaround as data: how long a batch takes from submit to end, per percentile.

Each ended vendor batch adds one sample (submit -> end seconds) per vendor and model to the
planner's observations as a log-scale histogram (`turn|<vendor>|<model>|<bucket>` =
(sum of seconds, batches); ten buckets per decade), so runs add to it like every other
ratio. The planner asks for one percentile (`planner.turnaround_percentile`, default 90):

1. `planner.turnaround_s` when set (settings override every vendor);
2. the measured histogram once `MIN_MEASURED` batches of that vendor and model ended
   (the percentile's bucket's upper edge: conservative by at most one bucket, ~26%);
3. the prior from public nightly probes (DESIGN §5) for the vendor;
4. `planner.vendor_window_h` when there is neither (a provider without a prior).
"""

from __future__ import annotations

import math

from batchd.config.settings import Settings

MIN_MEASURED = 3  # batches of one vendor and model before the measurements replace the prior
BUCKETS_PER_DECADE = 10
TURNAROUND_PREFIX = "turn|"

# Public nightly probes of small jobs, about 20 runs each (2026): (p50, p90, p99) seconds.
PRIOR_S: dict[str, tuple[float, float, float]] = {
    "anthropic": (120.0, 282.0, 1242.0),
    "gemini": (169.0, 312.0, 472.0),
    "mistral": (63.0, 56_400.0, 72_180.0),
    "openai": (155.0, 2092.0, 21_840.0),
}
_PRIOR_POINTS = (50.0, 90.0, 99.0)


def bucket_of(seconds: float) -> int:
    return math.floor(math.log10(max(seconds, 1.0)) * BUCKETS_PER_DECADE)


def bucket_upper_s(bucket: int) -> float:
    return float(10 ** ((bucket + 1) / BUCKETS_PER_DECADE))


def turnaround_key(vendor: str, model: str, seconds: float) -> str:
    return f"{TURNAROUND_PREFIX}{vendor}|{model}|{bucket_of(seconds):03d}"


def lines_key(vendor: str, model: str) -> str:
    return f"turnlines|{vendor}|{model}"  # (lines, batches)


def tokens_key(vendor: str, model: str) -> str:
    return f"turntok|{vendor}|{model}"  # (tokens, batches)


def prior_s(vendor: str, percentile: float) -> float | None:
    """The probes' turnaround at `percentile`, linear between p50, p90 and p99."""
    points = PRIOR_S.get(vendor)
    if points is None:
        return None
    if percentile <= _PRIOR_POINTS[0]:
        return points[0]
    for i in range(1, len(_PRIOR_POINTS)):
        p0, p1 = _PRIOR_POINTS[i - 1], _PRIOR_POINTS[i]
        if percentile <= p1:
            return points[i - 1] + (points[i] - points[i - 1]) * (percentile - p0) / (p1 - p0)
    return points[-1]


def measured_s(
    sums: dict[str, tuple[float, float]], vendor: str, model: str, percentile: float
) -> tuple[float | None, int]:
    """(turnaround at `percentile` from the histogram, batches measured)."""
    prefix = f"{TURNAROUND_PREFIX}{vendor}|{model}|"
    buckets = sorted(
        (int(k[len(prefix) :]), round(den))
        for k, (_, den) in sums.items()
        if k.startswith(prefix) and den > 0
    )
    n = sum(count for _, count in buckets)
    if n == 0:
        return None, 0
    rank = max(math.ceil(percentile / 100.0 * n), 1)
    seen = 0
    for bucket, count in buckets:
        seen += count
        if seen >= rank:
            return bucket_upper_s(bucket), n
    return bucket_upper_s(buckets[-1][0]), n


def turnaround_s(
    settings: Settings, sums: dict[str, tuple[float, float]], vendor: str, model: str
) -> tuple[float, str]:
    """(seconds a batch of this vendor and model is planned to take, where that came from)."""
    p = settings.planner
    if p.turnaround_s is not None:
        return p.turnaround_s, "settings"
    measured, n = measured_s(sums, vendor, model, p.turnaround_percentile)
    if measured is not None and n >= MIN_MEASURED:
        return measured, f"measured ({n} batches)"
    prior = prior_s(vendor, p.turnaround_percentile)
    if prior is not None:
        return prior, "prior"
    return p.vendor_window_h * 3600.0, "vendor_window_h"
