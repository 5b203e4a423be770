"""Responses requests for targets that speak chat (Claude, Gemini, vLLM), and chat answers
in the Responses shape.

`as_chat(request, target)` turns a `/v1/responses` body into the chat-completions body the
target's own translation takes, in the shapes OpenAI documents for both APIs:
- `instructions` -> a leading system message; `input` a string -> one user message;
- message items (role + content) -> messages; `input_text` / `output_text` parts -> text
  parts, `input_image` (an image_url) -> an image_url part;
- `function_call` items -> an assistant turn's `tool_calls` (consecutive calls share one
  turn); `function_call_output` -> a `tool` turn;
- `max_output_tokens` -> max_tokens; `reasoning.effort` -> reasoning_effort;
  `text.format` json_schema / json_object -> response_format, `text.verbosity` ->
  verbosity; function `tools` -> chat function tools, `tool_choice` likewise;
- `store`, `metadata`, `service_tier`, `prompt_cache_key` and `safety_identifier` are
  OpenAI-side bookkeeping that cannot change the answer: left out.
What has no chat equivalent raises UnsupportedRequest naming it (built-in tools such as
web_search, `previous_response_id`, `conversation`, stored prompts, reasoning summaries,
file inputs, item references): the line ends `unsupported_parameter`, nothing is dropped.

`response_object(outcome)` is the other direction: an answer in the common shape (from any
backend) as the Responses API's `response` object.
"""

from __future__ import annotations

from typing import Any

import msgspec

from batchd.backends.base import UnsupportedRequest
from batchd.outcome import Outcome
from batchd.requests import CHAT, RESPONSES, Request

_DIRECT = ("model", "temperature", "top_p", "parallel_tool_calls", "user")
_BOOKKEEPING = frozenset(
    {"store", "metadata", "service_tier", "prompt_cache_key", "safety_identifier"}
)
_DEFAULTS: dict[str, Any] = {
    "stream": False,
    "background": False,
    "truncation": "disabled",
    "include": [],
}
_NO_CHAT_EQUIVALENT = {
    "previous_response_id": "it continues a conversation stored at OpenAI",
    "conversation": "it continues a conversation stored at OpenAI",
    "prompt": "it names a prompt template stored at OpenAI",
    "include": "it asks for extra output only OpenAI returns",
    "max_tool_calls": "it limits built-in tool calls",
    "background": "it runs the response in the background",
    "truncation": "it lets OpenAI drop context",
}
_TEXT_PARTS = ("input_text", "output_text")
_FINISH_STATUS = {"length": "incomplete", "content_filter": "incomplete"}


def as_chat(request: Request, target: str) -> Request:
    """The request a chat target receives: Responses translated, chat as it is; embeddings
    and completions raise UnsupportedRequest (`target` runs chat only)."""
    if request.endpoint == CHAT:
        return request
    if request.endpoint != RESPONSES:
        raise UnsupportedRequest(
            f"{target} has no {request.endpoint} endpoint; send the line to an OpenAI model "
            f"that serves {request.endpoint}"
        )
    body = to_chat_body(request.body, target)
    return msgspec.structs.replace(request, body=body, endpoint=CHAT)


def _refuse(what: str, why: str, target: str) -> UnsupportedRequest:
    return UnsupportedRequest(
        f"{what} cannot be translated for {target}: {why}; send the line to an OpenAI model "
        "(the Responses API runs it as it is) or remove it"
    )


def to_chat_body(body: dict[str, Any], target: str) -> dict[str, Any]:
    """A Responses body as a chat-completions body (raises UnsupportedRequest)."""
    out: dict[str, Any] = {}
    messages: list[dict[str, Any]] = []
    for name, value in body.items():
        if name in _BOOKKEEPING or (name in _DEFAULTS and value == _DEFAULTS[name]):
            continue
        if value is None and name != "input":
            continue
        if name in _DIRECT:
            out[name] = value
        elif name == "instructions":
            messages.insert(0, {"role": "system", "content": value})
        elif name == "input":
            messages.extend(_messages(value, target))
        elif name == "max_output_tokens":
            out["max_tokens"] = value
        elif name == "top_logprobs":
            out.update(logprobs=True, top_logprobs=value)
        elif name == "reasoning":
            out.update(_reasoning(value, target))
        elif name == "text":
            out.update(_text(value, target))
        elif name == "tools":
            if not isinstance(value, list):
                raise UnsupportedRequest(
                    f"tools must be a list of tools, not {type(value).__name__}; fix the line"
                )
            out["tools"] = [_tool(t, i, target) for i, t in enumerate(value)]
        elif name == "tool_choice":
            out["tool_choice"] = _tool_choice(value, target)
        elif name in _NO_CHAT_EQUIVALENT:
            raise _refuse(name, _NO_CHAT_EQUIVALENT[name], target)
        else:
            out[name] = value  # the target's own translation accepts or names it
    out["messages"] = messages
    return out


