"""Outcome: the answer (or failure) for one unique request, whatever backend produced it."""

from __future__ import annotations

import msgspec

# Row statuses (DESIGN §3).
SUCCEEDED = "succeeded"
FAILED = "failed"
EXPIRED = "expired"
CANCELED = "canceled"
INVALID = "invalid"


class Outcome(msgspec.Struct, gc=False, kw_only=True):
    status: str
    model_used: str = ""
    backend: str = ""
    output_text: str | None = None
    response_json: str | None = None
    finish_reason: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0  # the part of cache_write_tokens written with the 1-hour TTL
    output_tokens: int = 0
    reasoning_tokens: int = 0  # the part of output_tokens spent thinking (billed as output)
    cost_usd: float = 0.0
    gpu_seconds: float = 0.0
    submitted_at: float | None = None
    completed_at: float | None = None
    tier: str | None = None  # batch | flex | realtime | gpu: how it was served (None: not)
    # The common answer shape, the same for every backend (README "Result rows"):
    embedding: list[float] | None = None  # embeddings endpoint: the vector (one input)
    # A line of several inputs (or prompts): every vector / every prompt's text, in order
    # (`embedding` and `output_text` are then None; backends/input_lists.py).
    embeddings: list[list[float]] | None = None
    output_texts: list[str] | None = None
    tool_calls: str | None = None  # JSON text, a list of tool calls in OpenAI's shape
    schema_valid: bool | None = None  # the answer against the line's JSON schema (None: none)
    request_id: str | None = None  # the vendor's id for this request, where it gives one
    # cascades: JSON text, the attempts of this line (planning/escalation.py Entry); None: one
    escalations: str | None = None
    # Backend verdict on a non-success: may the request be sent again?
    retryable: bool = False
