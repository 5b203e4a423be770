"""The capability table: what each backend and model can serve, and what a line asks for.

One table (README "What each target can serve" is rendered from it, and a test checks the
two agree): per backend, model families matched by name (fnmatch, first match wins), each
with the endpoints it serves and the features it has. vLLM models are described by their
settings rather than their names: an embedding (pooling) model serves embeddings only; a
generation model serves chat, completions and Responses (translated), `tool_choice: auto`
only with a tool-call parser, images only where its settings say `images = true` (a
multimodal model; data: URLs only: the GPU worker fetches nothing from the web), see
`_vllm_family` and `backends.vllm.images`.

A list of several embeddings inputs or completions prompts needs no feature of its own: every
target that serves the endpoint takes it (OpenAI as it is, vLLM input by input), within the
limits `core.endpoints` checks for every line (2,048 inputs, token arrays 300,000 tokens).

`needs(request)` says what one line asks for; `missing(needs, caps)` what a target lacks of
it. Intake makes a line whose only target lacks something `invalid` (naming a target that
can), and gives an alias line no chunk line for its incapable targets, so the planner never
places it there (`intake.decode`, `planning.estimates`: an empty line is "cannot").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from batchd.backends.claude_features import STRUCTURED_OUTPUT_MODELS
from batchd.config.settings import Settings
from batchd.requests import CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES, Request

# Features a line may need beyond its endpoint.
STRUCTURED = "structured_outputs"  # response_format json_schema / json_object (text.format)
TOOLS = "tools"  # tools with tool_choice none / required / a named function
TOOLS_AUTO = "tools_auto"  # tools the model may choose to call itself (tool_choice auto)
IMAGES = "images"  # image parts (data: URLs)
IMAGE_URLS = "image_urls"  # image parts given as http(s) URLs, fetched by the vendor
N = "n"  # n > 1
LOGPROBS = "logprobs"
REASONING = "reasoning"  # reasoning_effort / reasoning.effort
SEED = "seed"
GEMINI_NATIVE = "gemini_native"  # a line in Gemini's own request shape
ENDPOINTS = (CHAT, RESPONSES, COMPLETIONS, EMBEDDINGS)

# What a target cannot do, in words: "<model> cannot <words>".
WORDS = {
    CHAT: "serve chat completions",
    RESPONSES: "serve the Responses API",
    COMPLETIONS: "serve legacy completions (/v1/completions)",
    EMBEDDINGS: "make embeddings",
    STRUCTURED: "return structured outputs (response_format)",
    TOOLS: "call tools",
    TOOLS_AUTO: "choose tools itself (tool_choice auto)",
    IMAGES: "read images",
    IMAGE_URLS: "fetch images from web URLs (inline them as data: URLs)",
    N: "return several choices (n > 1)",
    LOGPROBS: "return logprobs",
    REASONING: "take a reasoning effort",
    SEED: "take a seed",
    GEMINI_NATIVE: "take Gemini-native requests (contents)",
}


@dataclass(frozen=True)
class Family:
    """One row of the table: a backend's models that can serve the same things."""

    backend: str  # openai | anthropic | gemini | vllm | provider
    models: str  # which models, in words (the README's column)
    patterns: tuple[str, ...]  # model names it covers (fnmatch); () for vLLM rows
    serves: frozenset[str]  # endpoints and features
    how: dict[str, str] = field(default_factory=dict)  # per feature: how it is served

    def can(self, need: str) -> bool:
        return need in self.serves


def _family(
    backend: str, models: str, patterns: Iterable[str], serves: Iterable[str], **how: str
) -> Family:
    return Family(backend, models, tuple(patterns), frozenset(serves), how)


_CHAT_ALL = (CHAT, RESPONSES, STRUCTURED, TOOLS, TOOLS_AUTO, N, SEED)
_REASONING_OPENAI = ("gpt-5*", "o1*", "o3*", "o4*")
# Claude models with native structured outputs (output_config.format); the others get a
# forced tool (backends.claude_features, which translates them).
_NATIVE_SCHEMA_CLAUDE = STRUCTURED_OUTPUT_MODELS
_CLAUDE = (CHAT, RESPONSES, STRUCTURED, TOOLS, TOOLS_AUTO, IMAGES, IMAGE_URLS)
_THINKING = "extended thinking (budget from reasoning_effort)"

