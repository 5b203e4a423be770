"""What the planner needs to know of a valid line's size: its output cap and prompt tokens."""

from __future__ import annotations

from batchd.core.endpoints import count_messages, inputs_of
from batchd.planning.routing import Route, Router
from batchd.requests import CHAT, COMPLETIONS, RESPONSES, Request


def max_tokens_of(item: Request) -> int:
    """The output cap the line gives (0: none), from the fields its endpoint validated."""
    body = item.body
    if item.fmt == "gemini":  # a Gemini-native request
        config = body.get("generationConfig")
        limit = config.get("maxOutputTokens") if isinstance(config, dict) else None
        return limit if type(limit) is int and limit > 0 else 0
    names = _CAPS.get(item.endpoint, ())
    cap = next((v for v in map(body.get, names) if type(v) is int), 0)
    several = inputs_of(item.endpoint, body)  # several prompts: the cap holds for each
    return cap * len(several) if several else cap


_CAPS = {
    CHAT: ("max_tokens", "max_completion_tokens"),
    COMPLETIONS: ("max_tokens",),
    RESPONSES: ("max_output_tokens",),
}


def prompt_tokens_of(item: Request, targets: list[Route], router: Router) -> int:
    if router.vllm_name and any(t.backend == "vllm" for t in targets):
        body = item.body
        messages = body.get("messages") if item.endpoint == CHAT else None
        if item.fmt == "gemini":
            return -1
        return router.tokens.count(messages or count_messages(item.endpoint, body))
    return -1
