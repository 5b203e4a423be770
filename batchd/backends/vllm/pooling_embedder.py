"""The semantic cache's `vllm:<model dir>` embedder: texts embedded by a vLLM pooling model.

It runs through batchd's own engine layer (engine.EngineFeeder with a kind = embed
VllmSettings: runner "pooling", PoolingParams), in this process, one engine per model
directory, started at the first `embed` and shut down by `close_vllm_embedders` (also
registered with atexit, so the engine-core process never outlives the run).

How vLLM pools: for a sentence-transformers directory (modules.json) vLLM reads the
Pooling module's config (e.g. all-MiniLM-L6-v2: mean of the token vectors) and the
Normalize module, and takes sentence_bert_config.json's `max_seq_length` as the model
length, so its vectors are sentence-transformers' own. Texts longer than the model length
are cut to it here, at the tokenizer (special tokens kept), as sentence-transformers does.
Every vector is L2-normalized again here (float32), whatever the model's pooler does.

Engine settings: those of a [backends.vllm] model served from the same directory with
kind = "embed", when the worker has one; else `default_settings` (a small fixed cache,
a 0.1 GPU memory share, eager mode). It is an engine of its own even when the worker
serves the same directory (the worker's feeder admits only in its off-peak windows; a
lookup cannot wait for them), but in embedded mode it takes turns at steps with the
worker's engines in this process (their `gpu_turn` lock), so the worker's GPU-seconds
stay its own.
"""

from __future__ import annotations

import atexit
import itertools
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from batchd.backends.vllm.engine import EngineFeeder, GenRequest, GenResult
from batchd.cache.embedders import Spend
from batchd.config.cache_settings import VLLM_PREFIX
from batchd.config.settings import VllmSettings
from batchd.config.vllm_settings import EMBED
from batchd.errors import BatchdError

POOLING = {"task": "embed"}  # PoolingParams keywords of every request
DEFAULT_CACHE_BYTES = 256 << 20  # the default engine's fixed KV cache (a small share)
DEFAULT_MAX_SEQS = 64
# vLLM refuses to start unless this share of the GPU is free, even with a fixed cache size:
# small, so the embedder starts beside a worker's engines on the same GPU (CPU: unused)
DEFAULT_MEMORY_SHARE = 0.1

_ids = itertools.count()
_open: dict[Path, VllmEmbedder] = {}
_open_lock = threading.Lock()


def model_dir_problem(path: Path) -> str:
    """Why `path` cannot be a vLLM pooling model directory ("" = it can be tried)."""
    if not path.is_dir():
        return f"{path} is not a directory"
    if not (path / "config.json").is_file():
        return f"{path} holds no model (no config.json)"
    return ""


def check_model_dir(path: Path) -> None:
    """A BatchdError saying what to do when `path` cannot be a vLLM embedding model."""
    problem = model_dir_problem(path)
    if problem:
        raise BatchdError(
            f"The embedding target {VLLM_PREFIX}{path}: {problem}.",
            "Give vllm:<the directory of a model vLLM can run as a pooling (embedding) model, "
            'with config.json, tokenizer and weights>, or "" for the bundled all-MiniLM-L6-v2.',
        )


def default_settings(path: Path) -> VllmSettings:
    return VllmSettings(
        model=str(path),
        served_model_name=f"semantic-embedding:{path.name}",
        kind=EMBED,
        kv_cache_memory_bytes=DEFAULT_CACHE_BYTES,
        gpu_memory_utilization=DEFAULT_MEMORY_SHARE,
        max_num_seqs=DEFAULT_MAX_SEQS,
        enforce_eager=True,
    )


def settings_for(path: Path, worker: VllmSettings | None) -> VllmSettings:
    """The worker's own settings for this directory (kind embed), else the default."""
    for cfg in worker.engines() if worker is not None else []:
        if cfg.kind == EMBED and Path(cfg.model).expanduser().resolve() == path:
            return cfg
    return default_settings(path)


