"""In-process emulator of the Gemini Developer API's Batch mode and Files API, for tests.

Drive it with the real ``google-genai`` SDK::

    with GeminiBatchEmulator() as emu:
        client = genai.Client(api_key="test", http_options={"base_url": emu.base_url})

(or ``GOOGLE_GEMINI_BASE_URL=emu.base_url``). ``base_url`` is the server root: the SDK adds
``/v1/...`` and ``/upload/v1/files`` itself (its default API version in 3.x; ``v1beta`` paths
are served too).

Behaviour follows ai.google.dev/gemini-api/docs/batch-mode and the SDK's wire format:
``POST /v1/models/{model}:batchGenerateContent`` with inline requests (the whole request
under 20 MB) or an uploaded JSONL file (``{"key", "request"}`` lines, 2 GB a file); the job is
an operation whose ``metadata`` holds ``state`` (BATCH_STATE_PENDING -> _RUNNING ->
_SUCCEEDED, or _CANCELLED / _EXPIRED / _FAILED), ``batchStats`` (int64 counts as strings) and,
once ended, ``output``: ``inlinedResponses`` (``{response | error, metadata}``) for inline
input, a ``responsesFile`` (JSONL of ``{key, response | error}``) for file input, both in
shuffled order. ``GET /v1/batches`` lists newest first with ``pageSize``/``pageToken``;
``POST /v1/batches/{id}:cancel``; the Files API's resumable upload (``X-Goog-Upload-*``
headers) and ``GET /v1/files/{id}:download?alt=media`` (generated files only). Errors use
Google's ``{"error": {"code", "message", "status"}}`` shape; the key is ``x-goog-api-key``.

Batches advance one step every ``polls_per_step`` gets. Requests are answered
deterministically: markers in the last user text select per-line errors,
``[[error:invalid]]`` (400 INVALID_ARGUMENT) and ``[[error:unavailable]]`` (503 UNAVAILABLE),
or ``[[safety]]`` (finishReason SAFETY) and ``[[blocked]]`` (prompt blocked, no candidates).
Otherwise the answer is ``"echo: " + text``, one token per word, cut at the first
``stopSequences`` entry and truncated to ``maxOutputTokens`` words (finishReason MAX_TOKENS).
As ai.google.dev/gemini-api/docs/structured-output and /function-calling describe:
``generationConfig.responseJsonSchema`` (with ``responseMimeType: application/json``) makes
the text JSON valid for the schema; ``tools[].functionDeclarations`` with
``toolConfig.functionCallingConfig.mode`` ``ANY`` make the model call the first allowed
function (``allowedFunctionNames``, else the first declared), ``AUTO`` (the default) one
whose name is in the last user text, ``NONE`` never: a ``functionCall`` part ``{name, args}``
(args valid for ``parametersJsonSchema``), finishReason STOP.
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
from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.emulators._server import EmulatorServer
from tests.emulators.schema_values import example

JSONDict = dict[str, Any]

_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main."
MAX_INLINE_BYTES = 20 * 1024 * 1024  # "total request size under 20MB" (batch-mode docs)
MAX_FILE_BYTES = 2 * 1024**3  # "per-file maximum size of 2 GB" (Files API docs)
_REQUEST_FIELDS = frozenset(
    {
        "contents",
        "systemInstruction",
        "generationConfig",
        "tools",
        "toolConfig",
        "safetySettings",
        "cachedContent",
        "model",
    }
)
_ERROR_MARKERS = {
    "[[error:invalid]]": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    "[[error:unavailable]]": (503, "UNAVAILABLE", "The model is overloaded (emulated)."),
}
_STATUS_OF = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
}


@dataclass
class Faults:
    """One-shot faults; each counter is consumed by the next N matching events."""

    #: Next N creates answer 429 RESOURCE_EXHAUSTED.
    rate_limit_creates: int = 0
    #: Next N ``GET batches/{id}`` answer 429 (the batch does not advance).
    rate_limit_gets: int = 0
    #: Next N batches created end BATCH_STATE_EXPIRED with only the first half of their
    #: requests (input order) answered; the rest are absent from the output.
    expire_batches: int = 0
    #: Called with the new operation after it is stored and before the response is sent.
    after_create: Callable[[JSONDict], None] | None = None


class _ApiError(Exception):
    def __init__(self, code: int, message: str, status: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or _STATUS_OF.get(code, "INTERNAL")


@dataclass
class _Batch:
    op: JSONDict
    model: str
    #: (key, request) in input order; key is metadata.key (inline) or the line's key (file).
    requests: list[tuple[str, Any]]
    inline: bool
    expire: bool
    polls: int = 0
    #: Per request: a validation problem found at create (file input), or None.
    problems: list[str | None] = field(default_factory=list)


def tokens(text: str) -> int:
    """The emulator's token count of one string."""
    return len(text) // 4 + 1


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class GeminiBatchEmulator(EmulatorServer):
    """A threaded local HTTP server emulating the Gemini Batch and Files APIs."""

    NAME = "gemini-batch-emulator"

    def __init__(self, api_key: str = "gemini-test", polls_per_step: int = 1, seed: int = 0):
        self.api_key = api_key
        self.polls_per_step = polls_per_step
        self.faults = Faults()
        self.max_inline_bytes = MAX_INLINE_BYTES
        self.max_file_bytes = MAX_FILE_BYTES
        #: thoughtsTokenCount reported per answer (billed as output).
        self.thoughts_tokens = 0
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._batches: dict[str, _Batch] = {}
        self._files: dict[str, tuple[JSONDict, bytes]] = {}
        self._uploads: dict[str, tuple[JSONDict, bytearray]] = {}
        self._system_seen: set[str] = set()  # implicit caching of repeated system prompts
        self._manual = False

    # ------------------------------------------------------------------ observation

    def batches(self) -> list[JSONDict]:
        """Every operation created (deep copies), creation order."""
        with self._lock:
            return [copy.deepcopy(b.op) for b in self._batches.values()]

    def requests_seen(self) -> list[tuple[str, JSONDict]]:
        """(key, request) of every created batch, creation order."""
        with self._lock:
            return [copy.deepcopy(r) for b in self._batches.values() for r in b.requests]

    def inline_batches(self) -> list[bool]:
        with self._lock:
            return [b.inline for b in self._batches.values()]

    def set_step_mode(self, manual: bool) -> None:
        with self._lock:
            self._manual = manual

    def advance_all(self) -> None:
        with self._lock:
            for b in self._batches.values():
                self._advance(b)

    # ------------------------------------------------------------------ plumbing

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        try:
            response = self._dispatch(request)
        except _ApiError as err:
            body = {"error": {"code": err.code, "message": err.message, "status": err.status}}
            response = Response(json.dumps(body), status=err.code, mimetype="application/json")
        except Exception as exc:  # pragma: no cover - emulator bug surfaced to the client
            body = {"error": {"code": 500, "message": repr(exc), "status": "INTERNAL"}}
            response = Response(json.dumps(body), status=500, mimetype="application/json")
        finally:
            with contextlib.suppress(Exception):
                request.get_data()
        return response(environ, start_response)

    @staticmethod
    def _json(body: Any, headers: dict[str, str] | None = None) -> Response:
        return Response(json.dumps(body), headers=headers, mimetype="application/json")

    def _dispatch(self, request: Request) -> Response:
        # An upload session URL authorises its own chunks (the SDK sends no key with them).
        session = "upload_id" in request.args and request.path.startswith("/upload/")
        if not session and request.headers.get("x-goog-api-key") != self.api_key:
            raise _ApiError(401, "API key not valid. Please pass a valid API key.")
        path, method = request.path, request.method
        routes: list[tuple[str, str, Callable[..., Response]]] = [
            ("POST", r"/models/([^/:]+):batchGenerateContent", self._create),
            ("GET", r"/batches", self._list),
            ("GET", r"/batches/([^/:]+)", self._get),
            ("POST", r"/batches/([^/:]+):cancel", self._cancel),
            ("POST", r"/files", self._upload),
            ("GET", r"/files/([^/:]+):download", self._download),
        ]
        for verb, pattern, handler in routes:
            prefix = r"/upload/(?:v1|v1beta)" if handler == self._upload else r"/(?:v1|v1beta)"
            found = re.fullmatch(prefix + pattern, path)
            if found and verb == method:
                return handler(request, *found.groups())
        raise _ApiError(404, f"Method not found: {method} {path}")

    def _new_id(self, nbytes: int = 8) -> str:
        return f"{self._rng.getrandbits(nbytes * 8):0{nbytes * 2}x}"

    # ------------------------------------------------------------------ files

    def _upload(self, request: Request) -> Response:
        command = request.headers.get("X-Goog-Upload-Command", "")
        with self._lock:
            if command == "start":
                size = int(request.headers.get("X-Goog-Upload-Header-Content-Length", "0"))
                if size > self.max_file_bytes:
                    raise _ApiError(400, f"File too large: {size} > {self.max_file_bytes} bytes")
                meta = (request.get_json(silent=True) or {}).get("file") or {}
                upload_id = self._new_id()
                self._uploads[upload_id] = (meta, bytearray())
                url = f"{self.base_url}{request.path}?upload_id={upload_id}"
                return self._json({}, {"X-Goog-Upload-URL": url, "X-Goog-Upload-Status": "active"})
            upload_id = request.args.get("upload_id", "")
            if upload_id not in self._uploads:
                raise _ApiError(404, "No such upload session.")
            meta, data = self._uploads[upload_id]
            if int(request.headers.get("X-Goog-Upload-Offset", "-1")) != len(data):
                raise _ApiError(400, "Upload offset does not match the bytes received.")
            data += request.get_data()
            if "finalize" not in command:
                return self._json({}, {"X-Goog-Upload-Status": "active"})
            del self._uploads[upload_id]
            name = f"files/{self._new_id()}"
            obj = {
                "name": name,
                "displayName": meta.get("displayName", ""),
                "mimeType": meta.get("mimeType", "application/octet-stream"),
                "sizeBytes": str(len(data)),
                "createTime": _now(),
                "state": "ACTIVE",
                "source": "UPLOADED",
            }
            self._files[name] = (obj, bytes(data))
        return self._json({"file": obj}, {"X-Goog-Upload-Status": "final"})

    def _download(self, request: Request, file_id: str) -> Response:
        with self._lock:
            found = self._files.get(f"files/{file_id}")
        if found is None:
            raise _ApiError(404, f"File files/{file_id} not found.")
        obj, data = found
        if obj["source"] != "GENERATED":
            raise _ApiError(400, "Only generated files can be downloaded.")
        return Response(data, mimetype="application/jsonl")

    # ------------------------------------------------------------------ batches

    def _create(self, request: Request, model: str) -> Response:
        with self._lock:
            if self.faults.rate_limit_creates > 0:
                self.faults.rate_limit_creates -= 1
                raise _ApiError(429, "Resource has been exhausted (e.g. check quota).")
        raw = request.get_data()
        if len(raw) > self.max_inline_bytes:
            raise _ApiError(
                400, f"Request payload size exceeds the limit: {self.max_inline_bytes} bytes."
            )
        batch = (json.loads(raw) if raw else {}).get("batch")
        if not isinstance(batch, dict) or not isinstance(batch.get("inputConfig"), dict):
            raise _ApiError(400, "batch.inputConfig is required.")
        source = batch["inputConfig"]
        with self._lock:
            if "requests" in source:
                items = (source["requests"] or {}).get("requests") or []
                requests = [
                    (str((i.get("metadata") or {}).get("key", n)), i.get("request"))
                    for n, i in enumerate(items)
                ]
                for n, (_, req) in enumerate(requests):
                    problem = _problem(req)
                    if problem:  # inline requests are validated with the create call
                        raise _ApiError(
                            400, f"batch.inputConfig.requests.requests[{n}].request: {problem}"
                        )
                problems: list[str | None] = [None] * len(requests)
                inline = True
            elif "fileName" in source:
                found = self._files.get(source["fileName"])
                if found is None:
                    raise _ApiError(404, f"File {source['fileName']} not found.")
                requests, problems = _file_requests(found[1])
                inline = False
            else:
                raise _ApiError(400, "batch.inputConfig needs requests or fileName.")
            if not requests:
                raise _ApiError(400, "The batch has no requests.")
            name = f"batches/{self._new_id()}"
            stamp = _now()
            meta = {
                "@type": _TYPE + "GenerateContentBatch",
                "name": name,
                "model": f"models/{model}",
                "displayName": batch.get("displayName", ""),
                "inputConfig": {"fileName": source["fileName"]} if not inline else {},
                "createTime": stamp,
                "updateTime": stamp,
                "state": "BATCH_STATE_PENDING",
                "batchStats": _stats(len(requests)),
            }
            op = {"name": name, "metadata": meta, "done": False}
            expire = self.faults.expire_batches > 0
            self.faults.expire_batches -= int(expire)
            self._batches[name] = _Batch(op, model, requests, inline, expire, problems=problems)
            result = copy.deepcopy(op)
        hook = self.faults.after_create
        if hook is not None:
            hook(result)
        return self._json(result)

    def _list(self, request: Request) -> Response:
        size = int(request.args.get("pageSize", "50"))
        start = int(request.args.get("pageToken") or 0)
        with self._lock:
            ordered = [copy.deepcopy(b.op) for b in reversed(self._batches.values())]
        page = ordered[start : start + size]
        body: JSONDict = {"operations": page}
        if start + size < len(ordered):
            body["nextPageToken"] = str(start + size)
        return self._json(body)

    def _get(self, request: Request, batch_id: str) -> Response:
        with self._lock:
            if self.faults.rate_limit_gets > 0:
                self.faults.rate_limit_gets -= 1
                raise _ApiError(429, "Resource has been exhausted (e.g. check quota).")
            b = self._batch(batch_id)
            if not self._manual and not b.op["done"]:
                b.polls += 1
                if b.polls >= self.polls_per_step:
                    b.polls = 0
                    self._advance(b)
            return self._json(copy.deepcopy(b.op))

    def _cancel(self, request: Request, batch_id: str) -> Response:
        with self._lock:
            b = self._batch(batch_id)
            if b.op["done"]:
                raise _ApiError(400, "The batch has already ended.", "FAILED_PRECONDITION")
            self._finish(b, "BATCH_STATE_CANCELLED", len(b.requests) // 2)
        return self._json({})

    def _batch(self, batch_id: str) -> _Batch:
        b = self._batches.get(f"batches/{batch_id}")
        if b is None:
            raise _ApiError(404, f"Batch batches/{batch_id} not found.")
        return b

    # ------------------------------------------------------------------ state machine

    def _advance(self, b: _Batch) -> None:
        """PENDING -> RUNNING -> SUCCEEDED (or EXPIRED with half done). Caller holds the lock."""
        meta = b.op["metadata"]
        if b.op["done"]:
            return
        if meta["state"] == "BATCH_STATE_PENDING":
            meta["state"] = "BATCH_STATE_RUNNING"
            meta["updateTime"] = _now()
        elif b.expire:
            self._finish(b, "BATCH_STATE_EXPIRED", len(b.requests) // 2)
        else:
            self._finish(b, "BATCH_STATE_SUCCEEDED", len(b.requests))

    def _finish(self, b: _Batch, state: str, n_run: int) -> None:
        lines = []
        ok = failed = 0
        for n, (key, req) in enumerate(b.requests[:n_run]):
            answer = self._answer(b.model, req, b.problems[n])
            ok += "response" in answer
            failed += "error" in answer
            lines.append((key, answer))
        self._rng.shuffle(lines)
        meta = b.op["metadata"]
        if b.inline:
            output: JSONDict = {
                "inlinedResponses": {
                    "inlinedResponses": [{**a, "metadata": {"key": k}} for k, a in lines]
                }
            }
        else:
            name = f"files/batch-{self._new_id()}"
            data = "".join(json.dumps({"key": k, **a}) + "\n" for k, a in lines).encode()
            obj = {"name": name, "mimeType": "application/jsonl", "source": "GENERATED"}
            self._files[name] = (obj, data)
            output = {"responsesFile": name}
        stats = _stats(len(b.requests))
        stats.update(
            successfulRequestCount=str(ok),
            failedRequestCount=str(failed),
            pendingRequestCount=str(len(b.requests) - ok - failed),
        )
        meta.update(state=state, batchStats=stats, output=output, updateTime=_now(), endTime=_now())
        b.op["done"] = True
        b.op["response"] = {
            "@type": _TYPE + "GenerateContentBatchOutput",
            **output,
        }

    def _answer(self, model: str, req: Any, problem: str | None) -> JSONDict:
        if problem is not None:
            return {"error": {"code": 400, "message": problem, "status": "INVALID_ARGUMENT"}}
        text = ""
        for content in reversed(req["contents"]):
            if content.get("role", "user") == "user":
                text = " ".join(p["text"] for p in content["parts"] if "text" in p)
                break
        for marker, (code, status, message) in _ERROR_MARKERS.items():
            if marker in text:
                return {"error": {"code": code, "message": message, "status": status}}
        system = " ".join(
            p.get("text", "") for p in (req.get("systemInstruction") or {}).get("parts", [])
        )
        prompt = sum(tokens(p.get("text", "")) for c in req["contents"] for p in c["parts"])
        prompt += tokens(system) if system else 0
        cached = tokens(system) if system and f"{model}\0{system}" in self._system_seen else 0
        if system:
            self._system_seen.add(f"{model}\0{system}")
        usage = {"promptTokenCount": prompt, "totalTokenCount": prompt}
        if cached:
            usage["cachedContentTokenCount"] = cached
        if "[[blocked]]" in text:
            return {
                "response": {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": usage}
            }
        config = req.get("generationConfig") or {}
        full = "echo: " + text
        cut, reason = len(full), "STOP"
        for seq in config.get("stopSequences") or []:
            at = full.find(seq) if seq else -1
            if 0 <= at < cut:
                cut = at
        output = full[:cut]
        words = list(re.finditer(r"\S+", output))
        limit = config.get("maxOutputTokens")
        if limit is not None and len(words) > limit:
            output = output[: words[limit - 1].end()] if limit else ""
            words, reason = words[:limit], "MAX_TOKENS"
        if "[[safety]]" in text:
            reason = "SAFETY"
        parts: list[JSONDict] = [{"text": output}]
        call = _function_call(req, text)
        schema = config.get("responseJsonSchema")
        if call is not None:
            parts = [{"functionCall": call}]
            words = list(re.finditer(r"\S+", json.dumps(call)))
        elif isinstance(schema, dict) and reason == "STOP":
            output = json.dumps(example(schema))
            parts, words = [{"text": output}], list(re.finditer(r"\S+", output))
        usage.update(candidatesTokenCount=len(words), totalTokenCount=prompt + len(words))
        if self.thoughts_tokens:
            usage["thoughtsTokenCount"] = self.thoughts_tokens
            usage["totalTokenCount"] += self.thoughts_tokens
        return {
            "response": {
                "candidates": [
                    {
                        "content": {"parts": parts, "role": "model"},
                        "finishReason": reason,
                        "index": 0,
                    }
                ],
                "usageMetadata": usage,
                "modelVersion": model,
                "responseId": self._new_id(),
            }
        }


def _function_call(req: Any, text: str) -> JSONDict | None:
    """The functionCall the request's tools and toolConfig make the model answer, or None."""
    declared = [
        d
        for tool in req.get("tools") or []
        for d in (tool.get("functionDeclarations") or [] if isinstance(tool, dict) else [])
        if isinstance(d, dict) and isinstance(d.get("name"), str)
    ]
    config = (req.get("toolConfig") or {}).get("functionCallingConfig") or {}
    mode = config.get("mode", "AUTO")
    allowed = config.get("allowedFunctionNames")
    if allowed:
        declared = [d for d in declared if d["name"] in allowed]
    if mode == "AUTO":
        declared = [d for d in declared if d["name"] in text]
    if not declared or mode == "NONE":
        return None
    chosen = declared[0]
    args = example(chosen.get("parametersJsonSchema") or {"type": "object"})
    return {"name": chosen["name"], "args": args if isinstance(args, dict) else {}}


def _stats(n: int) -> JSONDict:
    return {"requestCount": str(n), "pendingRequestCount": str(n)}


def _problem(req: Any) -> str | None:
    if not isinstance(req, dict):
        return "must be a GenerateContentRequest object"
    unknown = sorted(set(req) - _REQUEST_FIELDS)
    if unknown:
        return f'Invalid JSON payload received. Unknown name "{unknown[0]}"'
    contents = req.get("contents")
    if not isinstance(contents, list) or not contents:
        return "contents is required"
    for c in contents:
        if not isinstance(c, dict) or c.get("role", "user") not in ("user", "model"):
            return "Please use a valid role: user, model."
        if not isinstance(c.get("parts"), list) or not c["parts"]:
            return "contents.parts must not be empty"
    return None


def _file_requests(data: bytes) -> tuple[list[tuple[str, Any]], list[str | None]]:
    """A JSONL input file -> (key, request) and per line its problem (errors as data)."""
    requests: list[tuple[str, Any]] = []
    problems: list[str | None] = []
    for n, raw in enumerate(data.splitlines()):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            requests.append((f"line-{n}", None))
            problems.append("the line is not JSON")
            continue
        requests.append((str(line.get("key", f"line-{n}")), line.get("request")))
        problems.append(_problem(line.get("request")))
    return requests, problems