def _messages(value: Any, target: str) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    out: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        typ = item.get("type", "message")
        where = f"input[{i}]"
        if typ == "message":
            out.append({"role": item["role"], "content": _content(item["content"], where, target)})
        elif typ == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments")},
            }
            last = out[-1] if out else None
            if last and last["role"] == "assistant" and last.get("content") is None:
                last["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif typ == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else msgspec.json.encode(output).decode()
            out.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": text})
        else:
            raise _refuse(f"{where} (a {typ} item)", "chat has no such turn", target)
    return out


def _content(content: Any, where: str, target: str) -> Any:
    if isinstance(content, str):
        return content
    parts = []
    for j, part in enumerate(content):
        typ = part["type"]
        if typ in _TEXT_PARTS:
            parts.append({"type": "text", "text": part.get("text")})
        elif typ == "input_image" and isinstance(part.get("image_url"), str):
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail") not in (None, "auto"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            what = f"{where}.content[{j}] (a {typ} part)"
            raise _refuse(what, "only text and image URLs translate", target)
    return parts


def _reasoning(value: dict[str, Any], target: str) -> dict[str, Any]:
    if value.get("summary") is not None:
        raise _refuse("reasoning.summary", "it returns no reasoning summary", target)
    effort = value.get("effort")
    return {"reasoning_effort": effort} if effort is not None else {}


def _text(value: dict[str, Any], target: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    fmt = value.get("format") or {"type": "text"}
    if fmt["type"] == "json_object":
        out["response_format"] = {"type": "json_object"}
    elif fmt["type"] == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    if value.get("verbosity") is not None:
        out["verbosity"] = value["verbosity"]
    return out


def _tool(tool: Any, i: int, target: str) -> dict[str, Any]:
    typ = tool.get("type") if isinstance(tool, dict) else None
    if typ != "function":
        raise _refuse(f"tools[{i}] (a built-in {typ} tool)", "only OpenAI runs it", target)
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, target: str) -> Any:
    if isinstance(choice, str):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and "name" in choice:
        return {"type": "function", "function": {"name": choice["name"]}}
    kind = choice.get("type") if isinstance(choice, dict) else choice
    raise _refuse(f"tool_choice {kind!r}", "only a function, auto, required or none", target)


def response_object(outcome: Outcome, response_id: str, created_at: int) -> dict[str, Any]:
    """An answer in the common shape as the Responses API's `response` object."""
    output: list[dict[str, Any]] = []
    if outcome.output_text is not None:
        text = {"type": "output_text", "text": outcome.output_text, "annotations": []}
        output.append(
            {
                "type": "message",
                "id": f"msg_{response_id}",
                "status": "completed",
                "role": "assistant",
                "content": [text],
            }
        )
    for call in msgspec.json.decode(outcome.tool_calls) if outcome.tool_calls else []:
        fn = call.get("function") or {}
        output.append(
            {
                "type": "function_call",
                "id": f"fc_{call.get('id')}",
                "call_id": call.get("id"),
                "name": fn.get("name"),
                "arguments": fn.get("arguments"),
                "status": "completed",
            }
        )
    status = _FINISH_STATUS.get(outcome.finish_reason or "", "completed")
    reason = {"length": "max_output_tokens"}.get(outcome.finish_reason or "", "content_filter")
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "incomplete_details": {"reason": reason} if status == "incomplete" else None,
        "model": outcome.model_used,
        "output": output,
        "usage": {
            "input_tokens": outcome.input_tokens,
            "input_tokens_details": {"cached_tokens": outcome.cached_input_tokens},
            "output_tokens": outcome.output_tokens,
            "output_tokens_details": {"reasoning_tokens": outcome.reasoning_tokens},
            "total_tokens": outcome.input_tokens + outcome.output_tokens,
        },
    }