FAMILIES: tuple[Family, ...] = (
    _family(
        "openai",
        "text-embedding-*",
        ["text-embedding-*"],
        [EMBEDDINGS],
    ),
    _family(
        "openai",
        "gpt-3.5-turbo-instruct, davinci-002, babbage-002",
        ["gpt-3.5-turbo-instruct*", "davinci-002", "babbage-002"],
        [COMPLETIONS, N, LOGPROBS, SEED],
    ),
    _family(
        "openai",
        "reasoning models: gpt-5*, o1*, o3*, o4*",
        _REASONING_OPENAI,
        [*_CHAT_ALL, IMAGES, IMAGE_URLS, REASONING],
        reasoning="reasoning_effort",
    ),
    _family(
        "openai",
        "gpt-4o*, gpt-4.1*, gpt-4-turbo* (vision)",
        ["gpt-4o*", "gpt-4.1*", "gpt-4-turbo*"],
        [*_CHAT_ALL, IMAGES, IMAGE_URLS, LOGPROBS],
    ),
    _family("openai", "other chat models", ["*"], [*_CHAT_ALL, LOGPROBS]),
    _family(
        "anthropic",
        "claude-opus-4-7 / 4-6 / 4-5, claude-sonnet-4-6 / 4-5, claude-haiku-4-5",
        _NATIVE_SCHEMA_CLAUDE,
        [*_CLAUDE, REASONING],
        structured_outputs="native (output_config.format)",
        reasoning=_THINKING,
    ),
    _family(
        "anthropic",
        "other Claude 4 models, claude-3-7-sonnet",
        ["claude-*-4*", "claude-3-7-sonnet*"],
        [*_CLAUDE, REASONING],
        structured_outputs="a forced tool",
        reasoning=_THINKING,
    ),
    _family(
        "anthropic",
        "other Claude models",
        ["*"],
        _CLAUDE,
        structured_outputs="a forced tool",
    ),
    _family(
        "gemini",
        "gemini-*",
        ["*"],
        [CHAT, RESPONSES, STRUCTURED, TOOLS, TOOLS_AUTO, IMAGES, SEED, GEMINI_NATIVE],
        structured_outputs="responseJsonSchema",
        images="data: URLs only",
    ),
    _family(
        "provider",
        "[providers.<name>] (OpenAI-compatible; not checked: the provider decides)",
        ["*"],
        [CHAT, STRUCTURED, TOOLS, TOOLS_AUTO, N, SEED, IMAGES, IMAGE_URLS, LOGPROBS, REASONING],
    ),
)

VLLM_GENERATE = (CHAT, COMPLETIONS, RESPONSES, STRUCTURED, TOOLS, N, LOGPROBS, SEED)
EMBEDDING_KINDS = frozenset({"embed", "pooling"})


def _vllm_family(embedding: bool, multimodal: bool, tool_parser: str) -> Family:
    """The row of a vLLM model with these settings."""
    if embedding:
        return _family("vllm", "embedding (pooling) model", (), [EMBEDDINGS])
    serves = list(VLLM_GENERATE)
    words = ["generation model"]
    how = {
        "structured_outputs": "guided decoding",
        "tools": "named / required (guided decoding)",
    }
    if tool_parser:
        serves.append(TOOLS_AUTO)
        words.append("with a tool_parser")
        how["tools"] = "yes (auto: the tool_parser)"
    if multimodal:  # data: URLs only: the worker fetches nothing (backends.vllm.images)
        serves.append(IMAGES)
        words.append("multimodal (images = true)")
    return _family("vllm", ", ".join(words), (), serves, **how)


# The README's vLLM rows: the kinds of model settings can describe.
VLLM_ROWS = (
    _vllm_family(False, False, ""),
    _vllm_family(False, False, "hermes"),
    _vllm_family(False, True, ""),
    _vllm_family(True, False, ""),
)


def _vllm_entry(settings: Settings, name: str) -> Any:
    """The vLLM settings of the model served as `name` (`VllmSettings.engine`, where the
    worker serves several models), or None when settings have no per-model entry."""
    engine = getattr(settings.backends.vllm, "engine", None)
    return engine(name) if callable(engine) else None


def family_of(backend: str, model: str, settings: Settings) -> Family:
    """The table row that describes `model` on `backend`."""
    if backend == "vllm":
        entry = _vllm_entry(settings, model)
        if entry is None:  # no per-model settings: a generation model, text only
            return VLLM_ROWS[0]
        return _vllm_family(
            str(getattr(entry, "kind", "")).lower() in EMBEDDING_KINDS,  # generate | embed
            bool(getattr(entry, "images", False)),  # a multimodal model
            str(getattr(entry, "tool_parser", "") or ""),
        )
    rows = [f for f in FAMILIES if f.backend == backend] or [
        f for f in FAMILIES if f.backend == "provider"
    ]
    bare = model.removeprefix("models/")
    return next(f for f in rows if any(fnmatchcase(bare, p) for p in f.patterns))


