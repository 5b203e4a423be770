"""Vendor calls that create something billable, sent at most once per attempt.

The SDKs retry 5xx answers and timeouts on their own, and a create that the vendor carried
out but answered 500 (or whose answer was lost) would then be made a second time: two
batches, paid twice. So creates go out with the SDK's retries off. Only a 429 (the vendor
refused it, nothing was made) is sent again here, after the vendor's Retry-After; any other
failure reaches the caller, which stays in `creating` and reconciles before trying again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

MAX_WAIT_S = 60.0  # never sleep longer than this on one Retry-After
BASE_WAIT_S = 0.5  # without Retry-After: 0.5 s, 1 s, 2 s, ...


def retry_after_s(exc: Exception, attempt: int) -> float:
    """The wait a 429 asks for (retry-after-ms, then retry-after), else exponential."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return min(max(float(value) * scale, 0.0), MAX_WAIT_S)
        except ValueError:
            continue
    return float(min(BASE_WAIT_S * 2**attempt, MAX_WAIT_S))


async def create_once(call: Callable[[], Awaitable[T]], rate_limit_retries: int) -> T:
    """Run `call` (made with the SDK's retries off); repeat it only after a 429."""
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            if _status(exc) != 429 or attempt >= rate_limit_retries:
                raise
            await asyncio.sleep(retry_after_s(exc, attempt))
            attempt += 1


def _status(exc: Exception) -> Any:
    return getattr(exc, "status_code", None)
