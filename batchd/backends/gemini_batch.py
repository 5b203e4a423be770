"""Gemini Batch API backend (the Gemini Developer API, not Vertex) on the google-genai SDK.

Wire format relied on (google-genai 3.x, batches.py / files.py / _api_client.py, and
ai.google.dev/gemini-api/docs/batch-mode):
- create: POST `models/{model}:batchGenerateContent` with `{"batch": {"displayName",
  "inputConfig": {"requests": {"requests": [{"request", "metadata"}]}} | {"fileName"}}}`;
  inline requests while the whole request stays under 20 MB, else a JSONL file of
  `{"key", "request"}` lines (batchd's chunk lines, `custom_id` renamed `key`), uploaded
  through the Files API (resumable upload, 2 GB a file)
  (paths under the SDK's API version: v1 by default in google-genai 3.x);
- get / list / cancel: `batches/{id}`, `batches?pageSize&pageToken` (`operations`),
  `batches/{id}:cancel`; the job is in `metadata`: `state` (BATCH_STATE_PENDING, _RUNNING,
  _SUCCEEDED, _FAILED, _CANCELLED, _EXPIRED; the SDK renames them JOB_STATE_*, both are
  read), `batchStats` (int64 counts, as strings), `output.inlinedResponses.inlinedResponses`
  (`{response | error, metadata}`) or `output.responsesFile` (JSONL of `{key, response |
  error}`), in any order: lines are joined back by batchd's key, never by position.
The batch calls go through the SDK's API client (its key, base URL, retries and errors)
with the REST bodies as they are, because the SDK's typed BatchJob drops `batchStats` and
re-shapes the vendor's answers; files use the SDK's own upload and download.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec

from batchd.backends.base import (
    ChunkRejected,
    PollState,
    SpendGuard,
    TransientBackendError,
    VendorLostTrack,
    VendorRef,
    check_endpoint,
    check_key,
)
from batchd.backends.gemini_translate import to_gemini_request
from batchd.backends.purchase import create_once
from batchd.backends.responses_chat import as_chat
from batchd.config.settings import GeminiSettings
from batchd.errors import BatchdError
from batchd.outcome import CANCELED, FAILED, SUCCEEDED, Outcome
from batchd.requests import Request
from batchd.state.base import Chunk

NAME = "gemini"
# The SDK takes GOOGLE_API_KEY over GEMINI_API_KEY when both are set (_api_client.py).
KEY_ENVS = ("GOOGLE_API_KEY", "GEMINI_API_KEY")
BASE_URL_ENV = "GOOGLE_GEMINI_BASE_URL"  # read by the SDK itself (_base_url.py)
DISPLAY_PREFIX = "batchd-"
STATES = {
    "PENDING": "pending",
    "RUNNING": "running",
    "SUCCEEDED": "succeeded",
    "FAILED": "failed",
    "CANCELLED": "cancelled",
    "EXPIRED": "expired",
}
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})
# Gemini finish reasons in the OpenAI words every result row uses.
FINISH_REASON = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
# Per-line google.rpc codes worth sending again (HTTP-style numbers, as the API reports them).
RETRYABLE_CODES = frozenset({408, 429, 500, 502, 503, 504, 4, 8, 13, 14})
MAX_LIST_PAGES = 50

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()


def display_name(chunk: Chunk) -> str:
    return DISPLAY_PREFIX + chunk.chunk_id


class GeminiBatchBackend:
    name = NAME

    def __init__(self, settings: GeminiSettings) -> None:
        self._settings = settings
        self._client: Any = None
        self._once: Any = None  # the client for creates: no SDK retries (see purchase.py)

    def check_ready(self) -> None:
        if not any(os.environ.get(k, "").strip() for k in KEY_ENVS):
            check_key("GEMINI_API_KEY", "Gemini Batch API (or set GOOGLE_API_KEY)")
        check_endpoint(os.environ.get("GOOGLE_GEMINI_BASE_URL"), "GOOGLE_GEMINI_BASE_URL")

    @property
    def client(self) -> Any:
        """The SDK's async client (`genai.Client(...).aio`), made on first use."""
        if self._client is None:
            key = next((os.environ[k] for k in KEY_ENVS if os.environ.get(k)), "")
            if not key:
                raise BatchdError(
                    "GEMINI_API_KEY (or GOOGLE_API_KEY) is not set, so batchd cannot reach "
                    "the Gemini Batch API.",
                    "Export your key (export GEMINI_API_KEY=...) and submit again; "
                    "`batchd plan FILE` estimates the run without one.",
                )
            from google import genai
            from google.genai import types

            def client(attempts: int) -> Any:
                options = types.HttpOptions(
                    timeout=int(self._settings.timeout_s * 1000),  # milliseconds
                    retry_options=types.HttpRetryOptions(attempts=attempts),
                )  # base_url: None = GOOGLE_GEMINI_BASE_URL or Google's own
                return genai.Client(api_key=key, vertexai=False, http_options=options).aio

            self._client = client(self._settings.max_retries + 1)
            self._once = client(1)
        return self._client

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, once: bool = False
    ) -> Any:
        sdk = self.client  # made on first use, with the create client beside it
        if once:
            sdk = self._once
        response = await sdk._api_client.async_request(method, path, body or {})
        return json.loads(response.body) if response.body else {}

    def encode_line(self, vendor_id: str, request: Request) -> bytes:
        """batchd's chunk line: `custom_id` (as every chunk file) and the Gemini request."""
        if request.fmt == "gemini":  # a Gemini-native request: sent as given
            return _enc.encode({"custom_id": vendor_id, "request": request.body})
        chat = as_chat(request, "Gemini")  # a Responses request as chat; chat as it is
        return _enc.encode({"custom_id": vendor_id, "request": to_gemini_request(chat)})

    async def create(self, chunk: Chunk, data_path: str, guard: SpendGuard) -> VendorRef:
        async with _translated("create"):
            return await self._create(chunk, data_path, guard)

    async def _create(self, chunk: Chunk, data_path: str, guard: SpendGuard) -> VendorRef:
        batch: dict[str, Any] = {"displayName": display_name(chunk)}
        file_name = None
        inline = self._inline_requests(data_path)
        if inline is not None:
            batch["inputConfig"] = {"requests": {"requests": inline}}
        else:
            file_name = await self._upload(chunk, data_path)
            batch["inputConfig"] = {"fileName": file_name}
        # sent once (a 5xx may have created it: the next round reconciles by display_name);
        # only a 429, which created nothing, is retried, with the spend guard before each try
        job = await create_once(
            lambda: self._call(
                "post",
                f"{_model_path(chunk.model)}:batchGenerateContent",
                {"batch": batch},
                once=True,
            ),
            guard,
            _rate_limited,
            self._settings.max_retries,
        )
        return VendorRef(batch_id=job["name"], file_id=file_name)

    def _inline_requests(self, data_path: str) -> list[dict[str, Any]] | None:
        """The chunk's lines as inline requests, or None when they would pass the size limit."""
        limit = self._settings.inline_max_bytes
        if os.path.getsize(data_path) > limit:
            return None
        inline = [{"request": r, "metadata": {"key": k}} for k, r in _chunk_requests(data_path)]
        return inline if len(_enc.encode(inline)) <= limit else None

    async def _upload(self, chunk: Chunk, data_path: str) -> str:
        """The chunk as Gemini's JSONL input file (`{"key", "request"}` lines), uploaded."""
        with tempfile.TemporaryDirectory(prefix="batchd-gemini-") as tmp:
            path = os.path.join(tmp, f"{chunk.chunk_id}.jsonl")
            with open(path, "wb") as out:
                for key, request in _chunk_requests(data_path):
                    out.write(_enc.encode({"key": key, "request": request}) + b"\n")
            uploaded = await self.client.files.upload(
                file=path,
                config={"mime_type": "application/jsonl", "display_name": display_name(chunk)},
            )
        return str(uploaded.name)

    async def find_existing(
        self, chunk: Chunk, known_batch_ids: set[str], request_ids: Callable[[], set[str]]
    ) -> VendorRef | None:
        """The batch whose display_name carries this chunk's id (newest first): batchd's own
        name on it is the proof of ownership, as metadata is for OpenAI."""
        want = display_name(chunk)
        token = ""
        async with _translated("list batches"):
            for _ in range(MAX_LIST_PAGES):
                query = "pageSize=100" + (f"&pageToken={token}" if token else "")
                page = await self._call("get", f"batches?{query}")
                for op in page.get("operations") or []:
                    meta = op.get("metadata") or {}
                    if meta.get("displayName") == want and op.get("name") not in known_batch_ids:
                        source = meta.get("inputConfig") or {}
                        return VendorRef(batch_id=op["name"], file_id=source.get("fileName"))
                token = page.get("nextPageToken") or ""
                if not token:
                    break
        return None

    async def poll(self, chunk: Chunk) -> PollState:
        async with _translated("poll"):
            job = await self._call("get", str(chunk.vendor_batch_id))
        meta = job.get("metadata") or {}
        status = job_state(meta.get("state"))
        stats = meta.get("batchStats") or {}
        return PollState(
            status=status,
            terminal=status in TERMINAL,
            done=int(stats.get("successfulRequestCount") or 0),
            failed=int(stats.get("failedRequestCount") or 0),
            total=int(stats.get("requestCount") or 0),
        )

    async def results(self, chunk: Chunk) -> AsyncIterator[tuple[str, Outcome]]:
        async with _translated("read results"):
            async for item in self._results(chunk):
                yield item

    async def _results(self, chunk: Chunk) -> AsyncIterator[tuple[str, Outcome]]:
        job = await self._call("get", str(chunk.vendor_batch_id))
        meta = job.get("metadata") or {}
        output = meta.get("output") or {}
        inlined = (output.get("inlinedResponses") or {}).get("inlinedResponses")
        if inlined is not None:
            for item in inlined:
                key = str((item.get("metadata") or {}).get("key"))
                yield key, parse_response(item, chunk.model)
        elif output.get("responsesFile"):
            with tempfile.TemporaryDirectory(prefix="batchd-gemini-") as tmp:
                path = os.path.join(tmp, "responses.jsonl")
                await self.client.files.download(file=output["responsesFile"], destination=path)
                with open(path, "rb") as f:  # streamed to disk, read line by line
                    for line in f:
                        if line.strip():
                            item = _dec.decode(line)
                            yield str(item.get("key")), parse_response(item, chunk.model)
        elif job_state(meta.get("state")) == "failed":
            err = job.get("error") or {}
            raise ChunkRejected(str(err.get("message") or "the vendor failed the batch"))

    async def cancel(self, chunk: Chunk) -> None:
        from google.genai import errors

        async with _translated("cancel"):
            # A batch already ended answers 400 (FAILED_PRECONDITION): nothing left to cancel.
            with contextlib.suppress(errors.ClientError):
                await self._call("post", f"{chunk.vendor_batch_id}:cancel")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def _chunk_requests(data_path: str) -> Iterator[tuple[str, Any]]:
    with open(data_path, "rb") as f:
        for line in f:
            if line.strip():
                item = _dec.decode(line)
                yield item["custom_id"], item["request"]


