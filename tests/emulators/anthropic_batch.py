"""In-process emulator of Anthropic's Message Batches API, for tests.

Drive it with the real ``anthropic`` SDK::

    with AnthropicBatchEmulator() as emu:
        client = anthropic.Anthropic(api_key="sk-ant-test", base_url=emu.base_url)
        ...

``base_url`` is the server root (``http://127.0.0.1:<port>``): the SDK adds ``/v1/...`` itself.

Behaviour follows Anthropic's documented Message Batches API: ``POST /v1/messages/batches``
with the documented checks (1..100,000 requests, 256 MB, ``custom_id`` pattern and uniqueness),
``processing_status`` ``in_progress -> ended`` (or ``canceling -> ended``), request counts that
stay in ``processing`` until the batch ends, a ``results_url`` once it has ended whose JSONL
lines come in shuffled order, cancel, delete and ``after_id`` / ``before_id`` pagination of
``GET /v1/messages/batches``. Errors use Anthropic's ``{"type": "error", "error": {...}}``
shape and every response carries a ``request-id`` header.

Batches advance one step every ``polls_per_step`` retrieves (``GET /v1/messages/batches/{id}``),
or only when the test calls :meth:`AnthropicBatchEmulator.advance_all` in manual step mode. One
step ends an ``in_progress`` batch: all its requests are processed then, in input order.

Requests are answered deterministically; markers in the text of the last user message select
the outcome: ``[[errored:invalid]]``, ``[[errored:overloaded]]`` and ``[[errored:api]]``.
Otherwise the reply is ``"echo: " + text``, one token per whitespace-separated word, cut at the
first ``stop_sequences`` entry it contains and truncated to ``max_tokens`` words. Prompt caching
(``cache_control`` breakpoints) is emulated, see :meth:`AnthropicBatchEmulator._usage`.
Tools, structured outputs (``output_config.format``), image blocks and extended thinking
follow :mod:`tests.emulators.anthropic_features`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from tests.emulators import anthropic_features as features
from tests.emulators._server import EmulatorServer

__all__ = [
    "AnthropicBatchEmulator",
    "Faults",
    "tokens",
]

JSONDict = dict[str, Any]

MAX_REQUESTS_PER_BATCH = 100_000
MAX_BATCH_BYTES = 256 * 1024 * 1024
MAX_CACHE_BREAKPOINTS = 4
BATCH_WINDOW = timedelta(hours=24)
CUSTOM_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
CUSTOM_ID_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"
CACHE_TTLS = ("5m", "1h")
ERROR_MARKERS = {
    "[[errored:invalid]]": ("invalid_request_error", "Invalid request (emulated)."),
    "[[errored:overloaded]]": ("overloaded_error", "Overloaded (emulated)."),
    "[[errored:api]]": ("api_error", "Internal server error (emulated)."),
}
RETRY_HEADERS = {"retry-after": "1", "retry-after-ms": "50"}


@dataclass
class Faults:
    """One-shot faults; each counter is consumed by the next N matching events."""

    #: Next N ``POST /v1/messages/batches`` answer 429 ``rate_limit_error``
    #: (``retry-after: 1``, ``retry-after-ms: 50``).
    rate_limit_creates: int = 0
    #: Next N creates answer 529 ``overloaded_error`` (same retry headers).
    overloaded_creates: int = 0
    #: Next N ``GET /v1/messages/batches/{id}`` answer 429 (the batch does not advance).
    rate_limit_retrieves: int = 0
    #: Next N retrieves answer 529 (the batch does not advance).
    overloaded_retrieves: int = 0
    #: Next N batches created end with the first half (rounded down, input order) of their
    #: requests processed as usual and the rest ``expired``.
    expire_batches: int = 0
    #: Next N creates store the batch (it runs and is billed as usual) and then answer 500
    #: ``api_error``: a create that succeeded while the client saw it fail.
    server_error_after_creates: int = 0
    #: Next N creates answer 500 ``api_error`` and store nothing (a failed create).
    server_error_creates: int = 0
    #: Called with the new batch object after it is stored and before the response is sent:
    #: tests use it to kill a client between the vendor's create and the client's record.
    after_create: Callable[[JSONDict], None] | None = None
    #: Next N ``POST /v1/messages`` answer 429 ``rate_limit_error`` (same retry headers).
    rate_limit_messages: int = 0
    #: Next N ``POST /v1/messages`` answer 529 ``overloaded_error``.
    overloaded_messages: int = 0


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type_ = type_
        self.headers = headers or {}

    def body(self) -> JSONDict:
        return _error_response(self.type_, self.message)


@dataclass
class _BatchState:
    obj: JSONDict
    requests: list[JSONDict]
    expire: bool
    polls: int = 0
    deleted: bool = False
    #: Results in input order, once the batch has ended.
    results: list[JSONDict] | None = None
    #: The shuffled JSONL served from ``results_url``.
    results_body: bytes = b""
    #: Per request (input order): the params problem found at create (``params_validation``
    #: ``"async"`` only), or None.
    param_errors: list[str | None] = field(default_factory=list)


@dataclass
class _Piece:
    """One tokenised part of a prompt, in order tools -> system -> messages."""

    key: Any
    tokens: int
    cache_control: JSONDict | None


def tokens(text: str) -> int:
    """The emulator's token count of one string."""
    return len(text) // 4 + 1


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _error_response(type_: str, message: str) -> JSONDict:
    return {"type": "error", "error": {"type": type_, "message": message}}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _without_cache_control(block: Any) -> Any:
    if isinstance(block, dict):
        return {k: v for k, v in block.items() if k != "cache_control"}
    return block


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    return ""


