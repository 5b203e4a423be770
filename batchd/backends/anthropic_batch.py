"""Anthropic Message Batches backend: messages.batches.create/retrieve/results/cancel/list.

Facts relied on (DESIGN §5): requests are sent inline (custom_id ^[a-zA-Z0-9_-]{1,64}$ -
batchd sends its own request keys, so any user id works), at most 100,000 requests and
256 MB; processing_status in_progress -> canceling -> ended; results only after `ended`,
in any order, streamed as JSONL; result types succeeded / errored / canceled / expired;
no batch metadata. So reconciliation (a crash or a failed create in `creating`) adopts a
batch only on proof: same request count, created near the intent, and its results name
exactly the chunk's request ids (batchd's own keys). A candidate still processing cannot show
its ids yet: the chunk waits for it to end rather than create a second batch or adopt a
foreign one (see find_existing).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import msgspec

from batchd.backends.base import (
    ChunkRejected,
    OwnershipUnproven,
    PollState,
    SpendGuard,
    TransientBackendError,
    VendorLostTrack,
    VendorRef,
    check_endpoint,
    check_key,
)
from batchd.backends.claude_messages import to_claude_params
from batchd.backends.claude_tools import answer_of
from batchd.backends.prompt_cache import plan_prompt_cache
from batchd.backends.purchase import create_once
from batchd.backends.responses_chat import as_chat
from batchd.config.pricing import PriceBook
from batchd.config.settings import AnthropicSettings
from batchd.errors import BatchdError
from batchd.outcome import CANCELED, EXPIRED, FAILED, SUCCEEDED, Outcome
from batchd.requests import Request

__all__ = ["AnthropicBatchBackend", "parse_result", "to_claude_params"]
from batchd.state.base import Chunk

NAME = "anthropic"
RETRYABLE_ERRORS = frozenset({"overloaded_error", "api_error"})
RECONCILE_SKEW_S = 600
# Claude stop reasons in the OpenAI words every result row uses.
FINISH_REASON = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}
_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()


class AnthropicBatchBackend:
    name = NAME

    def __init__(self, settings: AnthropicSettings, prices: PriceBook) -> None:
        self._settings = settings
        self._prices = prices
        self._client: Any = None
        # (chunk id, batch id) -> is that ended batch the chunk's: read once per process.
        self._verdicts: dict[tuple[str, str], bool] = {}

    def check_ready(self) -> None:
        check_key("ANTHROPIC_API_KEY", "Anthropic Message Batches API")
        check_endpoint(os.environ.get("ANTHROPIC_BASE_URL"), "ANTHROPIC_BASE_URL")

    @property
    def client(self) -> Any:
        if self._client is None:
            if not os.environ.get("ANTHROPIC_API_KEY"):
                raise BatchdError(
                    "ANTHROPIC_API_KEY is not set, so batchd cannot reach the Anthropic "
                    "Message Batches API.",
                    "Export your key (export ANTHROPIC_API_KEY=sk-ant-...) and submit again; "
                    "`batchd plan FILE` estimates the run without one.",
                )
            from anthropic import AsyncAnthropic

            self._client = AsyncAnthropic(
                max_retries=self._settings.max_retries, timeout=self._settings.timeout_s
            )
        return self._client

    def encode_line(self, vendor_id: str, request: Request) -> bytes:
        chat = as_chat(request, "Claude")  # a Responses request as chat; chat as it is
        params = to_claude_params(chat, self._settings.default_max_tokens)
        return _enc.encode({"custom_id": vendor_id, "params": params})

    def batch_requests(self, chunk: Chunk, data_path: str) -> list[dict[str, Any]]:
        """The chunk's requests as sent: grouped and prompt-cache marked when that pays."""
        with open(data_path, "rb") as f:
            requests = [_dec.decode(line) for line in f if line.strip()]
        price = self._prices.lookup(chunk.model)
        if chunk.prompt_cache and self._settings.prompt_cache and price is not None:
            requests = plan_prompt_cache(requests, price)
        return requests

    async def create(self, chunk: Chunk, data_path: str, guard: SpendGuard) -> VendorRef:
        requests = self.batch_requests(chunk, data_path)
        # SDK retries off: retried by create_once (429s only, guarded); a 5xx may have
        # created it, so the next round reconciles instead
        once = self.client.with_options(max_retries=0)
        async with _translated("create"):
            batch = await create_once(
                lambda: once.messages.batches.create(requests=requests),
                guard,
                _rate_limited,
                self._settings.max_retries,
            )
        return VendorRef(batch_id=batch.id)

    async def find_existing(
        self, chunk: Chunk, known_batch_ids: set[str], request_ids: Callable[[], set[str]]
    ) -> VendorRef | None:
        """The batch whose results name exactly this chunk's request ids, if one exists.

        Candidates: batches created since the intent (less clock skew) with the chunk's
        request count that no chunk has recorded. An ended candidate is read and adopted only
        when its ids are the chunk's; one still processing cannot be read yet, so while any
        is left (and none is proven) this raises OwnershipUnproven: the caller waits, bounded
        by the chunk's deadline, instead of creating a second batch.
        """
        since = (chunk.intent_at or 0) - RECONCILE_SKEW_S
        candidates: list[tuple[float, str, str]] = []
        async with _translated("list batches"):
            async for batch in self.client.messages.batches.list(limit=100):
                created = _epoch(batch.created_at)
                if created < since:
                    break
                c = batch.request_counts
                total = c.processing + c.succeeded + c.errored + c.canceled + c.expired
                if total == chunk.n_requests and batch.id not in known_batch_ids:
                    distance = abs(created - (chunk.intent_at or 0))
                    candidates.append((distance, batch.id, batch.processing_status))
        if not candidates:
            return None
        ids: set[str] | None = None
        unproven = []
        for _, batch_id, status in sorted(candidates):
            verdict = self._verdicts.get((chunk.chunk_id, batch_id))
            if verdict is None:
                try:
                    if status != "ended":
                        async with _translated("poll a candidate"):
                            got = await self.client.messages.batches.retrieve(batch_id)
                        status = got.processing_status
                    if status != "ended":
                        unproven.append(batch_id)
                        continue
                    ids = request_ids() if ids is None else ids
                    verdict = await self._holds_exactly(batch_id, ids)
                except VendorLostTrack:  # deleted meanwhile: whatever it was, it is gone
                    verdict = False
                self._verdicts[(chunk.chunk_id, batch_id)] = verdict
            if verdict:
                return VendorRef(batch_id=batch_id)
        if unproven:
            raise OwnershipUnproven(unproven)
        return None

    async def _holds_exactly(self, batch_id: str, ids: set[str]) -> bool:
        """True when the ended batch's results name each of `ids` once and nothing else."""
        seen: set[str] = set()
        async with _translated("read a candidate's ids"):
            decoder = await self.client.messages.batches.results(batch_id)
            async for item in decoder:
                if item.custom_id not in ids or item.custom_id in seen:
                    return False
                seen.add(item.custom_id)
        return seen == ids

    async def poll(self, chunk: Chunk) -> PollState:
        async with _translated("poll"):
            batch = await self.client.messages.batches.retrieve(chunk.vendor_batch_id)
        c = batch.request_counts
        return PollState(
            status=batch.processing_status,
            terminal=batch.processing_status == "ended",
            done=c.succeeded,
            failed=c.errored + c.canceled + c.expired,
            total=c.processing + c.succeeded + c.errored + c.canceled + c.expired,
        )

    async def results(self, chunk: Chunk) -> AsyncIterator[tuple[str, Outcome]]:
        async with _translated("read results"):
            decoder = await self.client.messages.batches.results(chunk.vendor_batch_id)
            async for item in decoder:  # streamed line by line, never held whole
                yield item.custom_id, parse_result(item.result, chunk.model)

    async def cancel(self, chunk: Chunk) -> None:
        """Cancel the chunk's recorded batch (recorded at create, or adopted on proof)."""
        from anthropic import BadRequestError, ConflictError, NotFoundError

        if not chunk.vendor_batch_id:
            return  # nothing of this chunk's is known: never cancel a guess
        async with _translated("cancel"):
            # An ended batch answers 4xx: nothing left to cancel.
            with contextlib.suppress(BadRequestError, ConflictError, NotFoundError):
                await self.client.messages.batches.cancel(chunk.vendor_batch_id)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def parse_result(result: Any, model: str) -> Outcome:
    kind = result.type
    if kind == "succeeded":
        msg = result.message
        usage = msg.usage
        cache_read = usage.cache_read_input_tokens or 0
        cache_write = usage.cache_creation_input_tokens or 0
        breakdown = getattr(usage, "cache_creation", None)
        write_1h = (breakdown.ephemeral_1h_input_tokens or 0) if breakdown else 0
        text, tool_calls, forced = answer_of(msg.content)
        finish = FINISH_REASON.get(msg.stop_reason or "", msg.stop_reason)
        details = getattr(usage, "output_tokens_details", None)
        return Outcome(
            status=SUCCEEDED,
            model_used=msg.model or model,
            output_text=text,
            tool_calls=tool_calls,
            response_json=msg.model_dump_json(),
            # batchd's forced tool is the answer itself: it ended as a plain answer would
            finish_reason="stop" if forced and finish == "tool_calls" else finish,
            reasoning_tokens=(getattr(details, "thinking_tokens", 0) or 0) if details else 0,
            input_tokens=usage.input_tokens + cache_read + cache_write,
            cached_input_tokens=cache_read,
            cache_write_tokens=cache_write,
            cache_write_1h_tokens=write_1h,
            output_tokens=usage.output_tokens,
            request_id=msg.id,  # the vendor's message id
        )
    if kind == "errored":
        err = result.error.error
        return Outcome(
            status=FAILED,
            error_type=err.type,
            error_message=err.message,
            retryable=err.type in RETRYABLE_ERRORS,
        )
    if kind == "expired":
        return Outcome(
            status=EXPIRED,
            error_type="expired",
            error_message="the batch expired before this request ran",
            retryable=True,
        )
    return Outcome(status=CANCELED, error_type="canceled", error_message="run canceled")


def _rate_limited(exc: Exception) -> Any:
    """The headers of a 429 or a 529 (refused before any work: safe to send again), else None."""
    import anthropic

    if isinstance(exc, anthropic.APIStatusError) and exc.status_code in (429, 529):
        return exc.response.headers
    return None


@asynccontextmanager
async def _translated(action: str) -> AsyncIterator[None]:
    """SDK errors (after the SDK's own retries with backoff) -> batchd's three kinds."""
    import anthropic

    try:
        yield
    except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as exc:
        raise BatchdError(
            f"Anthropic refused the API key during {action} (HTTP {exc.status_code}).",
            "Check ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL), then run the same "
            "`batchd submit` again: the run resumes.",
        ) from exc
    except anthropic.BadRequestError as exc:
        raise ChunkRejected(f"Anthropic rejected the {action}: {exc.message}") from exc
    except anthropic.APIStatusError as exc:
        if exc.status_code in (404, 410):
            raise VendorLostTrack(
                f"Anthropic no longer knows it ({action}): {exc.message}"
            ) from exc
        raise TransientBackendError(f"{action}: {exc}") from exc
    except anthropic.APIConnectionError as exc:
        raise TransientBackendError(f"{action}: {exc}") from exc