def _model_path(model: str) -> str:
    return model if model.startswith("models/") else f"models/{model}"


def job_state(state: Any) -> str:
    """BATCH_STATE_* (the API) or JOB_STATE_* (the SDK's names) -> batchd's lower-case word."""
    word = str(state or "").removeprefix("BATCH_STATE_").removeprefix("JOB_STATE_")
    return STATES.get(word, word.lower() or "unknown")


def parse_response(item: dict[str, Any], model: str) -> Outcome:
    """One inlined response or output-file line -> Outcome."""
    error = item.get("error")
    response = item.get("response")
    if error and not response:
        code = error.get("code")
        status = str(error.get("status") or code or "vendor_error")
        message = str(error.get("message") or "")
        if status == "CANCELLED":
            return Outcome(status=CANCELED, error_type="canceled", error_message=message)
        return Outcome(
            status=FAILED,
            error_type=status.lower(),
            error_message=f"{code}: {message}" if code else message,
            retryable=code in RETRYABLE_CODES,
            response_json=_enc.encode(error).decode(),
        )
    response = response or {}
    usage = response.get("usageMetadata") or {}
    candidates = response.get("candidates") or []
    first = candidates[0] if candidates else {}
    parts = (first.get("content") or {}).get("parts") or []
    text = "".join(
        p["text"] for p in parts if isinstance(p.get("text"), str) and not p.get("thought")
    )
    if not candidates:  # the prompt itself was blocked
        block = (response.get("promptFeedback") or {}).get("blockReason") or "no candidates"
        return Outcome(
            status=FAILED,
            error_type="content_filter",
            error_message=f"Gemini returned no answer: {block}",
            response_json=_enc.encode(response).decode(),
            input_tokens=int(usage.get("promptTokenCount") or 0),
        )
    reason = str(first.get("finishReason") or "")
    finish: str | None = FINISH_REASON.get(reason, reason.lower() or None)
    calls = tool_calls_of(parts)
    if calls:
        finish = "tool_calls"
    return Outcome(
        status=SUCCEEDED,
        model_used=str(response.get("modelVersion") or model),
        output_text=text or (None if calls else text),
        response_json=_enc.encode(response).decode(),
        finish_reason=finish,
        input_tokens=int(usage.get("promptTokenCount") or 0),  # includes the cached part
        cached_input_tokens=int(usage.get("cachedContentTokenCount") or 0),
        # Thinking tokens are billed at the output price (ai.google.dev/gemini-api/docs/pricing).
        output_tokens=int(usage.get("candidatesTokenCount") or 0)
        + int(usage.get("thoughtsTokenCount") or 0),
        reasoning_tokens=int(usage.get("thoughtsTokenCount") or 0),
        tool_calls=_enc.encode(calls).decode() if calls else None,
        request_id=response.get("responseId"),
    )


