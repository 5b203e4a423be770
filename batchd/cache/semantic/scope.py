"""What a semantic match may differ in: the scope key and the compared text of a request.

Two requests are semantic candidates only when their scope keys are equal: same tenant,
endpoint, model (or alias) as requested, system prompt, tools, schema, sampling parameters
and every message but the compared text. The scope key is the request key (requests.py) of
the body with the compared text taken out, so whatever the exact key covers, the scope
covers too. Semantic matching is for chat requests for now (`ENDPOINT`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from batchd.config.settings import Settings
from batchd.requests import KEY_BYTES, request_key

ENDPOINT = "chat"  # the only endpoint matched by meaning today
LAST_USER, ALL_MESSAGES = "last_user", "all"
_TEXT_MARK = "\x00compared text\x00"


def text_of(content: Any) -> str | None:
    """A message content as plain text; None when it holds anything but text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        parts = []
        for p in content:
            if (
                not isinstance(p, dict)
                or p.get("type") != "text"
                or not isinstance(p.get("text"), str)
            ):
                return None
            parts.append(p["text"])
        return "\n".join(parts)
    return None


def scope_and_text(tenant: str, body: dict[str, Any], compare: str) -> tuple[bytes, str] | None:
    """(scope key, compared text), or None when the request cannot be matched by meaning
    (no user text, or non-text content in the compared part)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    if compare == ALL_MESSAGES:
        kept, texts = [], []
        for m in messages:
            if m.get("role") == "system":
                kept.append(m)
                continue
            t = text_of(m.get("content"))
            if t is None:
                return None
            texts.append(f"{m.get('role')}: {t}")
        if not texts:
            return None
        masked = [*kept, {"role": "user", "content": _TEXT_MARK}]
        text = "\n".join(texts)
    else:
        last = next(
            (i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "user"),
            None,
        )
        if last is None:
            return None
        t = text_of(messages[last].get("content"))
        if t is None or not t.strip():
            return None
        masked = [*messages[:last], {**messages[last], "content": _TEXT_MARK}]
        masked += messages[last + 1 :]
        text = t
    # The endpoint goes into request_key; once requests carry one, pass it here.
    inner = request_key(tenant, {**body, "messages": masked}, plain=False)
    return hashlib.blake2b(b"semantic\x00" + inner, digest_size=KEY_BYTES).digest(), text


@dataclass(frozen=True)
class SemanticPlan:
    """Which lines of a run are matched by meaning (picklable: parse workers get it)."""

    compare: str
    everything: bool  # every model and alias, but those opted out
    models: frozenset[str]  # opted in (models and aliases)
    excluded: frozenset[str]  # aliases opted out

    def applies(self, model: str) -> bool:
        return model not in self.excluded and (self.everything or model in self.models)


def semantic_plan(settings: Settings, run_choice: bool | None) -> SemanticPlan | None:
    """None when no line of the run can use the semantic cache.

    On for every line when `[cache.semantic] enabled` or the run asked for it
    (`--semantic-cache`); else for the models in `cache.semantic.models` and the aliases with
    `semantic_cache = true`. Aliases with `semantic_cache = false` and runs with
    `--no-semantic-cache` are off; so is everything when the result cache is off.
    """
    s = settings.cache.semantic
    if run_choice is False or not settings.cache.enabled:
        return None
    opted_in = {a for a, m in settings.models.items() if m.semantic_cache}
    excluded = frozenset(a for a, m in settings.models.items() if m.semantic_cache is False)
    everything = bool(run_choice) or s.enabled
    if not everything and not opted_in and not s.models:
        return None
    return SemanticPlan(s.compare, everything, frozenset(opted_in | set(s.models)), excluded)
