"""The quality guard's arithmetic the planner needs: Wilson intervals, the gate, and the
deterministic pick of shadow samples by request key (DESIGN §4 "Quality").

Agreement is kept across runs in the observations store as (agreed, samples) sums under
`qual|<alias>|<backend:model>|<metric>` (both stores add them up), so a later plan sees
the running figure per alias, target and metric.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import numpy.typing as npt

Z95 = 1.959963984540054  # two-sided 95% normal quantile
Sums = dict[str, tuple[float, float]]
SHADOW_TAG = b"s"  # the reference's answer to a line routed elsewhere (key + tag)
PROBE_TAG = b"p"  # a gated target's answer to a line the reference serves


def wilson(agreed: float, samples: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of agreed/samples; (0, 1) with no samples."""
    if samples <= 0:
        return 0.0, 1.0
    p = min(max(agreed / samples, 0.0), 1.0)
    z2 = z * z
    denom = 1 + z2 / samples
    centre = (p + z2 / (2 * samples)) / denom
    half = z * math.sqrt(p * (1 - p) / samples + z2 / (4 * samples * samples)) / denom
    return max(centre - half, 0.0), min(centre + half, 1.0)


def quality_key(alias: str, target: str, metric: str) -> str:
    return f"qual|{alias}|{target}|{metric}"


def measured(sums: Sums, alias: str, target: str, metric: str) -> tuple[int, int]:
    """(agreed, samples) measured so far for one alias, target and metric."""
    agreed, samples = sums.get(quality_key(alias, target, metric), (0.0, 0.0))
    return round(agreed), round(samples)


def is_gated(agreed: float, samples: float, min_agreement: float) -> bool:
    """Gated while the whole 95% interval lies below `min_agreement`."""
    return samples > 0 and wilson(agreed, samples)[1] < min_agreement


def scores(keys: bytes, key_bytes: int) -> npt.NDArray[np.float64]:
    """Per request key a number in [0, 1) fixed by the key alone: reruns pick the same lines."""
    n = len(keys) // key_bytes
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        digest = hashlib.blake2b(
            keys[i * key_bytes : (i + 1) * key_bytes], digest_size=8, person=b"batchd-shadow"
        ).digest()
        out[i] = int.from_bytes(digest, "big") / 2.0**64
    return out


def pick(score: npt.NDArray[np.float64], fraction: float, at_least: int) -> npt.NDArray[np.bool_]:
    """Rows with score < fraction, topped up to `at_least` rows with the lowest scores."""
    chosen = score < fraction
    short = min(at_least, len(score)) - int(chosen.sum())
    if short > 0:
        rest = np.flatnonzero(~chosen)
        chosen[rest[np.argsort(score[rest], kind="stable")[:short]]] = True
    return chosen
