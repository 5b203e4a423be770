"""What one synchronous call (the deadline guard's fallback) answered, in batchd's words.

A reply is either an `Outcome` (a success, or a final per-line failure such as a 400), or
one of the kinds the caller acts on: `SHED` (flex had no capacity: 429 on the flex tier),
`RATE_LIMITED` (429 elsewhere; `retry_after_s` from the vendor's headers), `SERVER` (5xx or
a dropped connection: retry with backoff) or `TIMEOUT` (no answer in the time given).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from batchd.outcome import Outcome

SHED = "shed"
RATE_LIMITED = "rate_limited"
SERVER = "server"
TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class SyncReply:
    outcome: Outcome | None = None
    kind: str = ""  # set when outcome is None
    retry_after_s: float | None = None
    detail: str = ""


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds the vendor asked to wait: retry-after-ms, else retry-after (seconds)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            return max(float(raw) * scale, 0.0)
        except ValueError:
            continue
    return None
