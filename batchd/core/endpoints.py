"""The bodies of the endpoints besides chat: embeddings, completions and Responses.

What each endpoint takes follows OpenAI's API reference:
- embeddings: `input` a non-empty string, a token array (a list of integers), or a list of
  several strings or of several token arrays (at most 2048 inputs, each token array at most
  2048 tokens, the token arrays at most 300,000 tokens together); `dimensions` a positive
  integer (text-embedding-3 and later); `encoding_format` "float" or "base64".
- completions: `prompt` a string, a token array, or a list of several of either (batchd
  holds it to the same 2048 inputs); the usual sampling parameters; `max_tokens` (OpenAI's
  default is 16).
- responses: `input` a string or a list of input items (messages with a role, or items with
  a type such as function_call / function_call_output); `instructions` a string;
  `max_output_tokens`; `reasoning` {effort, summary}; `text` {format, verbosity}.
A line with several inputs (or prompts) is still one row: its answers stay together, in input
order (`inputs_of` gives them; README "Several inputs on one line"). Unknown parameters pass
through to the vendor unchanged. Every check raises `fields.Bad` with what to fix.
"""

from __future__ import annotations

from typing import Any

from batchd.core.fields import Bad, check_parts, check_token_limit, kind, short

EMBEDDINGS, RESPONSES, COMPLETIONS = "embeddings", "responses", "completions"
MAX_INPUT_ITEMS = 2048  # OpenAI: any array in an embeddings input holds at most 2048
MAX_INPUT_TOKENS = 300_000  # OpenAI: tokens summed over the inputs of one embeddings request
TOKEN_ID_LIMIT = 2**31 - 1
DIMENSIONS_LIMIT = 65_536  # far above any model's size (text-embedding-3-large: 3072)
ENCODING_FORMATS = ("float", "base64")
TEXT_FORMATS = ("text", "json_schema", "json_object")
ROLES = ("user", "assistant", "system", "developer")
# The field that carries each endpoint's input, and the fields of the others it must not hold.
INPUT_FIELD = {EMBEDDINGS: "input", COMPLETIONS: "prompt", RESPONSES: "input"}
_FOREIGN = {
    EMBEDDINGS: ("messages", "prompt"),
    COMPLETIONS: ("messages", "input"),
    RESPONSES: ("messages", "prompt"),
}


def check_body(endpoint: str, body: dict[str, Any], where: str) -> None:
    """Raise Bad unless `body` is a request `endpoint` can run (model checked by the caller)."""
    field = INPUT_FIELD[endpoint]
    for foreign in _FOREIGN[endpoint]:
        if foreign in body:
            raise Bad(
                "bad_body",
                f"{where}{foreign} is not a field of the {endpoint} endpoint: it takes "
                f"'{field}'" + (" (and 'instructions')" if endpoint == RESPONSES else ""),
            )
    if field not in body:
        raise Bad("missing_input", f"no input: {where}{field} is required for {endpoint}")
    if endpoint == EMBEDDINGS:
        _embeddings(body, where)
    elif endpoint == COMPLETIONS:
        _one_input(body["prompt"], f"{where}prompt", "prompt", allow_empty=True)
        check_token_limit(body, where, ("max_tokens",))
    else:
        _responses(body, where)


def _embeddings(body: dict[str, Any], where: str) -> None:
    _one_input(body["input"], f"{where}input", "input", allow_empty=False)
    if "dimensions" in body:
        d = body["dimensions"]
        if type(d) is not int or not 0 < d <= DIMENSIONS_LIMIT:
            raise Bad(
                "bad_dimensions",
                f"{where}dimensions must be a positive integer (at most the model's own "
                f"size, e.g. 1536 for text-embedding-3-small), got {short(d)}",
            )
    fmt = body.get("encoding_format", "float")
    if fmt not in ENCODING_FORMATS:
        raise Bad(
            "bad_encoding_format",
            f'{where}encoding_format must be "float" or "base64", got {short(fmt)} '
            "(the row's embedding column holds floats either way)",
        )


def _one_input(value: Any, where: str, name: str, *, allow_empty: bool) -> None:
    """A string, a token array, or a list of several strings or several token arrays."""
    if type(value) is str:
        if not value and not allow_empty:
            raise Bad("bad_input", f"{where} is an empty string: give the text to embed")
        return
    if type(value) is not list or not value:
        raise Bad(
            "bad_input",
            f"{where} must be a string or a token array (a list of integers), got "
            f"{'an empty list' if value == [] else kind(value)}",
        )
    if all(type(t) is int for t in value):
        _token_array(value, where)
        return
    if len(value) > MAX_INPUT_ITEMS:
        raise Bad(
            "too_many_inputs",
            f"{where} holds {len(value):,} {name}s: one request takes at most "
            f"{MAX_INPUT_ITEMS:,}; split them over several lines",
        )
    first = type(value[0])
    total_tokens = 0
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if type(item) is str and first is str:
            if not item and not allow_empty:
                raise Bad("bad_input", f"{at} is an empty string: give the text to embed")
        elif type(item) is list and first is list and item and all(type(t) is int for t in item):
            _token_array(item, at)
            total_tokens += len(item)
        else:
            raise Bad(
                "bad_input",
                f"{at} must be {'a string' if first is str else 'a token array'} like "
                f"{where}[0] (a list holds strings or token arrays, not both), got {kind(item)}",
            )
    if name == "input" and total_tokens > MAX_INPUT_TOKENS:
        raise Bad(
            "too_many_tokens",
            f"{where} holds {total_tokens:,} tokens over its inputs: one embeddings request "
            f"takes at most {MAX_INPUT_TOKENS:,}; split them over several lines",
        )