def _vector_size(path: Path) -> int:
    """The size of the model's vectors, from its configs: the last sentence-transformers
    Dense module's out_features, else config.json's hidden_size (checked at each embed)."""
    try:
        modules = json.loads((path / "modules.json").read_text())
    except (OSError, ValueError):
        modules = []
    for module in reversed(modules if isinstance(modules, list) else []):
        if isinstance(module, dict) and str(module.get("type", "")).endswith(".Dense"):
            try:
                dense = json.loads((path / str(module.get("path", "")) / "config.json").read_text())
                return int(dense["out_features"])
            except (OSError, ValueError, KeyError, TypeError):
                break
    try:
        return int(json.loads((path / "config.json").read_text())["hidden_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


class VllmEmbedder:
    """A vLLM pooling model run in this process; vectors L2-normalized float32 (n, d)."""

    def __init__(
        self,
        path: Path,
        cfg: VllmSettings | None = None,
        gpu_turn: threading.Lock | None = None,
    ) -> None:
        check_model_dir(path)
        self.path = path
        self.cfg = cfg or default_settings(path)
        self.gpu_turn = gpu_turn or threading.Lock()  # shared with the worker's engines
        self.name = f"vllm:{path.name}"  # never "local:...": other producers' vectors differ
        self.dim = _vector_size(path)
        self.spend = Spend()  # runs here: nothing bought
        self._feeder: EngineFeeder | None = None
        self._lock = threading.Lock()
        self._max_len = 0

    def _started(self) -> tuple[EngineFeeder, Any]:
        """The feeder (engine started at first use) and the engine's tokenizer."""
        with self._lock:
            if self._feeder is None:
                self._feeder = EngineFeeder(self.cfg, gpu_turn=self.gpu_turn)
            feeder = self._feeder
        try:
            tokenizer = feeder.tokenizer()  # waits for the engine
        except Exception as exc:
            raise BatchdError(
                f"vLLM could not run {self.path} as an embedding model: "
                f"{type(exc).__name__}: {exc}",
                "Check that vLLM runs this directory as a pooling model (vllm serve <dir> "
                '--runner pooling), or set cache.semantic.embedding to "" or local:<dir>.',
            ) from exc
        if not self._max_len:
            self._max_len = int(feeder.max_model_len() or 0)
        return feeder, tokenizer

    def _token_ids(self, tokenizer: Any, text: str) -> list[int]:
        if self._max_len:
            ids = tokenizer(text, truncation=True, max_length=self._max_len)["input_ids"]
        else:
            ids = tokenizer(text)["input_ids"]
        return [int(i) for i in ids]

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        feeder, tokenizer = self._started()
        unique = list(dict.fromkeys(texts))
        results: dict[str, GenResult] = {}
        done = threading.Event()
        lock = threading.Lock()

        def on_done(req: GenRequest, result: GenResult) -> None:
            with lock:
                results[req.tag] = result
                if len(results) == len(unique):
                    done.set()

        rid = next(_ids)
        feeder.submit(
            GenRequest(
                request_id=f"semantic-embed-{rid}-{i}",
                prompt={"prompt_token_ids": self._token_ids(tokenizer, text)},
                sampling={},
                on_done=on_done,
                tag=text,
                pooling=dict(POOLING),
            )
            for i, text in enumerate(unique)
        )
        done.wait()
        rows = {text: self._vector(text, results[text]) for text in unique}
        out = np.stack([rows[t] for t in texts]).astype(np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.ascontiguousarray(out / np.where(norms > 0, norms, 1.0), dtype=np.float32)

    def _vector(self, text: str, result: GenResult) -> np.ndarray:
        if result.error_type or result.embedding is None:
            raise BatchdError(
                f"vLLM did not embed a text with {self.path.name}: "
                f"{result.error_type or 'no vector'}: {result.error_message or ''}".rstrip(": "),
                "Check that the directory is an embedding (pooling) model.",
            )
        vector = np.asarray(result.embedding, dtype=np.float32)
        if self.dim and vector.shape != (self.dim,):
            raise BatchdError(
                f"vLLM's vectors of {self.path.name} have {vector.size} numbers, "
                f"its configs say {self.dim}.",
                "Check the model directory's config.json and modules.json.",
            )
        self.dim = self.dim or int(vector.size)
        return vector

    def close(self) -> None:
        with self._lock:
            feeder, self._feeder = self._feeder, None
        if feeder is not None:
            feeder.close()


def open_vllm_embedder(
    spec_path: str,
    worker: VllmSettings | None = None,
    gpu_turn: threading.Lock | None = None,
) -> VllmEmbedder:
    """The one embedder of this process for a model directory (created, not started);
    `gpu_turn`: the step lock of a worker's engines in this process, so that the embedder's
    steps never overlap theirs (and their GPU-seconds stay theirs)."""
    path = Path(spec_path).expanduser().resolve()
    with _open_lock:
        found = _open.get(path)
        if found is None:
            found = _open[path] = VllmEmbedder(path, settings_for(path, worker), gpu_turn)
            if len(_open) == 1:
                atexit.register(close_vllm_embedders)
        return found


def close_vllm_embedders() -> None:
    """Shut down every embedder's engine (its engine-core process included)."""
    with _open_lock:
        embedders = list(_open.values())
        _open.clear()
    for embedder in embedders:
        embedder.close()