# --- what a line asks for --------------------------------------------------------------------


def needs(request: Request) -> frozenset[str]:
    """The endpoint and the features one line asks for."""
    body = request.body
    out = {request.endpoint}
    if request.fmt == "gemini":
        out.add(GEMINI_NATIVE)
        return frozenset(out)
    fmt = body.get("response_format")
    text = body.get("text")
    if isinstance(text, dict) and isinstance(text.get("format"), dict):
        fmt = fmt or text["format"]  # the Responses API's structured outputs
    if isinstance(fmt, dict) and fmt.get("type") in ("json_schema", "json_object"):
        out.add(STRUCTURED)
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        out.add(TOOLS)
        choice = body.get("tool_choice", "auto")
        if choice == "auto" or (isinstance(choice, dict) and choice.get("type") == "auto"):
            out.add(TOOLS_AUTO)
    for kind in _image_kinds(body):
        out.add(kind)
    n = body.get("n")
    if type(n) is int and n > 1:
        out.add(N)
    if body.get("logprobs") not in (None, False, 0) or body.get("top_logprobs") is not None:
        out.add(LOGPROBS)
    effort = body.get("reasoning_effort")
    reasoning = body.get("reasoning")
    if effort is not None or (isinstance(reasoning, dict) and reasoning.get("effort") is not None):
        out.add(REASONING)
    if body.get("seed") is not None:
        out.add(SEED)
    return frozenset(out)


def _image_kinds(body: dict[str, Any]) -> set[str]:
    """IMAGES when any message or input holds an image part; IMAGE_URLS when one is a web URL."""
    found: set[str] = set()
    turns: Any = body.get("messages")
    if not isinstance(turns, list):
        turns = body.get("input")
    for turn in turns if isinstance(turns, list) else ():
        content = turn.get("content") if isinstance(turn, dict) else None
        for part in content if isinstance(content, list) else ():
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind not in ("image_url", "input_image", "image"):
                continue
            found.add(IMAGES)
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            source = part.get("source")
            if isinstance(source, dict) and source.get("type") == "url":
                url = source.get("url")
            if isinstance(url, str) and url.startswith(("http://", "https://")):
                found.add(IMAGE_URLS)
    return found


def missing(asked: frozenset[str], family: Family) -> list[str]:
    """What of `asked` the family cannot serve, endpoints first, in the table's order."""
    order = [*ENDPOINTS, *(k for k in WORDS if k not in ENDPOINTS)]
    return [k for k in order if k in asked and not family.can(k)]


def cannot(model: str, lacks: list[str]) -> str:
    """'<model> cannot return logprobs or take a seed'."""
    return f"{model} cannot " + " or ".join(WORDS[k] for k in lacks)


# --- the README table ------------------------------------------------------------------------

COLUMNS = (
    "Backend",
    "Models",
    "Endpoints",
    "Structured outputs",
    "Tools",
    "Images",
    "n",
    "logprobs",
    "Reasoning",
    "seed",
)
_BACKEND_WORDS = {
    "openai": "OpenAI Batch",
    "anthropic": "Claude (Anthropic Batch)",
    "gemini": "Gemini Batch",
    "vllm": "vLLM (GPU worker)",
    "provider": "other providers",
}


def _cell(f: Family, feature: str) -> str:
    if not f.can(feature):
        return "no"
    return f.how.get(feature, "yes")


def _row(f: Family) -> list[str]:
    endpoints = [e for e in ENDPOINTS if f.can(e)]
    tools = _cell(f, TOOLS)
    if f.can(TOOLS) and not f.can(TOOLS_AUTO):
        tools = f.how.get(TOOLS, "no auto")
    images = _cell(f, IMAGES)
    if f.can(IMAGES) and not f.can(IMAGE_URLS) and IMAGES not in f.how:
        images = "data: URLs only"
    endpoint_words = ", ".join(endpoints)
    if f.can(GEMINI_NATIVE):
        endpoint_words += " (+ Gemini-native lines)"
    return [
        _BACKEND_WORDS[f.backend],
        f.models,
        endpoint_words,
        _cell(f, STRUCTURED),
        tools,
        images,
        _cell(f, N),
        _cell(f, LOGPROBS),
        _cell(f, REASONING),
        _cell(f, SEED),
    ]


def markdown_table() -> str:
    """The capability table as the README shows it."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    by_backend = [f for f in FAMILIES if f.backend != "provider"]
    by_backend += list(VLLM_ROWS) + [f for f in FAMILIES if f.backend == "provider"]
    lines += ["| " + " | ".join(_row(f)) + " |" for f in by_backend]
    return "\n".join(lines) + "\n"