def inputs_of(endpoint: str, body: dict[str, Any]) -> list[Any] | None:
    """The inputs (embeddings) or prompts (completions) of a line that holds several, in
    order; None for a line of one (a string, a token array, or a list holding one)."""
    if endpoint not in (EMBEDDINGS, COMPLETIONS):
        return None
    value = body.get(INPUT_FIELD[endpoint])
    if type(value) is not list or len(value) < 2 or type(value[0]) not in (str, list):
        return None
    return value


def _token_array(tokens: list[int], where: str) -> None:
    if len(tokens) > MAX_INPUT_ITEMS:
        raise Bad(
            "bad_input",
            f"{where} holds {len(tokens):,} tokens: a token array holds at most "
            f"{MAX_INPUT_ITEMS:,}; give the text as a string instead",
        )
    for t in tokens:
        if not 0 <= t <= TOKEN_ID_LIMIT:
            raise Bad(
                "bad_input", f"{where} holds the token id {short(t)}: token ids are 0 or more"
            )


def _responses(body: dict[str, Any], where: str) -> None:
    for old, new in (("max_tokens", "max_output_tokens"), ("max_completion_tokens", None)):
        if old in body:
            raise Bad(
                "bad_body",
                f"{where}{old} is not a Responses parameter: use {new or 'max_output_tokens'}",
            )
    check_token_limit(body, where, ("max_output_tokens",))
    value = body["input"]
    if type(value) is str:
        if not value:
            raise Bad("bad_input", f"{where}input is an empty string: give the prompt")
    elif type(value) is list and value:
        for i, item in enumerate(value):
            _input_item(item, f"{where}input[{i}]")
    else:
        raise Bad(
            "bad_input",
            f"{where}input must be a string or a non-empty list of input items "
            f'(e.g. {{"role": "user", "content": "..."}}), got '
            f"{'an empty list' if value == [] else kind(value)}",
        )
    if body.get("instructions") is not None and type(body["instructions"]) is not str:
        raise Bad(
            "bad_body", f"{where}instructions must be a string, got {kind(body['instructions'])}"
        )
    _reasoning(body.get("reasoning"), where)
    _text(body.get("text"), where)


def _input_item(item: Any, where: str) -> None:
    if type(item) is not dict:
        raise Bad("bad_input", f"{where} must be an object, got {kind(item)}")
    typ = item.get("type")
    if "role" in item and typ in (None, "message"):
        if item["role"] not in ROLES:
            raise Bad(
                "bad_input",
                f"{where}.role must be one of {', '.join(ROLES)}, got {short(item['role'])}",
            )
        content = item.get("content")
        if type(content) is str:
            return
        if type(content) is list:
            check_parts(content, f"{where}.content", "input_text")
            return
        raise Bad(
            "bad_content",
            f"{where}.content must be a string or a list of content parts, got {kind(content)}",
        )
    if type(typ) is not str or not typ:
        raise Bad(
            "bad_input",
            f"{where} needs a 'role' (a message) or a string 'type' (e.g. function_call_output)",
        )


def _reasoning(value: Any, where: str) -> None:
    if value is None:
        return
    if type(value) is not dict:
        raise Bad("bad_body", f'{where}reasoning must be an object like {{"effort": "low"}}')
    for name in ("effort", "summary"):
        v = value.get(name)
        if v is not None and type(v) is not str:
            raise Bad("bad_body", f"{where}reasoning.{name} must be a string, got {kind(v)}")


def _text(value: Any, where: str) -> None:
    if value is None:
        return
    if type(value) is not dict:
        raise Bad("bad_body", f'{where}text must be an object like {{"format": {{"type": ...}}}}')
    fmt = value.get("format")
    if fmt is None:
        return
    if type(fmt) is not dict or fmt.get("type") not in TEXT_FORMATS:
        raise Bad(
            "bad_response_format",
            f"{where}text.format must be an object whose type is one of {', '.join(TEXT_FORMATS)}",
        )
    if fmt["type"] == "json_schema" and (
        type(fmt.get("name")) is not str or type(fmt.get("schema")) is not dict
    ):
        raise Bad(
            "bad_response_format",
            f"{where}text.format of type json_schema needs a string 'name' and an object 'schema'",
        )


def key_body(endpoint: str, body: dict[str, Any], drop: frozenset[str]) -> dict[str, Any]:
    """The body as key material: keys in `drop` left out, one-item lists as their item, a
    Responses string input as the user message it means."""
    out = {k: v for k, v in body.items() if k not in drop}
    field = INPUT_FIELD[endpoint]
    value = out.get(field)
    if endpoint == RESPONSES:
        if type(value) is str:
            out["input"] = [{"role": "user", "content": value}]
    elif type(value) is list and len(value) == 1 and type(value[0]) in (str, list):
        out[field] = value[0]
    return out


def count_messages(endpoint: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The input as chat messages, for a prompt-token count."""
    value = body.get(INPUT_FIELD[endpoint])
    if type(value) is list and len(value) == 1 and type(value[0]) is str:
        value = value[0]
    several = inputs_of(endpoint, body)
    if type(value) is str:
        messages = [{"role": "user", "content": value}]
    elif several is not None:  # several prompts: each one's tokens count
        messages = [{"role": "user", "content": v} for v in several if type(v) is str]
    elif endpoint == RESPONSES and type(value) is list:
        messages = [m for m in value if type(m) is dict and "content" in m]
    else:
        messages = []
    if endpoint == RESPONSES and type(body.get("instructions")) is str:
        messages = [{"role": "system", "content": body["instructions"]}, *messages]
    return messages