class AnthropicBatchEmulator(EmulatorServer):
    URL_SUFFIX = ""
    NAME = "anthropic-batch-emulator"

    """A threaded local HTTP server emulating Anthropic's Message Batches API."""

    def __init__(
        self,
        api_key: str = "sk-ant-test",
        polls_per_step: int = 1,
        seed: int = 0,
        min_cache_tokens: int = 1024,
    ) -> None:
        if polls_per_step < 1:
            raise ValueError("polls_per_step must be >= 1")
        self.api_key = api_key
        self.polls_per_step = polls_per_step
        self.seed = seed
        self.min_cache_tokens = min_cache_tokens
        self.faults = Faults()
        #: Upper bounds from Anthropic's docs; tests may lower them to exercise the checks.
        self.max_requests_per_batch = MAX_REQUESTS_PER_BATCH
        self.max_batch_bytes = MAX_BATCH_BYTES
        #: ``"create"``: a bad ``params`` object rejects the whole batch with 400 at create.
        #: ``"async"``: as Anthropic documents it, params are validated while the batch is
        #: processed and a bad one yields an ``errored`` (``invalid_request_error``) result.
        #: ``custom_id`` and list-level checks always happen at create.
        self.params_validation: Literal["create", "async"] = "create"
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._batches: dict[str, _BatchState] = {}
        #: Prompt cache: (model, canonical prefix) -> prefix tokens.
        self._cache: dict[tuple[str, str], int] = {}
        self._manual = False
        #: Every synchronous ``POST /v1/messages``: {"status", "params"}.
        self.sync_calls: list[JSONDict] = []
        self._url_map = Map(
            [
                Rule("/v1/messages", methods=["POST"], endpoint="messages"),
                Rule("/v1/messages/batches", methods=["POST"], endpoint="create_batch"),
                Rule("/v1/messages/batches", methods=["GET"], endpoint="list_batches"),
                Rule("/v1/messages/batches/<batch_id>", methods=["GET"], endpoint="retrieve"),
                Rule("/v1/messages/batches/<batch_id>", methods=["DELETE"], endpoint="delete"),
                Rule("/v1/messages/batches/<batch_id>/cancel", methods=["POST"], endpoint="cancel"),
                Rule(
                    "/v1/messages/batches/<batch_id>/results", methods=["GET"], endpoint="results"
                ),
            ],
            strict_slashes=False,
        )

    # ------------------------------------------------------------------ observation

    def batches(self) -> list[JSONDict]:
        """Every batch object ever created (deep copies, deleted ones too), creation order."""
        with self._lock:
            return [copy.deepcopy(state.obj) for state in self._batches.values()]

    def requests_seen(self) -> list[JSONDict]:
        """Every request ``{custom_id, params}`` of every created batch, in creation order."""
        with self._lock:
            return [
                copy.deepcopy(req) for state in self._batches.values() for req in state.requests
            ]

    def results(self, batch_id: str) -> list[JSONDict]:
        """The result lines of an ended batch in input order (empty before it ends)."""
        with self._lock:
            state = self._batches.get(batch_id)
            if state is None or state.results is None:
                return []
            return copy.deepcopy(state.results)

    def clear_cache(self) -> None:
        """Forget every prompt-cache entry."""
        with self._lock:
            self._cache.clear()

    def set_step_mode(self, manual: bool) -> None:
        """``manual=True``: retrieves never advance batches; call :meth:`advance_all`."""
        with self._lock:
            self._manual = manual

    def advance_all(self) -> None:
        """Move every batch that has not ended one step forward (to ``ended``)."""
        with self._lock:
            for state in self._batches.values():
                if state.obj["processing_status"] != "ended":
                    self._advance(state)

    # ------------------------------------------------------------------ WSGI plumbing

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        try:
            response = self._dispatch(request)
        except _ApiError as err:
            response = self._json(err.body(), err.status, err.headers)
        except Exception as exc:  # pragma: no cover - emulator bug surfaced to the client
            internal = _ApiError(500, f"Emulator error: {exc!r}", type_="api_error")
            response = self._json(internal.body(), 500)
        finally:
            # Drain any unread body so the client never sees a reset connection.
            with contextlib.suppress(Exception):
                request.get_data()
        with self._lock:
            response.headers["request-id"] = self._new_id("req_", 12)
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
        except NotFound:
            raise _ApiError(404, "Not found", type_="not_found_error") from None
        except MethodNotAllowed:
            raise _ApiError(
                405, f"Method {request.method} not allowed for {request.path}"
            ) from None
        except HTTPException as exc:  # e.g. redirects; treat as unknown route
            raise _ApiError(404, "Not found", type_="not_found_error") from exc
        handler = getattr(self, f"_h_{endpoint}")
        result: Response = handler(request, **args)
        return result

    def _check_auth(self, request: Request) -> None:
        # The documented header is ``x-api-key``; anthropic SDK 2.x sends an ``api_key`` as
        # ``Authorization: Bearer <key>``, so both are accepted.
        api_key = request.headers.get("x-api-key")
        authorization = request.headers.get("Authorization", "")
        if api_key == self.api_key or authorization == f"Bearer {self.api_key}":
            return
        if api_key is None and not authorization:
            raise _ApiError(401, "x-api-key header is required", type_="authentication_error")
        raise _ApiError(401, "invalid x-api-key", type_="authentication_error")

    def _new_id(self, prefix: str, nbytes: int = 12) -> str:
        """Caller holds the lock."""
        return f"{prefix}{self._rng.getrandbits(nbytes * 8):0{nbytes * 2}x}"

    def _get_batch(self, batch_id: str) -> _BatchState:
        state = self._batches.get(batch_id)
        if state is None or state.deleted:
            raise _ApiError(404, f"Message batch '{batch_id}' not found.", type_="not_found_error")
        return state

    # ------------------------------------------------------------------ Messages API

    def _h_messages(self, request: Request) -> Response:
        """One synchronous Messages API call, answered like a batch request."""
        try:
            params = json.loads(request.get_data() or b"{}")
        except ValueError:
            raise _ApiError(400, "Request body is not valid JSON.") from None
        with self._lock:
            call: JSONDict = {"status": 200, "params": copy.deepcopy(params)}
            self.sync_calls.append(call)
            if self.faults.rate_limit_messages > 0:
                self.faults.rate_limit_messages -= 1
                call["status"] = 429
                raise _rate_limited()
            if self.faults.overloaded_messages > 0:
                self.faults.overloaded_messages -= 1
                call["status"] = 529
                raise _ApiError(
                    529, "Overloaded (emulated).", type_="overloaded_error", headers=RETRY_HEADERS
                )
            problem = _params_problem(params, "body") if isinstance(params, dict) else "bad body"
            if problem is not None:
                call["status"] = 400
                raise _ApiError(400, problem)
            result = self._execute(params, None)
            if result["type"] == "errored":
                err = result["error"]["error"]
                status = {"overloaded_error": 529, "api_error": 500}.get(err["type"], 400)
                call["status"] = status
                raise _ApiError(status, err["message"], type_=err["type"])
        return self._json(result["message"])

    # ------------------------------------------------------------------ create

    def _h_create_batch(self, request: Request) -> Response:
        with self._lock:
            if self.faults.rate_limit_creates > 0:
                self.faults.rate_limit_creates -= 1
                raise _rate_limited()
            if self.faults.overloaded_creates > 0:
                self.faults.overloaded_creates -= 1
                raise _overloaded()
            if self.faults.server_error_creates > 0:
                self.faults.server_error_creates -= 1
                raise _ApiError(500, "Internal server error (emulated).", type_="api_error")
        length = request.content_length
        if length is not None and length > self.max_batch_bytes:
            raise self._too_large(length)
        raw = request.get_data()
        if len(raw) > self.max_batch_bytes:
            raise self._too_large(len(raw))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            raise _ApiError(400, "There was an error parsing the body as JSON.") from None
        if not isinstance(body, dict):
            raise _ApiError(400, "The request body must be a JSON object.")
        requests = self._check_requests(body.get("requests", _MISSING))
        param_errors: list[str | None] = []
        for index, req in enumerate(requests):
            problem = _params_problem(req["params"], f"requests.{index}.params")
            if problem is not None and self.params_validation == "create":
                raise _ApiError(400, problem)
            param_errors.append(problem)
        with self._lock:
            created = datetime.now(UTC)
            obj: JSONDict = {
                "id": self._new_id("msgbatch_"),
                "type": "message_batch",
                "processing_status": "in_progress",
                "request_counts": _counts(processing=len(requests)),
                "ended_at": None,
                "created_at": _rfc3339(created),
                "expires_at": _rfc3339(created + BATCH_WINDOW),
                "archived_at": None,
                "cancel_initiated_at": None,
                "results_url": None,
            }
            expire = self.faults.expire_batches > 0
            if expire:
                self.faults.expire_batches -= 1
            state = _BatchState(
                obj=obj,
                requests=[
                    {"custom_id": r["custom_id"], "params": copy.deepcopy(r["params"])}
                    for r in requests
                ],
                expire=expire,
                param_errors=param_errors,
            )
            self._batches[obj["id"]] = state
            result = copy.deepcopy(obj)
        hook = self.faults.after_create
        if hook is not None:
            hook(copy.deepcopy(result))
        with self._lock:
            if self.faults.server_error_after_creates > 0:
                self.faults.server_error_after_creates -= 1
                raise _ApiError(500, "Internal server error (emulated).", type_="api_error")
        return self._json(result)

    def _too_large(self, size: int) -> _ApiError:
        return _ApiError(
            413,
            f"Request exceeds the maximum allowed number of bytes ({size} > "
            f"{self.max_batch_bytes}).",
            type_="request_too_large",
        )

    def _check_requests(self, requests: Any) -> list[JSONDict]:
        if requests is _MISSING:
            raise _ApiError(400, "requests: Field required")
        if not isinstance(requests, list):
            raise _ApiError(400, "requests: Input should be a valid list")
        if not requests:
            raise _ApiError(
                400, "requests: List should have at least 1 item after validation, not 0"
            )
        if len(requests) > self.max_requests_per_batch:
            raise _ApiError(
                400,
                f"requests: List should have at most {self.max_requests_per_batch} items after "
                f"validation, not {len(requests)}",
            )
        seen: dict[str, int] = {}
        for index, req in enumerate(requests):
            where = f"requests.{index}"
            if not isinstance(req, dict):
                raise _ApiError(400, f"{where}: Input should be a valid dictionary")
            for name in ("custom_id", "params"):
                if name not in req:
                    raise _ApiError(400, f"{where}.{name}: Field required")
            extra = sorted(set(req) - {"custom_id", "params"})
            if extra:
                raise _ApiError(400, f"{where}.{extra[0]}: Extra inputs are not permitted")
            custom_id = req["custom_id"]
            if not isinstance(custom_id, str):
                raise _ApiError(400, f"{where}.custom_id: Input should be a valid string")
            if not CUSTOM_ID_RE.match(custom_id):
                raise _ApiError(
                    400, f"{where}.custom_id: String should match pattern '{CUSTOM_ID_PATTERN}'"
                )
            if custom_id in seen:
                raise _ApiError(
                    400,
                    f"{where}.custom_id: Duplicate custom_id '{custom_id}' (first used by "
                    f"requests.{seen[custom_id]}). Each custom_id must be unique within the batch.",
                )
            seen[custom_id] = index
            if not isinstance(req["params"], dict):
                raise _ApiError(400, f"{where}.params: Input should be a valid dictionary")
        return requests

    # ------------------------------------------------------------------ list / retrieve

    def _h_list_batches(self, request: Request) -> Response:
        raw_limit = request.args.get("limit")
        limit = 20
        if raw_limit is not None:
            try:
                limit = int(raw_limit)
            except ValueError:
                raise _ApiError(400, "limit: Input should be a valid integer") from None
            if not 1 <= limit <= 1000:
                raise _ApiError(400, f"limit: must be between 1 and 1000, got {limit}")
        after_id = request.args.get("after_id")
        before_id = request.args.get("before_id")
        if after_id is not None and before_id is not None:
            raise _ApiError(400, "Only one of after_id and before_id may be given.")
        with self._lock:
            # Newest first; deleted batches keep their place so cursors stay valid.
            ordered = list(reversed(self._batches.values()))
            ids = [s.obj["id"] for s in ordered]
            cursor = after_id if after_id is not None else before_id
            if cursor is not None and cursor not in ids:
                name = "after_id" if after_id is not None else "before_id"
                raise _ApiError(400, f"{name}: no message batch with id '{cursor}'.")
            if after_id is not None:
                candidates = [s for s in ordered[ids.index(after_id) + 1 :] if not s.deleted]
                page = candidates[:limit]
                has_more = len(candidates) > limit
            elif before_id is not None:
                candidates = [s for s in ordered[: ids.index(before_id)] if not s.deleted]
                page = candidates[-limit:]
                has_more = len(candidates) > limit
            else:
                candidates = [s for s in ordered if not s.deleted]
                page = candidates[:limit]
                has_more = len(candidates) > limit
            data = [copy.deepcopy(s.obj) for s in page]
        return self._json(
            {
                "data": data,
                "has_more": has_more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    def _h_retrieve(self, request: Request, batch_id: str) -> Response:
        with self._lock:
            if self.faults.rate_limit_retrieves > 0:
                self.faults.rate_limit_retrieves -= 1
                raise _rate_limited()
            if self.faults.overloaded_retrieves > 0:
                self.faults.overloaded_retrieves -= 1
                raise _overloaded()
            state = self._get_batch(batch_id)
            status = state.obj["processing_status"]
            if not self._manual and status != "ended":
                if status == "canceling":
                    self._advance(state)
                else:
                    state.polls += 1
                    if state.polls >= self.polls_per_step:
                        state.polls = 0
                        self._advance(state)
            return self._json(copy.deepcopy(state.obj))

    # ------------------------------------------------------------------ cancel / delete

    def _h_cancel(self, request: Request, batch_id: str) -> Response:
        with self._lock:
            state = self._get_batch(batch_id)
            status = state.obj["processing_status"]
            if status == "ended":
                raise _ApiError(
                    400,
                    f"Message batch '{batch_id}' has already ended and can no longer be canceled.",
                )
            if status == "in_progress":
                state.obj["processing_status"] = "canceling"
                state.obj["cancel_initiated_at"] = _rfc3339(datetime.now(UTC))
                state.polls = 0
            return self._json(copy.deepcopy(state.obj))

    def _h_delete(self, request: Request, batch_id: str) -> Response:
        with self._lock:
            state = self._get_batch(batch_id)
            status = state.obj["processing_status"]
            if status != "ended":
                raise _ApiError(
                    400,
                    f"Message batch '{batch_id}' is still processing (processing_status "
                    f"'{status}'); cancel it and wait for it to end before deleting it.",
                )
            state.deleted = True
        return self._json({"id": batch_id, "type": "message_batch_deleted"})

    # ------------------------------------------------------------------ results

    def _h_results(self, request: Request, batch_id: str) -> Response:
        with self._lock:
            state = self._get_batch(batch_id)
            status = state.obj["processing_status"]
            if status != "ended":
                raise _ApiError(
                    404,
                    f"Results for message batch '{batch_id}' are not available yet: "
                    f"processing has not ended (processing_status '{status}').",
                    type_="not_found_error",
                )
            body = state.results_body
        return Response(body, status=200, mimetype="application/x-jsonl")

    # ------------------------------------------------------------------ state machine

    def _advance(self, state: _BatchState) -> None:
        """One step: an ``in_progress`` or ``canceling`` batch ends. Caller holds the lock."""
        obj = state.obj
        status = obj["processing_status"]
        if status == "ended":
            return
        total = len(state.requests)
        if status == "canceling":
            n_run, rest = total // 2, "canceled"
        elif state.expire:
            n_run, rest = total // 2, "expired"
        else:
            n_run, rest = total, "expired"
        results: list[JSONDict] = []
        counts = _counts()
        for index, req in enumerate(state.requests):
            if index < n_run:
                result = self._execute(req["params"], state.param_errors[index])
            else:
                result = {"type": rest}
            counts[result["type"]] += 1
            results.append({"custom_id": req["custom_id"], "result": result})
        shuffled = list(results)
        self._rng.shuffle(shuffled)
        state.results = results
        state.results_body = "".join(json.dumps(r) + "\n" for r in shuffled).encode("utf-8")
        obj["processing_status"] = "ended"
        obj["request_counts"] = counts
        obj["ended_at"] = _rfc3339(datetime.now(UTC))
        obj["results_url"] = f"{self.base_url}/v1/messages/batches/{obj['id']}/results"

    def _execute(self, params: JSONDict, param_error: str | None) -> JSONDict:
        """Answer one request. Caller holds the lock."""
        if param_error is not None:
            return _errored("invalid_request_error", param_error)
        messages = params["messages"]
        text = ""
        for message in reversed(messages):
            if message.get("role") == "user":
                text = _content_text(message.get("content"))
                break
        for marker, (type_, message_text) in ERROR_MARKERS.items():
            if marker in text:
                return _errored(type_, message_text)
        problem = features.image_problem(params)
        if problem is not None:
            return _errored("invalid_request_error", problem)
        turn = features.last_turn_text(params)
        thinking = features.thinking_block(params, turn, self._new_id)
        structured = features.structured_answer(params, turn, self._new_id)
        if structured is not None or thinking is not None:
            return self._featured(params, thinking, structured, text or turn)
        text = text or turn  # a turn of tool results only: the answer echoes them
        full = "echo: " + text
        cut, stop_sequence = len(full), None
        for seq in params.get("stop_sequences") or []:
            position = full.find(seq) if seq else -1
            if 0 <= position < cut:
                cut, stop_sequence = position, seq
        output = full[:cut]
        words = list(re.finditer(r"\S+", output))
        max_tokens = params["max_tokens"]
        stop_reason = "stop_sequence" if stop_sequence is not None else "end_turn"
        if len(words) > max_tokens:
            output = output[: words[max_tokens - 1].end()]
            words = words[:max_tokens]
            stop_reason, stop_sequence = "max_tokens", None
        return {
            "type": "succeeded",
            "message": {
                "id": self._new_id("msg_"),
                "type": "message",
                "role": "assistant",
                "model": params["model"],
                "content": [{"type": "text", "text": output}],
                "stop_reason": stop_reason,
                "stop_sequence": stop_sequence,
                "usage": self._usage(params, len(words)),
            },
        }

    def _featured(
        self,
        params: JSONDict,
        thinking: JSONDict | None,
        structured: tuple[list[JSONDict], str] | None,
        text: str,
    ) -> JSONDict:
        """An answer with a thinking block, a tool call or structured JSON. Caller holds the
        lock."""
        plain = [{"type": "text", "text": "echo: " + text}]
        content, stop_reason = structured or (plain, "end_turn")
        answer_tokens = sum(tokens(json.dumps(b)) for b in content)
        thinking_tokens = len(thinking["thinking"].split()) if thinking else 0
        usage = self._usage(params, answer_tokens + thinking_tokens)
        if thinking is not None:
            usage["output_tokens_details"] = {"thinking_tokens": thinking_tokens}
        return {
            "type": "succeeded",
            "message": {
                "id": self._new_id("msg_"),
                "type": "message",
                "role": "assistant",
                "model": params["model"],
                "content": ([thinking] if thinking else []) + content,
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": usage,
            },
        }

    def _usage(self, params: JSONDict, output_tokens: int) -> JSONDict:
        """Token usage with prompt caching. Caller holds the lock.

        The prompt is split into pieces, in order: each tool definition (canonical JSON without
        ``cache_control``), the system prompt (the string, or each text block), then each
        message's content (the string, or each block: its text, or canonical JSON of a non-text
        block). Each piece costs :func:`tokens`. The cacheable prefix ends at the last piece
        carrying ``cache_control``; if it has at least ``min_cache_tokens`` tokens it is looked
        up by ``(model, prefix without cache_control)``: a miss writes it (split between
        ``ephemeral_5m`` / ``ephemeral_1h`` by the TTL of the breakpoint closing each segment),
        a hit reads it.
        """
        pieces = _pieces(params)
        prompt = sum(p.tokens for p in pieces)
        write_5m = write_1h = read = 0
        last = max((i for i, p in enumerate(pieces) if p.cache_control is not None), default=-1)
        if last >= 0:
            prefix = pieces[: last + 1]
            prefix_tokens = sum(p.tokens for p in prefix)
            if prefix_tokens >= self.min_cache_tokens:
                key = (str(params["model"]), _canonical([p.key for p in prefix]))
                if key in self._cache:
                    read = prefix_tokens
                else:
                    self._cache[key] = prefix_tokens
                    segment = 0
                    for piece in prefix:
                        segment += piece.tokens
                        if piece.cache_control is not None:
                            if piece.cache_control.get("ttl") == "1h":
                                write_1h += segment
                            else:
                                write_5m += segment
                            segment = 0
        write = write_5m + write_1h
        return {
            "input_tokens": prompt - write - read,
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": write_5m,
                "ephemeral_1h_input_tokens": write_1h,
            },
            "output_tokens": output_tokens,
            "service_tier": "batch",
        }


# ---------------------------------------------------------------------- helpers


class _Missing:
    pass


_MISSING: Any = _Missing()


def _counts(processing: int = 0) -> dict[str, int]:
    return {"processing": processing, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}


def _rate_limited() -> _ApiError:
    return _ApiError(
        429,
        "Number of requests has exceeded your rate limit (emulated). Please try again later.",
        type_="rate_limit_error",
        headers=dict(RETRY_HEADERS),
    )


def _overloaded() -> _ApiError:
    return _ApiError(
        529, "Overloaded (emulated).", type_="overloaded_error", headers=dict(RETRY_HEADERS)
    )


def _errored(type_: str, message: str) -> JSONDict:
    return {"type": "errored", "error": _error_response(type_, message)}


def _pieces(params: JSONDict) -> list[_Piece]:
    pieces: list[_Piece] = []
    for index, tool in enumerate(params.get("tools") or []):
        body = _without_cache_control(tool)
        pieces.append(
            _Piece(["tool", index, body], tokens(_canonical(body)), tool.get("cache_control"))
        )
    system = params.get("system")
    if isinstance(system, str):
        pieces.append(_Piece(["system", system], tokens(system), None))
    elif isinstance(system, list):
        for block in system:
            pieces.append(
                _Piece(["system", block["text"]], tokens(block["text"]), block.get("cache_control"))
            )
    for index, message in enumerate(params["messages"]):
        role, content = message["role"], message["content"]
        if isinstance(content, str):
            pieces.append(_Piece(["message", index, role, content], tokens(content), None))
            continue
        for block in content:
            body = _without_cache_control(block)
            text = body["text"] if body.get("type") == "text" else _canonical(body)
            pieces.append(
                _Piece(["message", index, role, body], tokens(text), block.get("cache_control"))
            )
    return pieces


def _cache_control_problem(value: Any, where: str) -> str | None:
    if not isinstance(value, dict) or value.get("type") != "ephemeral":
        return f"{where}.cache_control: Input should be an object with type 'ephemeral'"
    ttl = value.get("ttl", "5m")
    if ttl not in CACHE_TTLS:
        return f"{where}.cache_control.ttl: Input should be '5m' or '1h'"
    extra = sorted(set(value) - {"type", "ttl"})
    if extra:
        return f"{where}.cache_control.{extra[0]}: Extra inputs are not permitted"
    return None


_BLOCK_FIELDS = {
    "text": ({"type", "text"}, {"cache_control", "citations"}),
    "tool_use": ({"type", "id", "name", "input"}, {"cache_control"}),
    "tool_result": ({"type", "tool_use_id"}, {"cache_control", "content", "is_error"}),
}
_TOOL_FIELDS = {
    "type",
    "name",
    "description",
    "input_schema",
    "cache_control",
    "strict",
    "input_examples",
    "defer_loading",
    "allowed_callers",
    "eager_input_streaming",
}
TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def _block_problem(block: Any, where: str, role: str = "user") -> str | None:
    """Text, tool_use (assistant turns) and tool_result (user turns) blocks, as documented:
    tool_use {type, id, name, input: object}; tool_result {type, tool_use_id, content?:
    string | text blocks, is_error?: bool}."""
    if not isinstance(block, dict):
        return f"{where}: Input should be a valid dictionary"
    kind = block.get("type")
    if not isinstance(kind, str):
        return f"{where}.type: Field required"
    fields = _BLOCK_FIELDS.get(kind)
    if fields is None:
        return None  # images, documents, thinking...: not checked here
    required, optional = fields
    missing = sorted(required - set(block))
    if missing:
        return f"{where}.{missing[0]}: Field required"
    extra = sorted(set(block) - required - optional)
    if extra:
        return f"{where}.{extra[0]}: Extra inputs are not permitted"
    if kind == "text" and not isinstance(block["text"], str):
        return f"{where}.text: Input should be a valid string"
    if kind == "tool_use":
        if role != "assistant":
            return f"{where}: tool_use blocks may only appear in assistant turns"
        if not isinstance(block["id"], str) or not block["id"]:
            return f"{where}.id: Input should be a valid string"
        if not isinstance(block["name"], str) or not TOOL_NAME_RE.match(block["name"]):
            return f"{where}.name: String should match pattern '{TOOL_NAME_RE.pattern}'"
        if not isinstance(block["input"], dict):
            return f"{where}.input: Input should be a valid dictionary"
    if kind == "tool_result":
        if role != "user":
            return f"{where}: tool_result blocks may only appear in user turns"
        if not isinstance(block["tool_use_id"], str) or not block["tool_use_id"]:
            return f"{where}.tool_use_id: Input should be a valid string"
        if "is_error" in block and not isinstance(block["is_error"], bool):
            return f"{where}.is_error: Input should be a valid boolean"
        content = block.get("content")
        if content is not None and not isinstance(content, str):
            if not isinstance(content, list):
                return f"{where}.content: Input should be a string or a list of blocks"
            for number, inner in enumerate(content):
                if not isinstance(inner, dict) or inner.get("type") == "tool_result":
                    return f"{where}.content.{number}: Input should be a text or image block"
                problem = _block_problem(inner, f"{where}.content.{number}", role)
                if problem is not None:
                    return problem
    return None


def _tool_pairing_problem(messages: list[Any], where: str) -> str | None:
    """Every tool_use is answered by a tool_result in the next (user) turn, results first,
    and every tool_result answers a tool_use of the turn before it."""
    for index, message in enumerate(messages):
        content = message.get("content")
        blocks = content if isinstance(content, list) else []
        uses = [b["id"] for b in blocks if b.get("type") == "tool_use"]
        results = [b["tool_use_id"] for b in blocks if b.get("type") == "tool_result"]
        if results:
            before = messages[index - 1].get("content") if index else None
            asked = {
                b["id"]
                for b in (before if isinstance(before, list) else [])
                if isinstance(b, dict) and b.get("type") == "tool_use"
            }
            stray = [r for r in results if r not in asked]
            if stray:
                return (
                    f"{where}.messages.{index}.content: unexpected `tool_use_id` found in "
                    f"`tool_result` blocks: {stray[0]}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
            kinds = [b.get("type") for b in blocks]
            if kinds[: len(results)] != ["tool_result"] * len(results):
                return (
                    f"{where}.messages.{index}.content: tool_result blocks must come first in "
                    "the user turn"
                )
        if uses and index + 1 < len(messages):
            after = messages[index + 1].get("content")
            answered = {
                b.get("tool_use_id")
                for b in (after if isinstance(after, list) else [])
                if isinstance(b, dict) and b.get("type") == "tool_result"
            }
            missing = [u for u in uses if u not in answered]
            if missing:
                return (
                    f"{where}.messages.{index + 1}: `tool_use` ids were found without "
                    f"`tool_result` blocks immediately after: {missing[0]}. Each `tool_use` "
                    "block must have a corresponding `tool_result` block in the next message."
                )
    return None


def _tools_problem(tools: list[Any], where: str) -> str | None:
    """Client tools: {name, input_schema: {type: object, ...}, description?, strict?, ...}."""
    names = set()
    for index, tool in enumerate(tools):
        at = f"{where}.tools.{index}"
        if tool.get("type", "custom") != "custom":
            continue  # a server tool (web search, ...): not checked here
        name = tool.get("name")
        if not isinstance(name, str) or not TOOL_NAME_RE.match(name):
            return f"{at}.name: String should match pattern '{TOOL_NAME_RE.pattern}'"
        if name in names:
            return f"{where}.tools: Tool names must be unique ({name!r})"
        names.add(name)
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            return f"{at}.input_schema: Field required"
        if schema.get("type") != "object":
            return f"{at}.input_schema.type: Input should be 'object'"
        if "description" in tool and not isinstance(tool["description"], str):
            return f"{at}.description: Input should be a valid string"
        if "strict" in tool and not isinstance(tool["strict"], bool):
            return f"{at}.strict: Input should be a valid boolean"
        extra = sorted(set(tool) - _TOOL_FIELDS)
        if extra:
            return f"{at}.{extra[0]}: Extra inputs are not permitted"
    return None


def _tool_choice_problem(choice: Any, tools: Any, where: str) -> str | None:
    """{type: auto | any | tool | none, name (tool only), disable_parallel_tool_use?}."""
    at = f"{where}.tool_choice"
    if not isinstance(choice, dict):
        return f"{at}: Input should be a valid dictionary"
    kind = choice.get("type")
    if kind not in ("auto", "any", "tool", "none"):
        return f"{at}.type: Input should be 'auto', 'any', 'tool' or 'none'"
    allowed = {"type"} | ({"name"} if kind == "tool" else set())
    if kind != "none":
        allowed.add("disable_parallel_tool_use")
    extra = sorted(set(choice) - allowed)
    if extra:
        return f"{at}.{extra[0]}: Extra inputs are not permitted"
    if "disable_parallel_tool_use" in choice and not isinstance(
        choice["disable_parallel_tool_use"], bool
    ):
        return f"{at}.disable_parallel_tool_use: Input should be a valid boolean"
    if kind == "tool":
        names = {t.get("name") for t in tools or [] if isinstance(t, dict)}
        if not isinstance(choice.get("name"), str):
            return f"{at}.name: Field required"
        if choice["name"] not in names:
            return f"{at}.name: Tool '{choice['name']}' not found in tools"
    if kind in ("any", "tool") and not tools:
        return f"{at}: tool_choice of type '{kind}' needs tools"
    return None


def _params_problem(params: JSONDict, where: str) -> str | None:
    """The first problem with one request's ``params``, or None."""
    model = params.get("model")
    if not isinstance(model, str) or not model:
        return f"{where}.model: Field required (a non-empty string)"
    max_tokens = params.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        return f"{where}.max_tokens: Field required (an integer)"
    if max_tokens < 1:
        return f"{where}.max_tokens: Input should be greater than or equal to 1"
    if params.get("stream") is True:
        return f"{where}.stream: stream is not supported in batches"
    messages = params.get("messages")
    if not isinstance(messages, list) or not messages:
        return f"{where}.messages: Field required (a non-empty list)"
    breakpoints: list[tuple[str, JSONDict]] = []
    tools = params.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return f"{where}.tools: Input should be a valid list"
        for index, tool in enumerate(tools):
            if not isinstance(tool, dict):
                return f"{where}.tools.{index}: Input should be a valid dictionary"
            if "cache_control" in tool:
                breakpoints.append((f"{where}.tools.{index}", tool["cache_control"]))
        problem = _tools_problem(tools, where)
        if problem is not None:
            return problem
    if "tool_choice" in params:
        problem = _tool_choice_problem(params["tool_choice"], tools, where)
        if problem is not None:
            return problem
    system = params.get("system")
    if system is not None and not isinstance(system, str):
        if not isinstance(system, list):
            return f"{where}.system: Input should be a string or a list of text blocks"
        for index, block in enumerate(system):
            if (
                not isinstance(block, dict)
                or block.get("type") != "text"
                or not isinstance(block.get("text"), str)
            ):
                return f"{where}.system.{index}: Input should be a text block"
            if "cache_control" in block:
                breakpoints.append((f"{where}.system.{index}", block["cache_control"]))
    for index, message in enumerate(messages):
        at = f"{where}.messages.{index}"
        if not isinstance(message, dict):
            return f"{at}: Input should be a valid dictionary"
        if message.get("role") not in ("user", "assistant"):
            return f"{at}.role: Input should be 'user' or 'assistant'"
        content = message.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            return f"{at}.content: Input should be a string or a list of content blocks"
        if not content and not (message["role"] == "assistant" and index == len(messages) - 1):
            return (
                f"{at}.content: all messages must have non-empty content except for the "
                "optional final assistant message"
            )
        for number, block in enumerate(content):
            problem = _block_problem(block, f"{at}.content.{number}", message["role"])
            if problem is not None:
                return problem
            if "cache_control" in block:
                breakpoints.append((f"{at}.content.{number}", block["cache_control"]))
    problem = _tool_pairing_problem(messages, where)
    if problem is not None:
        return problem
    stop_sequences = params.get("stop_sequences")
    if stop_sequences is not None and (
        not isinstance(stop_sequences, list) or not all(isinstance(s, str) for s in stop_sequences)
    ):
        return f"{where}.stop_sequences: Input should be a list of strings"
    problem = features.params_problem(params, where)
    if problem is not None:
        return problem
    if len(breakpoints) > MAX_CACHE_BREAKPOINTS:
        return (
            f"{where}: A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be "
            f"provided. Found {len(breakpoints)}."
        )
    seen_5m = False
    for at, cache_control in breakpoints:
        problem = _cache_control_problem(cache_control, at)
        if problem is not None:
            return problem
        ttl = cache_control.get("ttl", "5m")
        if ttl == "5m":
            seen_5m = True
        elif seen_5m:
            return (
                f"{at}.cache_control: a ttl='1h' cache_control block must not come after a "
                "ttl='5m' one (tools, system, messages order)."
            )
    return None
