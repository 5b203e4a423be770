"""In-process emulator of OpenAI's Files + Batch API, for tests.

Drive it with the real ``openai`` SDK::

    with OpenAIBatchEmulator() as emu:
        client = openai.OpenAI(api_key="sk-test", base_url=emu.base_url)
        ...

Behaviour follows OpenAI's documented Files and Batch API: uploads (``POST /v1/files``),
file retrieval/content/deletion, batch creation with the documented request checks, input
validation (JSONL, unique ``custom_id``, ``POST``, ``url`` == endpoint, one model, 50,000 lines,
200 MB), the status machine ``validating -> in_progress -> finalizing -> completed`` (or
``failed`` / ``expired`` / ``cancelling -> cancelled``), output and error files in shuffled
order, and cursor pagination of ``GET /v1/batches``.

Batches advance one step every ``polls_per_step`` retrieves (``GET /v1/batches/{id}``), or only
when the test calls :meth:`OpenAIBatchEmulator.advance_all` in manual step mode.

Lines sent to ``/v1/embeddings``, ``/v1/responses`` and ``/v1/completions`` are answered as
:mod:`tests.emulators.openai_endpoints` describes (a batch file whose lines mix urls, or
whose url is not the batch's endpoint, fails validation with ``invalid_url``, as OpenAI's
does). Lines sent to ``/v1/chat/completions`` are answered deterministically; markers in the text of
the last user message select the outcome: ``[[error:400]]``, ``[[error:500]]`` and
``[[finish:content_filter]]``; ``[[finish:length@<model>]]`` cuts that model's answer to
one token with ``finish_reason: "length"`` (its output reached the cap first). Otherwise
the reply is ``"echo: " + text``, one token per word, truncated to
``max_completion_tokens`` / ``max_tokens`` (``finish_reason`` ``"length"``).
Tools, ``response_format``, ``n`` and ``reasoning_effort`` follow
:mod:`tests.emulators.openai_features`.

Synchronous ``POST /v1/chat/completions`` answers the same way, with ``service_tier`` as
OpenAI documents it: ``"flex"`` only on models in :attr:`OpenAIBatchEmulator.flex_models`
(else 400), and flex calls may be shed with 429 ``resource_unavailable`` (:class:`Faults`
``shed_flex``, or every flex call while ``flex_unavailable``); standard calls may be rate
limited (429 with ``retry-after``) or fail with 500. Every call is kept in :attr:`sync_calls`.

Enqueued-token limits (OpenAI's per-model cap on batch input tokens in progress): a model in
:attr:`OpenAIBatchEmulator.enqueued_token_limits` admits a batch at validation only while the
prompt tokens of its ``in_progress`` / ``finalizing`` batches plus the new batch's stay within
the limit; else the batch ends ``failed`` with ``errors.data[0].code ==
"token_limit_exceeded"`` and OpenAI's message ("Enqueued token limit reached for <model> in
organization <org>. Limit: <n> enqueued tokens. ..."). :attr:`peak_enqueued_tokens` keeps the
most tokens ever enqueued per model.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from tests.emulators import openai_features as features
from tests.emulators._server import EmulatorServer
from tests.emulators.openai_endpoints import (
    COMPLETION_MODELS,
    EMBEDDING_DIMENSIONS,
    EXECUTORS,
    usage_totals,
)

__all__ = [
    "BATCH_ENDPOINTS",
    "FILE_PURPOSES",
    "Faults",
    "OpenAIBatchEmulator",
]

JSONDict = dict[str, Any]

#: Purposes a client may upload a file with (``openai.types.FilePurpose``).
FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
#: Endpoints the Batch API accepts (``openai.types.BatchCreateParams.endpoint``).
BATCH_ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
TERMINAL_STATUSES = frozenset({"failed", "completed", "expired", "cancelled"})
COMPLETION_WINDOW_SECONDS = 24 * 3600
BATCH_FILE_TTL_SECONDS = 30 * 24 * 3600
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."


@dataclass
class Faults:
    """One-shot faults; each counter is consumed by the next N matching events."""

    #: Next N ``POST /v1/batches`` answer 429 (``retry-after-ms: 50``, ``retry-after: 1``).
    rate_limit_creates: int = 0
    #: When set, the 429s of ``rate_limit_creates`` carry only ``retry-after: <this>`` (whole
    #: seconds, as OpenAI sends it) instead: a client honouring it waits that long per try.
    create_retry_after_s: int | None = None
    #: Next N ``POST /v1/batches`` answer 500 ``server_error`` before anything is created.
    server_error_creates: int = 0
    #: Next N ``GET /v1/batches/{id}`` answer 429 likewise (the batch does not advance).
    rate_limit_retrieves: int = 0
    #: Next N ``GET /v1/batches/{id}`` answer 500 (the batch does not advance).
    server_error_retrieves: int = 0
    #: Next N batches created end ``expired``: the first half (rounded down) of their lines
    #: are processed, the rest go to the error file with error code ``batch_expired``.
    expire_batches: int = 0
    #: Next N batches created end ``failed`` at validation (error code ``invalid_request``).
    fail_validation: int = 0
    #: Called with the new batch object after it is stored and before the response is sent:
    #: tests use it to kill a client between the vendor's create and the client's record.
    after_create: Callable[[JSONDict], None] | None = None
    #: Called with the new file object after it is stored and before the response is sent:
    #: tests use it to kill a client between files.create and batches.create.
    after_file_create: Callable[[JSONDict], None] | None = None
    #: Next N batches that finish get an output file whose first line is not JSON (a broken
    #: vendor file: the client's collect step fails every time it reads it).
    corrupt_outputs: int = 0
    #: Next N synchronous flex calls answer 429 ``resource_unavailable`` (shed).
    shed_flex: int = 0
    #: While True, every synchronous flex call is shed (429).
    flex_unavailable: bool = False
    #: Next N synchronous standard-tier calls answer 429 (``retry-after-ms: 50``).
    rate_limit_chat: int = 0
    #: Next N synchronous calls (any tier) answer 500.
    server_error_chat: int = 0


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type_ = type_
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> JSONDict:
        return {
            "error": {
                "message": self.message,
                "type": self.type_,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass
class _StoredFile:
    obj: JSONDict
    content: bytes


@dataclass
class _BatchState:
    obj: JSONDict
    content: bytes
    expire: bool
    fail_validation: bool
    output_expires_seconds: int | None
    polls: int = 0
    #: Parsed request lines once validation has passed.
    lines: list[JSONDict] | None = None
    #: Prompt tokens the batch holds against its model's enqueued-token limit.
    enqueued_tokens: int = 0
    raw_requests: list[JSONDict] = field(default_factory=list)


def _now() -> int:
    return int(time.time())


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return " ".join(parts)
    return ""


class OpenAIBatchEmulator(EmulatorServer):
    URL_SUFFIX = "/v1"
    NAME = "openai-batch-emulator"

    """A threaded local HTTP server emulating OpenAI's Files + Batch API."""

    def __init__(self, api_key: str = "sk-test", polls_per_step: int = 1, seed: int = 0) -> None:
        if polls_per_step < 1:
            raise ValueError("polls_per_step must be >= 1")
        self.api_key = api_key
        self.polls_per_step = polls_per_step
        self.seed = seed
        self.faults = Faults()
        #: Upper bounds from OpenAI's docs; tests may lower them to exercise the checks.
        self.max_batch_file_bytes = 200 * 1024 * 1024
        self.max_requests_per_batch = 50_000
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._files: dict[str, _StoredFile] = {}
        self._batches: dict[str, _BatchState] = {}
        self._manual = False
        #: Models with the flex service tier (prefixes).
        self.flex_models: tuple[str, ...] = ("gpt-5", "o3", "o4-mini")
        #: Every synchronous chat completion call: {"tier", "status", "body"}.
        self.sync_calls: list[JSONDict] = []
        #: Enqueued-token limit per model (absent: no limit), and the peak enqueued per model.
        self.enqueued_token_limits: dict[str, int] = {}
        self.peak_enqueued_tokens: dict[str, int] = {}
        self.organization = "org-emulator"
        self._url_map = Map(
            [
                Rule("/v1/chat/completions", methods=["POST"], endpoint="chat_completions"),
                Rule("/v1/embeddings", methods=["POST"], endpoint="embeddings"),
                Rule("/v1/responses", methods=["POST"], endpoint="responses"),
                Rule("/v1/completions", methods=["POST"], endpoint="completions"),
                Rule("/v1/files", methods=["POST"], endpoint="create_file"),
                Rule("/v1/files", methods=["GET"], endpoint="list_files"),
                Rule("/v1/files/<file_id>", methods=["GET"], endpoint="retrieve_file"),
                Rule("/v1/files/<file_id>", methods=["DELETE"], endpoint="delete_file"),
                Rule("/v1/files/<file_id>/content", methods=["GET"], endpoint="file_content"),
                Rule("/v1/batches", methods=["POST"], endpoint="create_batch"),
                Rule("/v1/batches", methods=["GET"], endpoint="list_batches"),
                Rule("/v1/batches/<batch_id>", methods=["GET"], endpoint="retrieve_batch"),
                Rule("/v1/batches/<batch_id>/cancel", methods=["POST"], endpoint="cancel_batch"),
            ],
            strict_slashes=False,
        )

    # ------------------------------------------------------------------ observation

    def batches(self) -> list[JSONDict]:
        """Every batch object ever created (deep copies), in creation order."""
        with self._lock:
            return [copy.deepcopy(state.obj) for state in self._batches.values()]

    def batch_count_by_metadata(self, key: str) -> dict[str, int]:
        """Number of batches created per value of ``metadata[key]`` (batches without it skipped)."""
        counts: dict[str, int] = {}
        with self._lock:
            for state in self._batches.values():
                metadata = state.obj.get("metadata") or {}
                if key in metadata:
                    value = metadata[key]
                    counts[value] = counts.get(value, 0) + 1
        return counts

    def requests_seen(self) -> list[JSONDict]:
        """Every parseable request line of every created batch, in creation order."""
        with self._lock:
            return [
                copy.deepcopy(line)
                for state in self._batches.values()
                for line in state.raw_requests
            ]

    def files(self) -> list[JSONDict]:
        """Every file object currently stored (not deleted), in creation order."""
        with self._lock:
            return [copy.deepcopy(f.obj) for f in self._files.values()]

    def set_step_mode(self, manual: bool) -> None:
        """``manual=True``: retrieves never advance batches; call :meth:`advance_all`."""
        with self._lock:
            self._manual = manual

    def advance_all(self) -> None:
        """Move every non-terminal batch one step forward."""
        with self._lock:
            for state in self._batches.values():
                if state.obj["status"] not in TERMINAL_STATUSES:
                    self._advance(state)

    # ------------------------------------------------------------------ WSGI plumbing

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        try:
            response = self._dispatch(request)
        except _ApiError as err:
            response = self._json(err.body(), err.status, err.headers)
        except Exception as exc:  # pragma: no cover - emulator bug surfaced to the client
            internal = _ApiError(500, f"Emulator error: {exc!r}", type_="server_error")
            response = self._json(internal.body(), 500)
        finally:
            # Drain any unread body so the client never sees a reset connection.
            with contextlib.suppress(Exception):
                request.get_data()
        return response(environ, start_response)

    @staticmethod
    def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(
            json.dumps(body), status=status, headers=headers, mimetype="application/json"
        )

    def _dispatch(self, request: Request) -> Response:
        self._check_auth(request)
        adapter = self._url_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except (NotFound, MethodNotAllowed) as exc:
            code = exc.code or 404
            raise _ApiError(
                404 if code == 404 else 405,
                f"Invalid URL ({request.method} {request.path})",
            ) from None
        except HTTPException as exc:  # e.g. redirects; treat as unknown route
            raise _ApiError(404, f"Invalid URL ({request.method} {request.path})") from exc
        handler = getattr(self, f"_h_{endpoint}")
        result: Response = handler(request, **args)
        return result

    def _check_auth(self, request: Request) -> None:
        header = request.headers.get("Authorization", "")
        if header == f"Bearer {self.api_key}":
            return
        if not header:
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        else:
            given = header.removeprefix("Bearer ").strip()
            message = f"Incorrect API key provided: {given[:3]}***{given[-4:]}."
        raise _ApiError(401, message, code="invalid_api_key")

    def _new_id(self, prefix: str, nbytes: int = 12) -> str:
        return f"{prefix}{self._rng.getrandbits(nbytes * 8):0{nbytes * 2}x}"

    @staticmethod
    def _json_body(request: Request) -> JSONDict:
        raw = request.get_data()
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise _ApiError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you "
                "aren't using your HTTP library correctly.)",
            ) from None
        if not isinstance(body, dict):
            raise _ApiError(400, "The request body must be a JSON object.")
        return body

    @staticmethod
    def _limit(request: Request, default: int, maximum: int) -> int:
        raw = request.args.get("limit")
        if raw is None:
            return default
        try:
            limit = int(raw)
        except ValueError:
            raise _ApiError(400, f"Invalid 'limit': '{raw}'.", param="limit") from None
        if not 1 <= limit <= maximum:
            raise _ApiError(
                400,
                f"Invalid 'limit': integer below minimum value or above maximum value "
                f"(expected 1..{maximum}, got {limit}).",
                param="limit",
                code="integer_out_of_range",
            )
        return limit

    @staticmethod
    def _page(items: list[JSONDict], after: str | None, limit: int) -> JSONDict:
        if after is not None:
            ids = [item["id"] for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        }

    # ------------------------------------------------------------------ files

    def _get_file(self, file_id: str) -> _StoredFile:
        stored = self._files.get(file_id)
        if stored is None:
            raise _ApiError(404, f"No such File object: {file_id}", param="id")
        return stored

    def _store_file(
        self, content: bytes, filename: str, purpose: str, expires_at: int | None
    ) -> JSONDict:
        obj: JSONDict = {
            "id": self._new_id("file-"),
            "object": "file",
            "bytes": len(content),
            "created_at": _now(),
            "expires_at": expires_at,
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
        }
        self._files[obj["id"]] = _StoredFile(obj=obj, content=content)
        return obj

    def _h_create_file(self, request: Request) -> Response:
        purpose = request.form.get("purpose")
        upload = request.files.get("file")
        if upload is None:
            raise _ApiError(
                400,
                "Missing required parameter: 'file'.",
                param="file",
                code="missing_required_parameter",
            )
        if purpose is None:
            raise _ApiError(
                400,
                "Missing required parameter: 'purpose'.",
                param="purpose",
                code="missing_required_parameter",
            )
        if purpose not in FILE_PURPOSES:
            raise _ApiError(
                400,
                f"Invalid value for 'purpose': '{purpose}'. Supported values are: "
                + ", ".join(f"'{p}'" for p in FILE_PURPOSES)
                + ".",
                param="purpose",
                code="invalid_value",
            )
        content = upload.read()
        filename = upload.filename or "upload"
        expires_at: int | None = None
        now = _now()
        if purpose == "batch":
            if len(content) > self.max_batch_file_bytes:
                raise _ApiError(
                    400,
                    f"File is too large ({len(content)} bytes). Files with purpose 'batch' may "
                    f"be at most {self.max_batch_file_bytes} bytes.",
                    param="file",
                    code="file_too_large",
                )
            if not filename.lower().endswith(".jsonl"):
                raise _ApiError(
                    400, "Invalid file format for Batch API. Must be .jsonl", param="file"
                )
            expires_at = now + BATCH_FILE_TTL_SECONDS
        anchor = request.form.get("expires_after[anchor]")
        seconds = request.form.get("expires_after[seconds]")
        if anchor is not None or seconds is not None:
            expires_at = now + self._expiry_seconds(anchor, seconds, "expires_after")
        with self._lock:
            obj = copy.deepcopy(self._store_file(content, filename, purpose, expires_at))
        hook = self.faults.after_file_create
        if hook is not None:
            hook(copy.deepcopy(obj))
        return self._json(obj)

    @staticmethod
    def _expiry_seconds(anchor: Any, seconds: Any, param: str) -> int:
        if anchor != "created_at":
            raise _ApiError(
                400, f"Invalid '{param}.anchor': expected 'created_at'.", param=f"{param}.anchor"
            )
        try:
            value = int(seconds)
        except (TypeError, ValueError):
            raise _ApiError(
                400, f"Invalid '{param}.seconds': expected an integer.", param=f"{param}.seconds"
            ) from None
        if not 3600 <= value <= 2_592_000:
            raise _ApiError(
                400,
                f"Invalid '{param}.seconds': must be between 3600 and 2592000.",
                param=f"{param}.seconds",
            )
        return value

    def _h_list_files(self, request: Request) -> Response:
        limit = self._limit(request, default=10_000, maximum=10_000)
        purpose = request.args.get("purpose")
        order = request.args.get("order", "desc")
        if order not in ("asc", "desc"):
            raise _ApiError(400, f"Invalid 'order': '{order}'.", param="order")
        with self._lock:
            items = [copy.deepcopy(f.obj) for f in self._files.values()]
        if purpose is not None:
            items = [item for item in items if item["purpose"] == purpose]
        if order == "desc":
            items.reverse()
        return self._json(self._page(items, request.args.get("after"), limit))

    def _h_retrieve_file(self, request: Request, file_id: str) -> Response:
        with self._lock:
            return self._json(copy.deepcopy(self._get_file(file_id).obj))

    def _h_delete_file(self, request: Request, file_id: str) -> Response:
        with self._lock:
            self._get_file(file_id)
            del self._files[file_id]
        return self._json({"id": file_id, "object": "file", "deleted": True})

    def _h_file_content(self, request: Request, file_id: str) -> Response:
        with self._lock:
            content = self._get_file(file_id).content
        return Response(content, status=200, mimetype="application/octet-stream")

    # ------------------------------------------------------------------ batches

    def _get_batch(self, batch_id: str) -> _BatchState:
        state = self._batches.get(batch_id)
        if state is None:
            raise _ApiError(404, f"No batch found with id '{batch_id}'.")
        return state

    @staticmethod
    def _rate_limited() -> _ApiError:
        return _ApiError(
            429,
            "Rate limit reached for requests (emulated). Please try again later.",
            type_="rate_limit_exceeded",
            code="rate_limit_exceeded",
            headers={"retry-after-ms": "50", "retry-after": "1"},
        )

    @staticmethod
    def _validate_metadata(metadata: Any) -> dict[str, str] | None:
        if metadata is None:
            return None
        if not isinstance(metadata, dict):
            raise _ApiError(
                400, "Invalid type for 'metadata': expected an object.", param="metadata"
            )
        if len(metadata) > 16:
            raise _ApiError(
                400,
                f"Invalid 'metadata': too many properties. Expected an object with at most 16 "
                f"properties, but got an object with {len(metadata)} properties instead.",
                param="metadata",
                code="object_above_max_properties",
            )
        for key, value in metadata.items():
            if len(key) > 64:
                raise _ApiError(
                    400,
                    f"Invalid 'metadata': key '{key[:20]}...' is longer than 64 characters.",
                    param="metadata",
                    code="string_above_max_length",
                )
            if not isinstance(value, str):
                raise _ApiError(
                    400,
                    f"Invalid type for 'metadata.{key}': expected a string, but got "
                    f"{type(value).__name__} instead.",
                    param=f"metadata.{key}",
                    code="invalid_type",
                )
            if len(value) > 512:
                raise _ApiError(
                    400,
                    f"Invalid 'metadata.{key}': string too long. Expected a string with maximum "
                    f"length 512, but got a string with length {len(value)} instead.",
                    param=f"metadata.{key}",
                    code="string_above_max_length",
                )
        return dict(metadata)

    def _h_create_batch(self, request: Request) -> Response:
        with self._lock:
            if self.faults.rate_limit_creates > 0:
                self.faults.rate_limit_creates -= 1
                limited = self._rate_limited()
                if self.faults.create_retry_after_s is not None:
                    limited.headers = {"retry-after": str(self.faults.create_retry_after_s)}
                raise limited
            if self.faults.server_error_creates > 0:
                self.faults.server_error_creates -= 1
                raise _ApiError(
                    500,
                    "The server had an error while processing your request. Sorry about that!",
                    type_="server_error",
                )
        body = self._json_body(request)
        for name in ("input_file_id", "endpoint", "completion_window"):
            if body.get(name) is None:
                raise _ApiError(
                    400,
                    f"Missing required parameter: '{name}'.",
                    param=name,
                    code="missing_required_parameter",
                )
        window = body["completion_window"]
        if window != "24h":
            raise _ApiError(
                400,
                f"Invalid value for 'completion_window': '{window}'. Supported values are: '24h'.",
                param="completion_window",
                code="invalid_value",
            )
        endpoint = body["endpoint"]
        if endpoint not in BATCH_ENDPOINTS:
            raise _ApiError(
                400,
                f"Invalid value for 'endpoint': '{endpoint}'. Supported values are: "
                + ", ".join(f"'{e}'" for e in BATCH_ENDPOINTS)
                + ".",
                param="endpoint",
                code="invalid_value",
            )
        metadata = self._validate_metadata(body.get("metadata"))
        output_expires: int | None = None
        oea = body.get("output_expires_after")
        if oea is not None:
            if not isinstance(oea, dict):
                raise _ApiError(
                    400, "Invalid type for 'output_expires_after'.", param="output_expires_after"
                )
            output_expires = self._expiry_seconds(
                oea.get("anchor"), oea.get("seconds"), "output_expires_after"
            )
        input_file_id = body["input_file_id"]
        with self._lock:
            stored = self._files.get(input_file_id)
            if stored is None:
                raise _ApiError(
                    400,
                    f"Invalid 'input_file_id': '{input_file_id}'. File not found.",
                    param="input_file_id",
                )
            if stored.obj["purpose"] != "batch":
                raise _ApiError(
                    400,
                    f"Invalid 'input_file_id': '{input_file_id}'. The file must have purpose "
                    f"'batch', but it has purpose '{stored.obj['purpose']}'.",
                    param="input_file_id",
                )
            now = _now()
            obj: JSONDict = {
                "id": self._new_id("batch_"),
                "object": "batch",
                "endpoint": endpoint,
                "model": None,
                "errors": None,
                "input_file_id": input_file_id,
                "completion_window": window,
                "status": "validating",
                "output_file_id": None,
                "error_file_id": None,
                "created_at": now,
                "in_progress_at": None,
                "expires_at": now + COMPLETION_WINDOW_SECONDS,
                "finalizing_at": None,
                "completed_at": None,
                "failed_at": None,
                "expired_at": None,
                "cancelling_at": None,
                "cancelled_at": None,
                "request_counts": {"total": 0, "completed": 0, "failed": 0},
                "usage": _usage(0, 0),
                "metadata": metadata,
            }
            expire = self.faults.expire_batches > 0
            if expire:
                self.faults.expire_batches -= 1
            fail = self.faults.fail_validation > 0
            if fail:
                self.faults.fail_validation -= 1
            state = _BatchState(
                obj=obj,
                content=stored.content,
                expire=expire,
                fail_validation=fail,
                output_expires_seconds=output_expires,
                raw_requests=_parse_lines_leniently(stored.content),
            )
            self._batches[obj["id"]] = state
            created = copy.deepcopy(obj)
        hook = self.faults.after_create
        if hook is not None:
            hook(copy.deepcopy(created))
        return self._json(created)

    def _h_list_batches(self, request: Request) -> Response:
        limit = self._limit(request, default=20, maximum=100)
        with self._lock:
            items = [copy.deepcopy(s.obj) for s in reversed(self._batches.values())]
        return self._json(self._page(items, request.args.get("after"), limit))

    def _h_retrieve_batch(self, request: Request, batch_id: str) -> Response:
        with self._lock:
            if self.faults.rate_limit_retrieves > 0:
                self.faults.rate_limit_retrieves -= 1
                raise self._rate_limited()
            if self.faults.server_error_retrieves > 0:
                self.faults.server_error_retrieves -= 1
                raise _ApiError(
                    500,
                    "The server had an error while processing your request. Sorry about that!",
                    type_="server_error",
                )
            state = self._get_batch(batch_id)
            if not self._manual and state.obj["status"] not in TERMINAL_STATUSES:
                if state.obj["status"] == "cancelling":
                    self._advance(state)
                else:
                    state.polls += 1
                    if state.polls >= self.polls_per_step:
                        state.polls = 0
                        self._advance(state)
            return self._json(copy.deepcopy(state.obj))

    def _h_cancel_batch(self, request: Request, batch_id: str) -> Response:
        with self._lock:
            state = self._get_batch(batch_id)
            status = state.obj["status"]
            if status in TERMINAL_STATUSES:
                raise _ApiError(
                    400,
                    f"Cannot cancel a batch with status '{status}'.",
                    code="invalid_request",
                )
            if status != "cancelling":
                state.obj["status"] = "cancelling"
                state.obj["cancelling_at"] = _now()
                state.polls = 0
            return self._json(copy.deepcopy(state.obj))

    # ------------------------------------------------------------------ synchronous calls

    def _h_chat_completions(self, request: Request) -> Response:
        return self._sync(request, "/v1/chat/completions")

    def _h_embeddings(self, request: Request) -> Response:
        return self._sync(request, "/v1/embeddings")

    def _h_responses(self, request: Request) -> Response:
        return self._sync(request, "/v1/responses")

    def _h_completions(self, request: Request) -> Response:
        return self._sync(request, "/v1/completions")

    def _sync(self, request: Request, url: str) -> Response:
        body = self._json_body(request)
        tier = body.get("service_tier") or "auto"
        served = "default" if tier == "auto" else tier
        with self._lock:
            call: JSONDict = {"tier": served, "status": 200, "body": copy.deepcopy(body)}
            self.sync_calls.append(call)
            try:
                self._sync_faults(body, served)
            except _ApiError as err:
                call["status"] = err.status
                raise
            sent = {k: v for k, v in body.items() if k != "service_tier"}
            status, answer = self._execute(url, sent)
            call["url"] = url
            call["status"] = status
        if status != 200:
            return self._json(answer, status)
        answer["service_tier"] = served
        return self._json(answer)

    def _sync_faults(self, body: JSONDict, tier: str) -> None:
        """The documented refusals of a synchronous call. Caller holds the lock."""
        if tier not in ("default", "flex", "priority", "scale"):
            raise _ApiError(400, f"Invalid value for 'service_tier': '{tier}'.", param="tier")
        model = str(body.get("model") or "")
        if tier == "flex" and not model.startswith(self.flex_models):
            raise _ApiError(
                400, f"Flex processing is not available for model '{model}'.", param="service_tier"
            )
        if self.faults.server_error_chat > 0:
            self.faults.server_error_chat -= 1
            raise _ApiError(500, "The server had an error (emulated).", type_="server_error")
        if tier == "flex" and (self.faults.flex_unavailable or self.faults.shed_flex > 0):
            self.faults.shed_flex = max(self.faults.shed_flex - 1, 0)
            raise _ApiError(
                429,
                "Resource Unavailable: flex processing has no capacity now (emulated).",
                type_="rate_limit_exceeded",
                code="resource_unavailable",
                headers={"retry-after-ms": "50", "retry-after": "1"},
            )
        if tier != "flex" and self.faults.rate_limit_chat > 0:
            self.faults.rate_limit_chat -= 1
            raise self._rate_limited()

    # ------------------------------------------------------------------ state machine

    def _advance(self, state: _BatchState) -> None:
        """One step of the batch state machine. Caller holds the lock."""
        obj = state.obj
        status = obj["status"]
        now = _now()
        if status == "validating":
            errors = self._validate(state) or self._enqueue(state)
            if errors:
                self._fail(state, errors)
                return
            obj["status"] = "in_progress"
            obj["in_progress_at"] = now
        elif status == "in_progress":
            obj["status"] = "finalizing"
            obj["finalizing_at"] = now
        elif status == "finalizing":
            lines = state.lines or []
            if state.expire:
                self._process(state, len(lines) // 2, expire_rest=True)
                obj["status"] = "expired"
                obj["expired_at"] = now
            else:
                self._process(state, len(lines), expire_rest=False)
                obj["status"] = "completed"
                obj["completed_at"] = now
        elif status == "cancelling":
            if state.lines is None and self._validate(state):
                state.lines = []  # never validated successfully: nothing ran
            lines = state.lines or []
            self._process(state, len(lines) // 2, expire_rest=False)
            obj["status"] = "cancelled"
            obj["cancelled_at"] = now

    def _enqueue(self, state: _BatchState) -> list[JSONDict]:
        """Hold the batch's tokens against its model's limit, or the documented failure."""
        model = str(state.obj.get("model") or "")
        tokens = sum(_prompt_tokens(line["body"].get("messages")) for line in state.lines or [])
        enqueued = sum(
            other.enqueued_tokens
            for other in self._batches.values()
            if other.obj.get("model") == model
            and other.obj["status"] in ("in_progress", "finalizing")
        )
        limit = self.enqueued_token_limits.get(model)
        if limit is not None and enqueued + tokens > limit:
            return [
                _batch_error(
                    "token_limit_exceeded",
                    f"Enqueued token limit reached for {model} in organization "
                    f"{self.organization}. Limit: {limit:,} enqueued tokens. Please try again "
                    "once some in_progress batches have been completed.",
                    None,
                )
            ]
        state.enqueued_tokens = tokens
        peak = max(self.peak_enqueued_tokens.get(model, 0), enqueued + tokens)
        self.peak_enqueued_tokens[model] = peak
        return []

    def _fail(self, state: _BatchState, errors: list[JSONDict]) -> None:
        state.obj["status"] = "failed"
        state.obj["failed_at"] = _now()
        state.obj["errors"] = {"object": "list", "data": errors}

    def _validate(self, state: _BatchState) -> list[JSONDict]:
        """Validate the input file; on success store parsed lines, totals and model."""
        if state.fail_validation:
            return [
                _batch_error(
                    "invalid_request", "The batch input file failed validation (emulated).", None
                )
            ]
        endpoint = state.obj["endpoint"]
        content = state.content
        if len(content) > self.max_batch_file_bytes:
            return [
                _batch_error(
                    "file_too_large",
                    f"The input file is larger than the maximum of {self.max_batch_file_bytes} "
                    "bytes.",
                    None,
                )
            ]
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            return [_batch_error("invalid_file", "The input file is not valid UTF-8.", None)]
        errors: list[JSONDict] = []
        parsed: list[JSONDict] = []
        seen_ids: set[str] = set()
        model: str | None = None
        for number, raw in enumerate(text.split("\n"), start=1):
            if not raw.strip():
                continue
            err, line = _check_line(raw, number, endpoint)
            if err is None and line is not None:
                custom_id = line["custom_id"]
                line_model = line["body"]["model"]
                if custom_id in seen_ids:
                    err = _batch_error(
                        "duplicate_custom_id",
                        "The custom_id for this request is a duplicate of another request. The "
                        "custom_id parameter must be unique for each request in a batch.",
                        number,
                        "custom_id",
                    )
                elif model is not None and line_model != model:
                    err = _batch_error(
                        "mismatched_model",
                        f"The model '{line_model}' does not match the model '{model}' used by "
                        "other requests in this batch. All requests in a batch must use the "
                        "same model.",
                        number,
                        "body.model",
                    )
                else:
                    seen_ids.add(custom_id)
                    model = line_model
                    parsed.append(line)
            if err is not None:
                errors.append(err)
                if len(errors) >= 1000:
                    break
        if errors:
            return errors
        if not parsed:
            return [_batch_error("empty_file", "The input file contains no requests.", None)]
        if len(parsed) > self.max_requests_per_batch:
            return [
                _batch_error(
                    "too_many_requests",
                    f"The input file contains {len(parsed)} requests; a batch may contain at "
                    f"most {self.max_requests_per_batch}.",
                    None,
                )
            ]
        state.lines = parsed
        state.obj["request_counts"] = {"total": len(parsed), "completed": 0, "failed": 0}
        state.obj["model"] = model
        return []

    def _process(self, state: _BatchState, n_run: int, *, expire_rest: bool) -> None:
        """Run the first ``n_run`` lines, write output/error files, update counts and usage."""
        obj = state.obj
        lines = state.lines or []
        outputs: list[JSONDict] = []
        errors: list[JSONDict] = []
        input_tokens = output_tokens = 0
        for index, line in enumerate(lines):
            record: JSONDict = {
                "id": self._new_id("batch_req_", 16),
                "custom_id": line["custom_id"],
            }
            if index < n_run:
                status, body = self._execute(obj["endpoint"], line["body"])
                record["response"] = {
                    "status_code": status,
                    "request_id": self._new_id("req_", 16),
                    "body": body,
                }
                record["error"] = None
                if status == 200:
                    used_in, used_out = usage_totals(body["usage"])
                    input_tokens += used_in
                    output_tokens += used_out
                    outputs.append(record)
                else:
                    errors.append(record)
            elif expire_rest:
                record["response"] = None
                record["error"] = {"code": "batch_expired", "message": EXPIRED_MESSAGE}
                errors.append(record)
        now = _now()
        file_expires = (
            now + state.output_expires_seconds if state.output_expires_seconds is not None else None
        )
        for kind, records in (("output", outputs), ("error", errors)):
            if not records:
                continue
            self._rng.shuffle(records)
            data = "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")
            if kind == "output" and self.faults.corrupt_outputs > 0:
                self.faults.corrupt_outputs -= 1
                data = b"{this is not json\n" + data
            file_obj = self._store_file(
                data, f"{obj['id']}_{kind}.jsonl", "batch_output", file_expires
            )
            obj[f"{kind}_file_id"] = file_obj["id"]
        obj["request_counts"] = {
            "total": len(lines),
            "completed": len(outputs),
            "failed": len(errors),
        }
        obj["usage"] = _usage(input_tokens, output_tokens)

    def _execute(self, endpoint: str, body: JSONDict) -> tuple[int, JSONDict]:
        if endpoint in EXECUTORS:
            return EXECUTORS[endpoint](body, lambda prefix: self._new_id(prefix, 14))
        if endpoint != "/v1/chat/completions":
            return 400, _error_body(
                f"The emulator does not execute requests for endpoint '{endpoint}'.",
                "invalid_request_error",
            )
        if body.get("model") in EMBEDDING_DIMENSIONS or body.get("model") in COMPLETION_MODELS:
            return 400, _error_body(
                f"The model '{body.get('model')}' does not support chat completions.",
                "invalid_request_error",
                param="model",
            )
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return 400, _error_body(
                "Missing required parameter: 'messages'.",
                "invalid_request_error",
                param="messages",
                code="missing_required_parameter",
            )
        text = ""
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                text = _content_text(message.get("content"))
                break
        if "[[error:400]]" in text:
            return 400, _error_body("Invalid request (emulated).", "invalid_request_error")
        if "[[error:500]]" in text:
            return 500, _error_body("Internal server error (emulated).", "server_error")
        problem = features.body_problem(body)
        if problem is not None:
            return 400, _error_body(problem[0], "invalid_request_error", param=problem[1])
        prompt_tokens = _prompt_tokens(messages)
        text = features.last_text(messages, text)
        reply: JSONDict = {"role": "assistant", "content": None, "refusal": None}
        content: str | None
        featured = features.featured_message(body, text, self._new_id)
        if featured is not None:
            reply, finish_reason, completion_tokens = featured
        elif "[[finish:content_filter]]" in text:
            content, finish_reason, completion_tokens = None, "content_filter", 0
        else:
            words = ("echo: " + text).split()
            limits = [
                body[key]
                for key in ("max_completion_tokens", "max_tokens")
                if isinstance(body.get(key), int)
            ]
            finish_reason = "stop"
            if f"[[finish:length@{body['model']}]]" in text:  # this model's answer runs long
                limits = [min([*limits, 1])]
            if limits and min(limits) < len(words):
                words = words[: max(min(limits), 0)]
                finish_reason = "length"
            content, completion_tokens = " ".join(words), len(words)
        if featured is None:
            reply["content"] = content
        reasoning = features.reasoning_tokens(body)
        completion_tokens += reasoning
        n = body.get("n", 1)
        return 200, {
            "id": self._new_id("chatcmpl-", 14),
            "object": "chat.completion",
            "created": _now(),
            "model": body["model"],
            "choices": [
                {
                    "index": index,
                    "message": copy.deepcopy(reply),
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
                for index in range(n)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens * n,
                "total_tokens": prompt_tokens + completion_tokens * n,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": reasoning * n},
            },
        }


# ---------------------------------------------------------------------- helpers


def _prompt_tokens(messages: Any) -> int:
    """The emulator's token count of a chat: a quarter token per character, 4 per message."""
    if not isinstance(messages, list):
        return 0
    return sum(
        len(_content_text(m.get("content") if isinstance(m, dict) else None)) // 4 + 4
        for m in messages
    )


def _usage(input_tokens: int, output_tokens: int) -> JSONDict:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def _error_body(
    message: str, type_: str, *, param: str | None = None, code: str | None = None
) -> JSONDict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _batch_error(code: str, message: str, line: int | None, param: str | None = None) -> JSONDict:
    return {"code": code, "message": message, "line": line, "param": param}


def _parse_lines_leniently(content: bytes) -> list[JSONDict]:
    """Every line of ``content`` that parses as a JSON object (for :meth:`requests_seen`)."""
    out: list[JSONDict] = []
    for raw in content.decode("utf-8", errors="replace").split("\n"):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def _check_line(raw: str, number: int, endpoint: str) -> tuple[JSONDict | None, JSONDict | None]:
    """Per-line structural checks: (error, None) or (None, parsed line)."""
    try:
        line = json.loads(raw)
    except ValueError:
        return _batch_error(
            "invalid_json_line", "This line is not parseable as valid JSON.", number
        ), None
    if not isinstance(line, dict):
        return _batch_error("invalid_json_line", "Each line must be a JSON object.", number), None
    for name in ("custom_id", "method", "url", "body"):
        if name not in line:
            return _batch_error(
                "missing_required_parameter",
                f"Missing required parameter: '{name}'.",
                number,
                name,
            ), None
    if not isinstance(line["custom_id"], str) or not line["custom_id"]:
        return _batch_error(
            "invalid_custom_id", "The custom_id must be a non-empty string.", number, "custom_id"
        ), None
    if line["method"] != "POST":
        return _batch_error(
            "invalid_method",
            f"Invalid method '{line['method']}'. Only POST is supported.",
            number,
            "method",
        ), None
    if line["url"] != endpoint:
        return _batch_error(
            "invalid_url",
            f"The URL provided for this request ('{line['url']}') does not match the batch "
            f"endpoint '{endpoint}'.",
            number,
            "url",
        ), None
    body = line["body"]
    if not isinstance(body, dict):
        return _batch_error(
            "invalid_request", "The body of the request must be a JSON object.", number, "body"
        ), None
    if not isinstance(body.get("model"), str) or not body["model"]:
        return _batch_error(
            "missing_required_parameter",
            "Missing required parameter: 'body.model'.",
            number,
            "body.model",
        ), None
    return None, line
