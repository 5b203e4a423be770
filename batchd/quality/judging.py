"""The judge metric's requests: the question put to the judge model for one shadow or probe
pair (its request, the reference's answer, the routed answer), as a chat request under the
pair's key + JUDGE_TAG, with a structured output that asks for {"verdict": "yes" | "no"}
(quality/verdicts.py parses the answer strictly)."""

from __future__ import annotations

import json
from typing import Any

from batchd.config.quality import QualitySettings
from batchd.requests import Request

JUDGE_TAG = b"j"  # the judge's answer for a pair is under the pair's key + this
JUDGE_MAX_TOKENS = 64
VERDICT_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "verdict",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"verdict": {"type": "string", "enum": ["yes", "no"]}},
            "required": ["verdict"],
            "additionalProperties": False,
        },
    },
}


def judge_vendor_id(key: bytes) -> str:
    """Never cached (x), tagged j: intake.vendor_ids.key_of gives back key + JUDGE_TAG."""
    return "x" + JUDGE_TAG.decode() + key.hex()


def judge_request(
    q: QualitySettings, model: str, key: bytes, request: str, reference: str, answer: str
) -> Request:
    prompt = q.judge_prompt.format(request=request, reference=reference, answer=answer)
    return Request(
        line_no=0,
        custom_id=judge_vendor_id(key),
        fmt="openai",
        model=model,
        tenant="",
        tags={},
        cache_ok=False,
        deadline_at=None,
        body={
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": JUDGE_MAX_TOKENS,
            "response_format": VERDICT_FORMAT,
        },
        key=key + JUDGE_TAG,
    )


def request_text(line: bytes) -> str:
    """The request of a chunk line (any vendor's batch format), as text for the judge."""
    try:
        obj = json.loads(line)
    except ValueError:
        return line.decode("utf-8", "replace")
    body: Any = obj.get("body") or obj.get("params") or obj.get("request") or obj
    if not isinstance(body, dict):
        return json.dumps(body, ensure_ascii=False)
    turns = body.get("messages") or body.get("contents") or body.get("input")
    if isinstance(turns, str):
        return turns
    if not isinstance(turns, list):
        return json.dumps(body, ensure_ascii=False)
    parts = [_system(body)] if _system(body) else []
    for turn in turns:
        if isinstance(turn, dict):
            parts.append(f"{turn.get('role', 'user')}: {_text(turn)}")
    return "\n".join(parts)


def _system(body: dict[str, Any]) -> str:
    system = body.get("system") or body.get("systemInstruction")
    return f"system: {_text({'content': system})}" if system else ""


def _text(turn: dict[str, Any]) -> str:
    content = turn.get("content", turn.get("parts"))
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = content.get("parts", [content])
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict) and "text" in p]
        if texts:
            return " ".join(str(t) for t in texts)
    return json.dumps(content, ensure_ascii=False)