def tool_calls_of(parts: list[Any]) -> list[dict[str, Any]]:
    """Gemini's functionCall parts as OpenAI tool calls (arguments as JSON text)."""
    calls = []
    for i, part in enumerate(p for p in parts if isinstance(p.get("functionCall"), dict)):
        call = part["functionCall"]
        calls.append(
            {
                "id": str(call.get("id") or f"call_{i}"),
                "type": "function",
                "function": {
                    "name": str(call.get("name")),
                    "arguments": _enc.encode(call.get("args") or {}).decode(),
                },
            }
        )
    return calls


@asynccontextmanager
async def _translated(action: str) -> AsyncIterator[None]:
    """SDK errors (after the SDK's own retries with backoff) -> batchd's three kinds."""
    import httpx
    from google.genai import errors

    network: tuple[type[BaseException], ...] = (httpx.HTTPError, TimeoutError, ConnectionError)
    with contextlib.suppress(ImportError):  # the SDK uses aiohttp when it is installed
        import aiohttp

        network += (aiohttp.ClientError,)
    try:
        yield
    except errors.APIError as exc:
        if exc.code in (401, 403):
            raise BatchdError(
                f"Gemini refused the API key during {action} (HTTP {exc.code}).",
                "Check GEMINI_API_KEY / GOOGLE_API_KEY (and GOOGLE_GEMINI_BASE_URL), then run "
                "the same `batchd submit` again: the run resumes.",
            ) from exc
        if exc.code in (404, 410):
            raise VendorLostTrack(f"Gemini no longer knows it ({action}): {exc.message}") from exc
        if exc.code == 400:
            raise ChunkRejected(f"Gemini rejected the {action}: {exc.message}") from exc
        raise TransientBackendError(f"{action}: {exc}") from exc
    except network as exc:
        raise TransientBackendError(f"{action}: {exc!r}") from exc


def _rate_limited(exc: Exception) -> Any:
    """The response headers of a 429 (google-genai's APIError carries `code`), else None."""
    if getattr(exc, "code", None) != 429:
        return None
    response = getattr(exc, "response", None)
    return dict(getattr(response, "headers", None) or {})
