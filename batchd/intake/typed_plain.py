"""Plain chat lines decoded into typed structs: the shape checked by msgspec, in C.

`intake.plain` checks a decoded dict field by field in Python; these structs state the
very same shapes (exact key sets, non-empty strings, a positive bounded max_tokens, every
message exactly a role and a content string), so a line decodes into one of them exactly
when `plain_request` would take it, a few lines the structs are stricter about aside (a
native line's non-string prompt beside its messages, null metadata fields): those fail here
and take the dict path, which decides. Nothing is skipped unread (every struct forbids
unknown fields; sampling values are decoded as they are), so a line that decodes here is
one the dict decoder decodes too, with the same values (duplicate keys: the last, in both).

`material` is what `requests.request_key` hashes for the line's body: the body's canonical
JSON (sorted keys), which msgspec writes from a struct byte for byte as from the dict.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from batchd.requests import CHAT_URL, MAX_TOKENS_LIMIT, canonical_json

NonEmpty = Annotated[str, Meta(min_length=1)]
MaxTokens = Annotated[int, Meta(gt=0, le=MAX_TOKENS_LIMIT)]


class Message(Struct, forbid_unknown_fields=True, gc=False):
    role: str
    content: str


Messages = Annotated[list[Message], Meta(min_length=1)]


class Sampling(Struct, forbid_unknown_fields=True, gc=False):
    """intake.plain.SAMPLING_KEYS, any JSON value each (null included): the settings a
    plain line's body may carry beside its model, messages and max_tokens."""

    temperature: Any = UNSET
    top_p: Any = UNSET
    top_k: Any = UNSET
    seed: Any = UNSET
    n: Any = UNSET
    stop: Any = UNSET
    stop_sequences: Any = UNSET
    presence_penalty: Any = UNSET
    frequency_penalty: Any = UNSET


class Body(Sampling, forbid_unknown_fields=True, gc=False, kw_only=True):
    """An OpenAI chat body of a plain line (intake.plain._BODY_KEYS)."""

    model: NonEmpty
    messages: Messages
    max_tokens: MaxTokens | UnsetType = UNSET


class Params(Sampling, forbid_unknown_fields=True, gc=False, kw_only=True):
    """Anthropic batch params of a plain line: a body plus a string system prompt."""

    model: NonEmpty
    messages: Messages
    max_tokens: MaxTokens
    system: str | UnsetType | None = UNSET


class OpenAILine(Struct, forbid_unknown_fields=True, gc=False):
    custom_id: NonEmpty
    method: Literal["POST"]
    url: Literal["/v1/chat/completions"]
    body: Body


class AnthropicLine(Struct, forbid_unknown_fields=True, gc=False):
    custom_id: NonEmpty
    params: Params


class Metadata(Struct, forbid_unknown_fields=True, gc=False):
    tenant: NonEmpty | UnsetType = UNSET
    tags: dict[str, str] | UnsetType | None = UNSET


class NativeLine(Sampling, forbid_unknown_fields=True, gc=False, kw_only=True):
    """A native line of a plain chat request (intake.plain._NATIVE_KEYS)."""

    model: NonEmpty
    id: NonEmpty | UnsetType | None = UNSET
    messages: Messages | UnsetType | None = UNSET
    prompt: str | UnsetType | None = UNSET
    max_tokens: MaxTokens | UnsetType = UNSET
    metadata: Metadata | UnsetType | None = UNSET
    deadline: Any = UNSET
    cache: Any = UNSET
    system: str | UnsetType | None = UNSET


assert CHAT_URL == "/v1/chat/completions"  # OpenAILine.url spells it out: a Literal

_material = canonical_json
_replace = msgspec.structs.replace
DECODERS: tuple[msgspec.json.Decoder[Any], ...] = (
    msgspec.json.Decoder(OpenAILine),
    msgspec.json.Decoder(AnthropicLine),
    msgspec.json.Decoder(NativeLine),
)


class Plain(Struct, gc=False):
    """What a plain chat line's record needs, the body as its key material."""

    custom_id: str
    tenant: str
    tags: dict[str, str]
    model: str
    material: bytes  # the body's canonical JSON: hashed for the key, sized for the line
    max_tokens: int  # 0: not given
    needs_n: bool  # asks for more than one choice
    needs_seed: bool


def plain_of(
    line: OpenAILine | AnthropicLine | NativeLine, line_no: int, tenant: str
) -> Plain | None:
    """The line as `plain_request` reads it; None where that would not take it, or where a
    record of it is more than a plain one (a deadline, `"cache": false`): the dict path."""
    if type(line) is OpenAILine:
        body: Body | Params | NativeLine = line.body
        return _plain(line.custom_id, tenant, {}, body, _material(body))
    if type(line) is AnthropicLine:
        params = line.params
        system = params.system
        if system is UNSET:
            material = _material(params)
        elif system is None:
            material = _material(_replace(params, system=UNSET))
        else:
            with_system = [Message("system", system), *params.messages]
            material = _material(_replace(params, system=UNSET, messages=with_system))
        return _plain(line.custom_id, tenant, {}, params, material)
    assert type(line) is NativeLine
    if line.deadline is not UNSET or line.cache is False:
        return None
    custom_id = line.id if type(line.id) is str else f"line-{line_no}"
    given = line.messages
    if type(given) is list:
        messages: list[Message] = given
    elif type(line.prompt) is str:
        messages = [Message("user", line.prompt)]
    else:
        return None
    if type(line.system) is str:
        messages = [Message("system", line.system), *messages]
    tags: dict[str, str] = {}
    meta = line.metadata
    if type(meta) is Metadata:
        if type(meta.tenant) is str:
            tenant = meta.tenant
        if type(meta.tags) is dict:
            tags = meta.tags
    body = _replace(
        line,
        id=UNSET,
        prompt=UNSET,
        metadata=UNSET,
        cache=UNSET,
        system=UNSET,
        messages=messages,
    )
    return _plain(custom_id, tenant, tags, line, _material(body))


def _plain(
    custom_id: str,
    tenant: str,
    tags: dict[str, str],
    body: Body | Params | NativeLine,
    material: bytes,
) -> Plain:
    n = body.n
    max_tokens = body.max_tokens
    return Plain(
        custom_id,
        tenant,
        tags,
        body.model,
        material,
        max_tokens if type(max_tokens) is int else 0,
        type(n) is int and n > 1,
        body.seed is not UNSET and body.seed is not None,
    )
