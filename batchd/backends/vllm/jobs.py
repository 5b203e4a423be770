"""A vLLM chunk inside one process: its lines as the runner reads them, and its job state."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from batchd.backends.vllm.engine import EngineFeeder
from batchd.outcome import Outcome
from batchd.requests import CHAT
from batchd.storage.blobs import Blobs


class ChunkLine(msgspec.Struct):
    custom_id: str
    body: dict[str, Any]
    endpoint: str = CHAT  # chat | completions | embeddings (responses: translated to chat)


class ChunkJob:
    """One chunk inside this process: what is left, what waits to be checkpointed."""

    def __init__(
        self,
        chunk_id: str,
        model: str,
        blobs: Blobs,
        n_requests: int,
        guard: Callable[[], bool] | None = None,
    ) -> None:
        self.chunk_id = chunk_id
        self.guard = guard  # may this job still write? (None: always)
        self.model = model
        self.blobs = blobs
        self.n_requests = n_requests
        self.n_outcomes = 0  # checkpointed before this job plus finished in it
        self.remaining = 0
        self.gpu_seconds = 0.0
        self.buffer: list[tuple[bytes, Outcome]] = []
        self.last_flush = time.monotonic()
        self.last_cancel_check = time.monotonic()
        self.state = "running"
        self.draining = False  # released: admit nothing more, end once the engine is done
        self.finished = threading.Event()
        self.idle = threading.Event()  # set when nothing of the chunk is queued or running
        self.lock = threading.Lock()
        self.feeder: EngineFeeder | None = None  # the model's feeder its requests went to
