"""OpenAI Batch API backend: files.create + batches.create/retrieve/list/cancel.

Facts relied on (DESIGN §5): the output file holds successes, the error file
failures (including `batch_expired` lines); output order is not input order;
a batch can be `completed` with no output file; completed work of an expired or
cancelled batch is billed and kept.

Ownership: every batch carries metadata `batchd_run` and `batchd_chunk`, and its input file
is named `batchd-<chunk id>-<intent ms>.jsonl`; reconciliation adopts only a batch whose
metadata names this chunk and run, and deletes only input files named for this chunk's
interrupted attempt that no batch uses (never a foreign file).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec

from batchd.backends.base import (
    TOKEN_LIMIT_CODE,
    ChunkRejected,
    PollState,
    QuotaExceeded,
    SpendGuard,
    TransientBackendError,
    VendorLostTrack,
    VendorRef,
    check_endpoint,
    check_key,
    stated_limit_tokens,
)
from batchd.backends.openai_answers import answer_fields
from batchd.backends.purchase import create_once
from batchd.config.settings import OpenAISettings
from batchd.errors import BatchdError
from batchd.outcome import CANCELED, EXPIRED, FAILED, SUCCEEDED, Outcome
from batchd.requests import ENDPOINT_URLS, Request
from batchd.state.base import Chunk

NAME = "openai"
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
# Per-line HTTP statuses worth sending again (transient on the vendor's side).
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
# How far before the recorded intent a batch may appear to be created (clock skew).
RECONCILE_SKEW_S = 600

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()


def _line_prefix(vendor_id: str, endpoint: str) -> bytes:
    return (
        b'{"custom_id":'
        + _enc.encode(vendor_id)
        + b',"method":"POST","url":"'
        + ENDPOINT_URLS[endpoint].encode()
        + b'","body":'
    )


def upload_name(chunk: Chunk) -> str:
    """The input file's name: this chunk and this attempt (its intent time, in ms)."""
    return f"batchd-{chunk.chunk_id}-{int((chunk.intent_at or 0) * 1000)}.jsonl"


