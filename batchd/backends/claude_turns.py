"""Chat turns -> Claude's `system` and `messages`.

Leading system / developer turns -> `system` (a string, or text blocks); user and assistant
turns -> messages (user turns may carry images); an assistant turn's `tool_calls` ->
`tool_use` blocks after its text; a `tool` turn -> a `tool_result` block {type, tool_use_id,
content} in a user turn (consecutive tool turns share one user turn, results first).
"""

from __future__ import annotations

from typing import Any

from batchd.backends.base import UnsupportedRequest
from batchd.backends.claude_content import HINT, blocks, text_content
from batchd.backends.claude_tools import tool_use

# Message keys each role may carry (null for the optional ones is the same as absent).
_MESSAGE_KEYS = {
    "system": {"role", "content"},
    "developer": {"role", "content"},
    "user": {"role", "content"},
    "assistant": {"role", "content", "tool_calls"},
    "tool": {"role", "content", "tool_call_id"},
}
_NULL_OK = {"refusal", "function_call", "audio", "name", "tool_calls"}


def system_param(system: list[Any]) -> Any:
    """The system parts as Claude's `system`: one string, or text blocks."""
    if all(isinstance(s, str) for s in system):
        return "\n\n".join(system)
    return [b for s in system for b in blocks(s, "system", images=False)]


def turns(openai_messages: list[dict[str, Any]]) -> tuple[list[Any], list[dict[str, Any]]]:
    """(system parts, Claude messages) for the chat messages."""
    system: list[Any] = []
    messages: list[dict[str, Any]] = []
    for i, m in enumerate(openai_messages):
        role = m["role"]
        where = f"messages[{i}]"
        _check_keys(m, role, where)
        if role in ("system", "developer") and not messages:
            system.append(text_content(m["content"], where))
        elif role == "user":
            _append(messages, "user", blocks(m["content"], where), m["content"])
        elif role == "assistant":
            plain = m["content"] if not m.get("tool_calls") else None
            _append(messages, "assistant", _assistant_blocks(m, where), plain)
        elif role == "tool":
            _append(messages, "user", [_tool_result(m, where)], None, tool=True)
        else:
            raise UnsupportedRequest(
                f"a {role!r} message{' after the conversation started' if role == 'system' else ''}"
                " cannot be sent to Claude; put system prompts first and use user, assistant "
                "and tool turns"
            )
    if not messages:
        raise UnsupportedRequest("Claude needs at least one user message besides the system prompt")
    for m in messages:
        m.pop("_tool", None)
    return system, messages


def _check_keys(m: dict[str, Any], role: str, where: str) -> None:
    allowed = _MESSAGE_KEYS.get(role)
    if allowed is None:
        return  # the role itself is refused by the caller
    extra = sorted(k for k in m if k not in allowed and not (k in _NULL_OK and m[k] is None))
    if extra:
        raise UnsupportedRequest(
            f"not supported for Claude models: {', '.join(f'{where}.{k}' for k in extra)} "
            "(Claude messages have no such field)" + HINT
        )


def _append(
    messages: list[dict[str, Any]],
    role: str,
    new: list[dict[str, Any]],
    plain: Any,
    tool: bool = False,
) -> None:
    """Add a turn (as the string `plain` when it is one); a tool result, and a user turn
    after tool results, join the user turn of those results."""
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "user" and role == "user" and last.get("_tool"):
        last["content"].extend(new)
        last["_tool"] = tool
        return
    if tool:
        messages.append({"role": "user", "content": new, "_tool": True})
    elif isinstance(plain, str):
        messages.append({"role": role, "content": plain})
    else:
        messages.append({"role": role, "content": new})


def _assistant_blocks(m: dict[str, Any], where: str) -> list[dict[str, Any]]:
    content = m.get("content")
    out = [] if content is None or content == "" else blocks(content, where, images=False)
    calls = m.get("tool_calls") or []
    if not isinstance(calls, list):
        raise UnsupportedRequest(f"{where}.tool_calls must be a list of tool calls")
    for j, call in enumerate(calls):
        out.append(tool_use(call, f"{where}.tool_calls[{j}]"))
    if not out:
        raise UnsupportedRequest(f"{where} has neither content nor tool_calls; Claude needs one")
    return out


def _tool_result(m: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = m.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise UnsupportedRequest(f"{where}.tool_call_id is missing: Claude pairs results by id")
    content = m.get("content")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    if content is not None:
        block["content"] = content if isinstance(content, str) else blocks(content, where)
    return block
