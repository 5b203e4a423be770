"""The one way a backend sends the request that creates a billed vendor object.

SDK retries are off for that request; batchd retries it here, so that the spend guard
(a lease check in distributed mode) runs immediately before every try: a process paused
inside a retry wait wakes, finds its lease gone and buys nothing. Only a refusal made
before any work (429 rate limit; Anthropic's 529 overloaded) is retried in place, after
its Retry-After; any other failure (5xx, a timeout: the object may exist) goes back to
the caller, whose next round reconciles with the vendor before creating again.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from batchd.backends.base import SpendGuard

T = TypeVar("T")

MAX_RETRY_AFTER_S = 60.0  # a longer Retry-After is not honoured (as the vendor SDKs do)
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 8.0


def retry_after_s(headers: Mapping[str, str], attempt: int) -> float:
    """The wait a 429 asks for (retry-after-ms, then retry-after), else a jittered backoff."""
    wait: float | None = None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            wait = float(raw) * scale
        except ValueError:  # retry-after may also be an HTTP date
            try:
                wait = email.utils.parsedate_to_datetime(raw).timestamp() - time.time()
            except (TypeError, ValueError):
                wait = None
        break
    if wait is not None and 0 <= wait <= MAX_RETRY_AFTER_S:
        return wait
    backoff = min(BACKOFF_BASE_S * 2**attempt, BACKOFF_MAX_S)
    return backoff * (1 - 0.25 * random.random())


async def create_once(
    send: Callable[[], Awaitable[T]],
    guard: SpendGuard,
    rate_limited: Callable[[Exception], Mapping[str, str] | None],
    max_retries: int,
) -> T:
    """`send()` (one request, no SDK retries) with `guard()` before every try.

    `rate_limited(exc)` gives the response headers of a 429, None for any other error.
    """
    attempt = 0
    while True:
        guard()
        try:
            return await send()
        except Exception as exc:
            headers = rate_limited(exc)
            if headers is None or attempt >= max_retries:
                raise
            wait_s = retry_after_s(headers, attempt)
        attempt += 1
        await asyncio.sleep(wait_s)