class OpenAIBatchBackend:
    name = NAME

    def __init__(self, settings: OpenAISettings) -> None:
        self._settings = settings
        self._client: Any = None
        self.name = NAME
        self._base_url: str | None = None
        self._key_env = "OPENAI_API_KEY"

    @classmethod
    def provider(
        cls, settings: OpenAISettings, name: str, base_url: str, api_key_env: str
    ) -> OpenAIBatchBackend:
        """Another OpenAI-compatible Batch API ([providers.<name>] in settings)."""
        backend = cls(settings)
        backend.name = name
        backend._base_url = base_url
        backend._key_env = api_key_env or f"{name.upper().replace('-', '_')}_API_KEY"
        return backend

    def check_ready(self) -> None:
        check_key(self._key_env, f"{self.name} Batch API")
        if self._base_url is not None:
            check_endpoint(self._base_url, f"providers.{self.name}.base_url")
        else:
            check_endpoint(os.environ.get("OPENAI_BASE_URL"), "OPENAI_BASE_URL")

    @property
    def client(self) -> Any:
        if self._client is None:
            key = os.environ.get(self._key_env)
            if not key:
                raise BatchdError(
                    f"{self._key_env} is not set, so batchd cannot reach the {self.name} "
                    "Batch API.",
                    f"Export the key (export {self._key_env}=...) and submit again; "
                    "`batchd plan FILE` estimates the run without one.",
                )
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(
                api_key=key,
                base_url=self._base_url,  # None: OPENAI_BASE_URL or OpenAI's own
                max_retries=self._settings.max_retries,
                timeout=self._settings.timeout_s,
            )
        return self._client

    def encode_line(self, vendor_id: str, request: Request) -> bytes:
        return _line_prefix(vendor_id, request.endpoint) + _enc.encode(request.body) + b"}"

    def line_bytes(self, vendor_id: str, endpoint: str, body_bytes: int) -> int:
        """`encode_line`'s length for a body whose JSON is `body_bytes` long (a plan's lines
        are measured, not written: intake.column_lane)."""
        return len(_line_prefix(vendor_id, endpoint)) + body_bytes + 1

    async def create(self, chunk: Chunk, data_path: str, guard: SpendGuard) -> VendorRef:
        async with _translated("create"):
            return await self._create(chunk, data_path, guard)

    async def _create(self, chunk: Chunk, data_path: str, guard: SpendGuard) -> VendorRef:
        # SDK retries off: retried by create_once (429s only, guarded); a 5xx may have
        # created it, so the next round reconciles (and deletes an orphan upload) instead
        once = self.client.with_options(max_retries=0)
        retries = self._settings.max_retries
        with open(data_path, "rb") as f:

            async def upload() -> Any:
                f.seek(0)  # a retried upload sends the whole file again
                return await once.files.create(file=(upload_name(chunk), f), purpose="batch")

            # an upload is not billed: no lease check (the create after it is guarded)
            file = await create_once(upload, _unguarded, _rate_limited, retries)
        batch = await create_once(
            lambda: once.batches.create(
                input_file_id=file.id,
                endpoint=ENDPOINT_URLS[chunk.endpoint],  # the url of every line of the chunk
                completion_window="24h",
                metadata={"batchd_run": chunk.run_id, "batchd_chunk": chunk.chunk_id},
            ),
            guard,
            _rate_limited,
            retries,
        )
        return VendorRef(batch_id=batch.id, file_id=file.id)

    async def find_existing(
        self, chunk: Chunk, known_batch_ids: set[str], request_ids: Callable[[], set[str]]
    ) -> VendorRef | None:
        async with _translated("list batches"):
            return await self._find_existing(chunk, known_batch_ids)

    async def _find_existing(self, chunk: Chunk, known_batch_ids: set[str]) -> VendorRef | None:
        since = (chunk.intent_at or 0) - RECONCILE_SKEW_S
        used_files: set[str] = set()
        async for batch in self.client.batches.list(limit=100):
            if batch.created_at < since:
                break
            used_files.add(batch.input_file_id)
            meta = batch.metadata or {}
            if (
                meta.get("batchd_chunk") == chunk.chunk_id
                and meta.get("batchd_run") == chunk.run_id
                and batch.id not in known_batch_ids
            ):
                return VendorRef(batch_id=batch.id, file_id=batch.input_file_id)
        await self._delete_orphans(chunk, used_files)
        return None

    async def _delete_orphans(self, chunk: Chunk, used_files: set[str]) -> None:
        """No batch of this chunk: delete the input file its interrupted attempt uploaded."""
        from openai import NotFoundError

        name = upload_name(chunk)
        since = (chunk.intent_at or 0) - RECONCILE_SKEW_S
        async for file in self.client.files.list(purpose="batch", order="desc"):
            if file.created_at < since:
                break  # newest first: the rest are older than this attempt
            if file.filename == name and file.id not in used_files:
                with contextlib.suppress(NotFoundError):
                    await self.client.files.delete(file.id)

    async def poll(self, chunk: Chunk) -> PollState:
        async with _translated("poll"):
            return await self._poll(chunk)

    async def _poll(self, chunk: Chunk) -> PollState:
        batch = await self.client.batches.retrieve(chunk.vendor_batch_id)
        counts = batch.request_counts
        return PollState(
            status=batch.status,
            terminal=batch.status in TERMINAL,
            done=counts.completed if counts else 0,
            failed=counts.failed if counts else 0,
            total=counts.total if counts else 0,
        )

    async def results(self, chunk: Chunk) -> AsyncIterator[tuple[str, Outcome]]:
        async with _translated("read results"):
            async for item in self._results(chunk):
                yield item

    async def _results(self, chunk: Chunk) -> AsyncIterator[tuple[str, Outcome]]:
        batch = await self.client.batches.retrieve(chunk.vendor_batch_id)
        if batch.status == "failed":
            # Validation failed: no line ran. The caller ends every line with this reason.
            errors = batch.errors.data if batch.errors and batch.errors.data else []
            message = "; ".join(
                f"{e.message} (line {e.line})" if e.line else str(e.message) for e in errors
            )
            capped = [str(e.message or "") for e in errors if e.code == TOKEN_LIMIT_CODE]
            if capped:  # over the enqueued-token cap: nothing ran, resubmitted later
                raise QuotaExceeded(capped[0], stated_limit_tokens(capped[0]))
            raise ChunkRejected(message or "the vendor rejected the batch file")
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            async with self.client.files.with_streaming_response.content(file_id) as resp:
                async for line in resp.iter_lines():
                    if line.strip():
                        yield parse_output_line(line.encode(), chunk.model)

    async def cancel(self, chunk: Chunk) -> None:
        """Cancel the chunk's recorded batch (recorded at create, or found by its metadata)."""
        from openai import BadRequestError, ConflictError

        if not chunk.vendor_batch_id:
            return  # nothing of this chunk's is known: never cancel a guess
        # A batch already terminal answers 400/409: nothing left to cancel.
        async with _translated("cancel"):
            with contextlib.suppress(BadRequestError, ConflictError):
                await self.client.batches.cancel(chunk.vendor_batch_id)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


