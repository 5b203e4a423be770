"""Automatic prompt caching for Anthropic batches.

Within one chunk, requests that share a long stable prefix (tools + system prompt,
optionally + the first message, e.g. a shared document) are ordered together and the
end of the shared prefix is marked with `cache_control` (1-hour TTL, as Anthropic
advises for batches) when the expected saving beats the cache-write premium:

    n requests sharing P prefix tokens cost  n * P            without caching
                                        and  P * w + (n-1) * P * r  with it,

(in units of the input price; w = write multiplier, 2x for 1 h; r = read price, 0.1x).
Prefixes shorter than the model's minimum cacheable length are never marked, nor is
any request that already sets `cache_control` anywhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgspec

from batchd.config.pricing import Price

CACHE_CONTROL = {"type": "ephemeral", "ttl": "1h"}
BYTES_PER_TOKEN_ESTIMATE = 4
_enc = msgspec.json.Encoder(order="sorted")


@dataclass
class _Candidate:
    key: bytes
    tokens: int
    segment: str  # "system" (tools + system) or "first" (... + first message)


def _has_cache_control(params: dict[str, Any]) -> bool:
    return b'"cache_control"' in _enc.encode(params)


def _candidates(params: dict[str, Any]) -> list[_Candidate]:
    head = {"m": params.get("model"), "tools": params.get("tools"), "s": params.get("system")}
    head_bytes = _enc.encode(head)
    out = []
    if params.get("system") is not None or params.get("tools"):
        out.append(
            _Candidate(
                hashlib.blake2b(head_bytes, digest_size=16).digest(),
                len(head_bytes) // BYTES_PER_TOKEN_ESTIMATE,
                "system",
            )
        )
    messages = params.get("messages") or []
    if len(messages) > 1:  # a lone message is the question itself, not a shared prefix
        first = head_bytes + _enc.encode(messages[0])
        out.append(
            _Candidate(
                hashlib.blake2b(first, digest_size=16).digest(),
                len(first) // BYTES_PER_TOKEN_ESTIMATE,
                "first",
            )
        )
    return out


def saving_in_input_units(n: int, tokens: int, price: Price) -> float:
    """Expected saving (x input price) of caching a prefix shared by n requests in a chunk."""
    read = price.cached_input_per_mtok / price.input_per_mtok if price.input_per_mtok else 0.1
    with_cache = tokens * price.cache_write_1h_multiplier + (n - 1) * tokens * read
    return n * tokens - with_cache


def plan_prompt_cache(requests: list[dict[str, Any]], price: Price) -> list[dict[str, Any]]:
    """Return the chunk's requests ({custom_id, params}), grouped, with breakpoints marked."""
    cands: list[list[_Candidate]] = []
    counts: dict[bytes, int] = {}
    for req in requests:
        found = [] if _has_cache_control(req["params"]) else _candidates(req["params"])
        cands.append(found)
        for c in found:
            counts[c.key] = counts.get(c.key, 0) + 1
    chosen: list[_Candidate | None] = []
    for found in cands:
        best: _Candidate | None = None
        best_saving = 0.0
        for c in found:
            if c.tokens < price.min_cache_tokens:
                continue
            saving = saving_in_input_units(counts[c.key], c.tokens, price)
            if saving > best_saving:
                best, best_saving = c, saving
        chosen.append(best)
    out = [_mark(req, c) if c is not None else req for req, c in zip(requests, chosen, strict=True)]
    group = [c.key if c is not None else b"" for c in chosen]
    order = sorted(range(len(out)), key=lambda i: (group[i], i))
    return [out[i] for i in order]


def _mark(req: dict[str, Any], c: _Candidate) -> dict[str, Any]:
    params = dict(req["params"])
    if c.segment == "first":
        messages = list(params["messages"])
        messages[0] = _marked_message(messages[0])
        params["messages"] = messages
    elif params.get("system") is not None:
        params["system"] = _marked_blocks(params["system"])
    else:
        tools = list(params["tools"])
        tools[-1] = {**tools[-1], "cache_control": CACHE_CONTROL}
        params["tools"] = tools
    return {**req, "params": params}


def _marked_blocks(content: Any) -> list[dict[str, Any]]:
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    blocks[-1] = {**blocks[-1], "cache_control": CACHE_CONTROL}
    return blocks


def _marked_message(message: dict[str, Any]) -> dict[str, Any]:
    return {**message, "content": _marked_blocks(message["content"])}
