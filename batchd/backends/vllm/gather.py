"""One line of several inputs (embeddings) or prompts (completions) on the engine.

Each input runs as its own engine request, `<chunk>/<vid>#<i>`; the line's result is recorded
once every part has ended, joined in input order (`join`): vectors in order, completion
choices prompt by prompt, tokens and GPU-seconds summed; a part that failed fails the line.
A line counts as withdrawn (window closing, release) when any of its parts is: its other
parts still end inside the engine but it records nothing, and a later start runs it whole.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from batchd.backends.vllm.engine import Choice, GenRequest, GenResult

PART_MARK = "#"  # never in a vendor id (hex, with one-letter tags)


def part_id(request_id: str, index: int) -> str:
    return f"{request_id}{PART_MARK}{index}"


def lines_in(reqs: Iterable[GenRequest]) -> int:
    """How many lines the engine requests belong to (the parts of one line count once)."""
    return len({r.request_id.partition(PART_MARK)[0] for r in reqs})


class Gather:
    """The parts of one line: each part's result kept until all have ended."""

    def __init__(self, n_parts: int, on_done: Callable[[GenRequest, GenResult], None]) -> None:
        self._results: list[GenResult | None] = [None] * n_parts
        self._left = n_parts
        self._lock = threading.Lock()
        self._on_done = on_done

    def on_part(self, req: GenRequest, result: GenResult) -> None:
        index = int(req.request_id.rpartition(PART_MARK)[2])
        with self._lock:
            if self._results[index] is not None:
                return
            self._results[index] = result
            self._left -= 1
            last = self._left == 0
        if last:
            self._on_done(req, join([r for r in self._results if r is not None]))


def join(parts: list[GenResult]) -> GenResult:
    """The parts' results as one: the first failure, or every answer in input order."""
    for p in parts:
        if p.error_type is not None:
            return GenResult(
                error_type=p.error_type,
                error_message=p.error_message,
                gpu_seconds=sum(q.gpu_seconds for q in parts),
            )
    out = GenResult(
        text=parts[0].text,
        finish_reason=parts[0].finish_reason,
        output_tokens=sum(p.output_tokens for p in parts),
        prompt_tokens=sum(p.prompt_tokens for p in parts),
        cached_tokens=sum(p.cached_tokens for p in parts),
        gpu_seconds=sum(p.gpu_seconds for p in parts),
    )
    if parts[0].embedding is not None:
        out.vectors = [p.embedding or [] for p in parts]
        out.embedding = parts[0].embedding
    else:
        for p in parts:
            out.choices.extend(p.choices or [Choice(text=p.text, finish_reason=p.finish_reason)])
    return out