def _unguarded() -> None:
    pass


def _rate_limited(exc: Exception) -> Any:
    """The headers of a 429 (nothing was created: safe to send again), else None."""
    import openai

    return exc.response.headers if isinstance(exc, openai.RateLimitError) else None


@asynccontextmanager
async def _translated(action: str) -> AsyncIterator[None]:
    """SDK errors (after the SDK's own retries with backoff) -> batchd's three kinds."""
    import openai

    try:
        yield
    except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
        raise BatchdError(
            f"OpenAI refused the API key during {action} (HTTP {exc.status_code}).",
            "Check OPENAI_API_KEY (and OPENAI_BASE_URL / the project's Batch API access), "
            "then run the same `batchd submit` again: the run resumes.",
        ) from exc
    except openai.BadRequestError as exc:
        raise ChunkRejected(f"OpenAI rejected the {action}: {exc.message}") from exc
    except openai.APIStatusError as exc:  # after the SDK's own retries of 429/5xx
        if exc.status_code in (404, 410):
            raise VendorLostTrack(f"OpenAI no longer knows it ({action}): {exc.message}") from exc
        raise TransientBackendError(f"{action}: {exc}") from exc
    except openai.APIConnectionError as exc:
        raise TransientBackendError(f"{action}: {exc}") from exc


def _error_fields(body: Any) -> tuple[str, str]:
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        kind = err.get("type") or err.get("code") or "vendor_error"
        return str(kind), str(err.get("message") or "")
    return "vendor_error", str(body)[:500]


def parse_output_line(raw: bytes, model: str) -> tuple[str, Outcome]:
    """One line of a batch output or error file -> (custom_id, Outcome)."""
    obj = _dec.decode(raw)
    custom_id = str(obj.get("custom_id"))
    error = obj.get("error")
    response = obj.get("response")
    if error and not response:
        code = str(error.get("code") or "vendor_error")
        message = str(error.get("message") or "")
        if code == "batch_expired":
            return custom_id, Outcome(
                status=EXPIRED, error_type=code, error_message=message, retryable=True
            )
        if code == "batch_cancelled":
            return custom_id, Outcome(status=CANCELED, error_type=code, error_message=message)
        return custom_id, Outcome(
            status=FAILED, error_type=code, error_message=message, retryable=True
        )
    status_code = int(response.get("status_code") or 0)
    body = response.get("body") or {}
    request_id = response.get("request_id")
    request_id = str(request_id) if request_id else None
    if status_code == 200 and body.get("object") == "response" and body.get("status") == "failed":
        status_code = 500  # a Responses answer that failed on the vendor's side
        body = {**body, "error": body.get("error") or {"message": "the response failed"}}
    if status_code != 200:
        kind, message = _error_fields(body)
        return custom_id, Outcome(
            status=FAILED,
            error_type=kind,
            error_message=f"HTTP {status_code}: {message}",
            retryable=status_code in RETRYABLE_STATUS,
            response_json=_enc.encode(body).decode(),
            request_id=request_id,
        )
    return custom_id, Outcome(
        status=SUCCEEDED,
        model_used=str(body.get("model") or model),
        response_json=_enc.encode(body).decode(),
        request_id=request_id,
        **answer_fields(body),
    )
