"""A line of several inputs (embeddings) or prompts (completions): its answers, in order.

OpenAI answers such a request at once; the vLLM worker runs each input and joins the
answers back (`vllm.gather`). Either way `response_json` is OpenAI's shape: an embedding
`list` whose `data` items carry the input's `index`, or a `text_completion` whose `choices`
run prompt by prompt (prompt i's `n` choices at indices i*n .. i*n+n-1). From it the row gets:
- `embeddings`: every vector in input order (`embedding` stays None);
- `output_texts`: each prompt's first choice, in prompt order (`output_text` stays None);
- `finish_reason`: the first one that is not `stop` in that order (a `length` anywhere shows),
  else `stop`.
Tokens are the request's usage: summed over the inputs. Applied where chunk outcomes are
settled (`run.collect`, `run.deadline_guard`), with the chunk line as sent, beside
`schema_check`.
"""

from __future__ import annotations

import binascii
import contextlib
from typing import Any

import msgspec

from batchd.backends.openai_answers import decode_embedding
from batchd.core.endpoints import inputs_of
from batchd.outcome import SUCCEEDED, Outcome
from batchd.requests import COMPLETIONS, EMBEDDINGS

_dec = msgspec.json.Decoder()
# Bytes every line with a list input or prompt holds (a cheap look before decoding it).
_MARKERS = (b'"input":[', b'"prompt":[', b'"input": [', b'"prompt": [')


def spread_answers(o: Outcome, line: bytes) -> Outcome:
    """Fill `embeddings` / `output_texts` of a successful several-input line (in place)."""
    if o.status != SUCCEEDED or not any(m in line for m in _MARKERS):
        return o
    try:
        obj = _dec.decode(line)
        answer = _dec.decode(o.response_json or "{}")
    except (msgspec.DecodeError, RecursionError):
        return o
    body = obj.get("body") if isinstance(obj, dict) else None
    if not isinstance(body, dict) or not isinstance(answer, dict):
        return o
    with contextlib.suppress(TypeError, ValueError, binascii.Error):  # not OpenAI's shape
        _spread(o, body, answer)  # assigns only once every value is read: all or nothing
    return o


def _spread(o: Outcome, body: dict[str, Any], answer: dict[str, Any]) -> None:
    if answer.get("object") == "list":
        several = inputs_of(EMBEDDINGS, body)
        if several is not None:
            data = [d for d in answer.get("data") or [] if isinstance(d, dict)]
            data.sort(key=_index)
            o.embeddings = [decode_embedding(d.get("embedding")) or [] for d in data]
            o.embedding = None
    elif answer.get("object") == "text_completion":
        several = inputs_of(COMPLETIONS, body)
        if several is not None:
            n = body.get("n") if type(body.get("n")) is int and body["n"] > 0 else 1
            choices = [c for c in answer.get("choices") or [] if isinstance(c, dict)]
            choices.sort(key=_index)
            firsts = choices[::n]
            o.output_texts = [str(c.get("text") or "") for c in firsts]
            o.output_text = None
            o.finish_reason = _finish(choices)


def _index(item: dict[str, Any]) -> int:
    index = item.get("index")
    return index if type(index) is int else 0


def _finish(choices: list[dict[str, Any]]) -> str:
    for c in choices:
        reason = c.get("finish_reason")
        if reason not in (None, "stop"):
            return str(reason)
    return "stop"
