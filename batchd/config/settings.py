"""One Settings object: batchd.toml < environment (BATCHD_*) < CLI flags.

Unknown keys are errors, in the file and in the environment alike, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

import msgspec

from batchd.config import cache_settings as cs
from batchd.config.fields import (
    Attempts,
    Count,
    Fraction,
    Meta,
    NonNegative,
    NonNegInt,
    PositiveS,
    Retries,
    Section,
    TokenCount,
)
from batchd.config.quality import QualitySettings, escalate_problems, quality_problems
from batchd.config.suggest import did_you_mean
from batchd.config.validation import REDIS_SCHEMES, alias_problems, describe, non_finite
from batchd.config.vllm_settings import VllmSettings, vllm_problems
from batchd.errors import BatchdError

CONFIG_FILE_NAME = "batchd.toml"
ENV_LAYER = "the BATCHD_* environment"

EnqueuedTokens = Annotated[int, Meta(ge=0, le=10**12)]  # a vendor's enqueued-token cap; 0 = none
FALLBACKS = ("realtime", "flex", "none")
_Section = Section


class OpenAISettings(_Section):
    """OpenAI Batch API limits (the vendor's own, settable lower) and client behaviour."""

    max_lines_per_chunk: Annotated[int, Meta(ge=1, le=50_000)] = 50_000
    max_bytes_per_chunk: Annotated[int, Meta(ge=1, le=200_000_000)] = 200_000_000
    max_retries: Retries = 5
    timeout_s: PositiveS = 600.0
    sync_concurrency: Count = 8  # the deadline guard's parallel synchronous calls
    flex_timeout_s: PositiveS = (
        900.0  # one flex call (OpenAI suggests ~15 min), within the deadline
    )
    # Models with the flex service tier (fnmatch patterns; OpenAI's flex processing guide).
    flex_models: list[str] = msgspec.field(default_factory=lambda: ["gpt-5*", "o3*", "o4-mini*"])
    # the vendor's enqueued-token cap per model (batches waiting or running): one number for
    # every model (0 = none), or per model (fnmatch patterns; wins over the number)
    enqueued_token_limit: EnqueuedTokens = 0
    enqueued_token_limits: dict[str, EnqueuedTokens] = msgspec.field(default_factory=dict)


class AnthropicSettings(_Section):
    """Anthropic Message Batches limits (the vendor's own, settable lower) and client behaviour."""

    max_lines_per_chunk: Annotated[int, Meta(ge=1, le=100_000)] = 100_000
    max_bytes_per_chunk: Annotated[int, Meta(ge=1, le=256_000_000)] = 256_000_000
    max_retries: Retries = 5
    timeout_s: PositiveS = 600.0
    default_max_tokens: TokenCount = 4096  # Claude needs max_tokens; used when a line has none
    sync_concurrency: Count = 8  # the deadline guard's parallel Messages API calls
    prompt_cache: bool = True  # mark shared prefixes with cache_control when it pays
    # the vendor's enqueued-token cap per model (batches waiting or running): one number for
    # every model (0 = none), or per model (fnmatch patterns; wins over the number)
    enqueued_token_limit: EnqueuedTokens = 0
    enqueued_token_limits: dict[str, EnqueuedTokens] = msgspec.field(default_factory=dict)


class GeminiSettings(_Section):
    """Gemini Batch API limits (the vendor's own, settable lower) and client behaviour.

    Inline requests: "total request size under 20MB"; input files go through the Files API,
    "per-file maximum size of 2 GB" (ai.google.dev/gemini-api/docs/batch-mode and
    /docs/files). Google documents no per-batch request count: 50,000 is batchd's choice.
    """

    max_lines_per_chunk: int = 50_000
    max_bytes_per_chunk: int = 2_000_000_000
    inline_max_bytes: int = 19_000_000  # bigger chunks go as a JSONL file (limit: 20 MB)
    max_retries: int = 5
    timeout_s: float = 600.0
    # the vendor's enqueued-token cap per model (batches waiting or running): one number for
    # every model (0 = none), or per model (fnmatch patterns; wins over the number)
    enqueued_token_limit: EnqueuedTokens = 0
    enqueued_token_limits: dict[str, EnqueuedTokens] = msgspec.field(default_factory=dict)


class BackendsSettings(_Section):
    vllm: VllmSettings = msgspec.field(default_factory=VllmSettings)


class S3Settings(_Section):
    """S3 access (credentials: boto3's standard chain only, never stored) and the drop folder."""

    endpoint_url: str = ""  # S3-compatible store (MinIO, R2, moto); "" = AWS
    region: str = ""  # "" = boto3's default (AWS_REGION, profile)
    # part size of uploads (S3: 5 MiB .. 5 GiB)
    multipart_chunk_bytes: Annotated[int, Meta(ge=5 * 1024**2, le=5 * 1024**3)] = 16 * 1024**2
    max_attempts: Attempts = 5  # boto3 attempts per call, the first included (standard mode)
    max_drop_bytes: Annotated[int, Meta(ge=1, le=2**62)] = 5 * 1024**3  # bigger: to failed/
    inbox: str = ""  # s3://bucket/inbox/ the coordinators watch ("" = none)
    inbox_output: str = ""  # where runs of dropped files write results
    watch_interval_s: PositiveS = 10.0  # seconds between scans of the inbox


class ModelAlias(_Section):
    """[models.<alias>]: the targets a line naming the alias may run on (DESIGN §4)."""

    targets: list[str]  # "vllm:<name>", "openai:<model>", "anthropic:<model>", "gemini:<model>",
    # "<provider>:<model>"
    reference: str = ""  # realtime model priced as the baseline; default: the first vendor target
    quality: QualitySettings | None = None  # the quality guard (config/quality.py); None = off
    # a line whose answer meets one of these goes on to the next target (config/quality.py)
    escalate_on: list[str] = msgspec.field(default_factory=list)
    semantic_cache: bool | None = None  # opt this alias in (or out) of [cache.semantic]


class ProviderSettings(_Section):
    """[providers.<name>]: another OpenAI-compatible Batch API, reached by base URL."""

    base_url: str
    api_key_env: str = ""  # environment variable holding its key; default <NAME>_API_KEY
    enqueued_token_limit: EnqueuedTokens = 0  # as [openai] (Together: per model)
    enqueued_token_limits: dict[str, EnqueuedTokens] = msgspec.field(default_factory=dict)


class PlannerSettings(_Section):
    """How the planner estimates tokens and GPU time and decides where requests run."""

    vendor_window_h: NonNegative = 24.0  # batch turnaround with no measurement and no prior
    # plan vendor batches to take this percentile of their measured turnaround
    turnaround_percentile: Annotated[float, Meta(gt=0, le=100)] = 90.0
    turnaround_s: NonNegative | None = None  # set: every vendor batch is planned to take this
    gpu_reserved: bool = False  # window GPUs are paid anyway (sunk): fill them first
    gpu_workers: Count = 1  # vLLM engines taking this run's work (each holds num_gpus GPUs)
    bytes_per_token: PositiveS = 4.0  # request-line bytes per input token before runs measured it
    output_ratio: Fraction = 0.0  # output/max_tokens before measured; 0 = min(max, estimate_output)


class PriceOverride(_Section):
    """One price-book line set in settings; USD per 1M tokens."""

    vendor: str
    input_per_mtok: NonNegative
    output_per_mtok: NonNegative
    cached_input_per_mtok: NonNegative | None = None
    batch_discount: Fraction = 0.5
    cache_write_5m_multiplier: NonNegative = 1.25
    cache_write_1h_multiplier: NonNegative = 2.0
    min_cache_tokens: NonNegInt = 1024
    as_of: str = "settings"
    source: str = "batchd.toml"


LEGACY_HOME = ".batchd"  # the home of earlier versions, still used where it exists


def default_home(environ: dict[str, str] | None = None) -> Path:
    """./.batchd when this directory has one, else the user's state directory."""
    if Path(LEGACY_HOME).is_dir():
        return Path(LEGACY_HOME)
    env = os.environ if environ is None else environ
    state = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "batchd"


class Settings(_Section):
    home: str = ""  # "" = default_home(): ./.batchd if present, else ~/.local/state/batchd
    output: str = "batchd-results"
    poll_interval_s: PositiveS = 30.0
    default_deadline_h: PositiveS = 72.0
    max_attempts: Attempts = 3
    fallback: str = "realtime"  # at the deadline guard: realtime (flex first) | flex | none
    guard_margin_s: NonNegative = 0.0  # guard fires this long before the deadline; 0 = 10%
    # a step that raises this often ends its lines `failed` (a finalize: the run)
    max_step_failures: Annotated[int, Meta(ge=1, le=1000)] = 5
    step_retry_base_s: PositiveS = 2.0  # backoff after a failed step: base * 2**(failures-1)
    step_retry_max_s: PositiveS = 300.0
    default_tenant: str = "default"
    cache: cs.CacheSettings = msgspec.field(default_factory=cs.CacheSettings)  # or cache = bool
    estimate_output_tokens: TokenCount = 256
    # processes that parse input lines; 0 = one per core on big files
    ingest_workers: Annotated[int, Meta(ge=0, le=1024)] = 0
    # in-run dedup held in memory up to this; the rest of a bigger input spills to disk
    ingest_dedup_memory_mb: Annotated[int, Meta(ge=1, le=65536)] = 32
    debug: bool = False
    redis_url: str = ""
    # a killed coordinator's runs are taken over after this
    lease_ttl_s: Annotated[float, Meta(ge=1)] = 60.0
    workdir: str = ""  # bulk data of runs: a local directory or s3://bucket/prefix/
    jobs_dir: str = "jobs"  # nightly job specs: <jobs_dir>/*.toml
    results_file_mode: str = "0600"  # octal permissions of local result files (e.g. "0644")
    retain_work: bool = False  # keep a finished run's chunk files and input copy (debugging)
    config: str = ""
    openai: OpenAISettings = msgspec.field(default_factory=OpenAISettings)
    anthropic: AnthropicSettings = msgspec.field(default_factory=AnthropicSettings)
    gemini: GeminiSettings = msgspec.field(default_factory=GeminiSettings)
    prices: dict[str, PriceOverride] = msgspec.field(default_factory=dict)
    backends: BackendsSettings = msgspec.field(default_factory=BackendsSettings)
    s3: S3Settings = msgspec.field(default_factory=S3Settings)
    models: dict[str, ModelAlias] = msgspec.field(default_factory=dict)
    providers: dict[str, ProviderSettings] = msgspec.field(default_factory=dict)
    planner: PlannerSettings = msgspec.field(default_factory=PlannerSettings)

    @property
    def home_path(self) -> Path:
        return Path(self.home) if self.home else default_home()


_SECTIONS: dict[str, type[msgspec.Struct]] = {
    "openai": OpenAISettings,
    "anthropic": AnthropicSettings,
    "gemini": GeminiSettings,
    "vllm": VllmSettings,  # BATCHD_VLLM_<FIELD> sets [backends.vllm]
    "s3": S3Settings,
    "planner": PlannerSettings,
    "cache": cs.CacheSettings,  # BATCHD_CACHE_TTL_S; BATCHD_CACHE alone sets cache.enabled
    "cache_semantic": cs.SemanticSettings,  # BATCHD_CACHE_SEMANTIC_<FIELD> sets [cache.semantic]
}
_NESTED = {"vllm": ("backends", "vllm"), "cache_semantic": ("cache", "semantic")}
_LISTS = ("windows", "flex_models", "models")  # BATCHD_*: comma-separated
_TABLES = ("prices", "backends", "models", "providers")  # set in batchd.toml only
_SECTION_TABLES = {"vllm": ("models",)}  # tables inside a section: batchd.toml only


def _env_fields(section: str, struct: type[msgspec.Struct]) -> list[str]:
    """The fields of a section a BATCHD_<SECTION>_<FIELD> variable may set."""
    tables = _SECTION_TABLES.get(section, ())
    return [f for f in struct.__struct_fields__ if f not in tables]


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """Map BATCHD_FOO=1 to {"foo": "1"} and BATCHD_OPENAI_MAX_RETRIES to {"openai": {...}}."""
    top_fields = set(Settings.__struct_fields__)
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith("BATCHD_"):
            continue
        key = name[len("BATCHD_") :].lower()
        key = "cache_enabled" if key == "cache" else key  # BATCHD_CACHE, the older form
        if key in top_fields and key not in _SECTIONS and key not in _TABLES:
            if value.strip() or _is_text(Settings, key):
                out[key] = value  # BATCHD_DEBUG= (empty) means unset, not an error
            continue
        for section, struct in _SECTIONS.items():
            prefix = section + "_"
            if key.startswith(prefix) and key[len(prefix) :] in _env_fields(section, struct):
                if not value.strip() and not _is_text(struct, key[len(prefix) :]):
                    break
                target = out
                for part in _NESTED.get(section, (section,)):
                    target = target.setdefault(part, {})
                field = key[len(prefix) :]
                if field == "enqueued_token_limits":  # a table: per model, in the file only
                    raise BatchdError(
                        f"{name} cannot be set from the environment (it is a table).",
                        f"Set [{section}.enqueued_token_limits] in batchd.toml, or "
                        f"BATCHD_{section.upper()}_ENQUEUED_TOKEN_LIMIT for every model.",
                    )
                target[field] = value.split(",") if field in _LISTS else value
                break
        else:
            raise BatchdError(
                f"Unknown environment variable {name}.{did_you_mean(name, known_variables())}",
                "Unset it, or check the spelling: `batchd settings` lists every variable.",
            )
    return out


def known_variables() -> list[str]:
    """Every BATCHD_* variable that sets a setting."""
    names = [
        "BATCHD_" + f.upper()
        for f in Settings.__struct_fields__
        if (f not in _SECTIONS or f == "cache") and f not in _TABLES
    ]
    for section, struct in _SECTIONS.items():
        names += [f"BATCHD_{section.upper()}_{f.upper()}" for f in _env_fields(section, struct)]
    return names


_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)` - at `\$((?:\.[A-Za-z_]\w*|\[\.\.\.\])*)`")


def _section_at(path: str) -> type[msgspec.Struct] | None:
    """The settings struct at a msgspec error path such as `.openai` or `.models[...]`."""
    struct: Any = Settings
    for part in re.findall(r"\.(\w+)|\[\.\.\.\]", path):
        if not part:  # a dict value: models[...], prices[...], providers[...]
            continue
        hint = msgspec.structs.fields(struct)
        field = next((f for f in hint if f.name == part), None)
        if field is None:
            return None
        kind = field.type
        args = getattr(kind, "__args__", None)
        struct = args[-1] if getattr(kind, "__origin__", None) is dict and args else kind
    return struct if isinstance(struct, type) and issubclass(struct, msgspec.Struct) else None


def _convert(data: dict[str, Any], where: str) -> Settings:
    """msgspec's conversion, its errors in the user's words (with 'did you mean')."""
    try:
        return msgspec.convert(data, Settings, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        unknown = _UNKNOWN_FIELD.search(text)
        if unknown:
            field, path = unknown.group(1), unknown.group(2)
            prefix = path.replace("[...]", ".<name>").lstrip(".")
            key = f"{prefix}.{field}" if prefix else field
            struct = _section_at(path)
            known = struct.__struct_fields__ if struct else ()
            hint = did_you_mean(field, known, f"{prefix}." if prefix else "")
            raise BatchdError(
                f"Unknown setting {key} in {where}.{hint}",
                "Fix the spelling: `batchd settings` shows every setting and its value.",
            ) from exc
        raise describe(Settings, _TABLES, exc, data, where) from exc


def _is_text(struct: type[msgspec.Struct], field: str) -> bool:
    """Whether a field holds text (an empty value then means ""; for others, unset)."""
    return any(f.name == field and f.type is str for f in msgspec.structs.fields(struct))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    cli: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    config_path: str | Path | None = None,
) -> Settings:
    """Build the Settings object; raise BatchdError naming the bad key or value.

    Each layer is checked on its own first, so a bad value in the file is an error even
    when a variable overrides it, and the message names the layer it is in.
    """
    layers = settings_layers(cli, environ, config_path)
    data: dict[str, Any] = {}
    for where, layer in layers:
        _convert(layer, where)
        data = _merge(data, layer)
    settings = _convert(data, "the settings")
    _check(settings)
    return settings


def settings_layers(
    cli: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    config_path: str | Path | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """(where, values) of each layer, lowest first: the file, BATCHD_* variables, flags."""
    env = dict(os.environ if environ is None else environ)
    named = config_path or env.get("BATCHD_CONFIG")
    path = Path(named or CONFIG_FILE_NAME)
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BatchdError(f"{path} is not valid TOML: {exc}.", "Fix the file.") from exc
    elif named:
        raise BatchdError(
            f"Config file {path} does not exist.",
            "Check the path given by BATCHD_CONFIG.",
        )
    return [
        (f"{path}", cs.legacy_cache(data)),
        (ENV_LAYER, cs.legacy_cache(_env_overrides(env))),
        ("the command line", cs.flags_layer(cli)),
    ]


def _check(s: Settings) -> None:
    problems = non_finite(Settings, s)
    if s.redis_url and not s.redis_url.startswith(REDIS_SCHEMES):
        problems.append(
            "redis_url must start with redis://, rediss:// or unix:// "
            "(e.g. redis://localhost:6379/0)"
        )
    mode = s.results_file_mode
    if not re.fullmatch(r"0?[0-7]{3}", mode) or int(mode, 8) & 0o600 != 0o600:
        problems.append(
            "results_file_mode must be octal permissions with owner read and write, "
            "like 0600 or 0644"
        )
    if s.fallback not in FALLBACKS:
        problems.append(f"fallback must be one of {', '.join(FALLBACKS)}")
    if not 0 < s.gemini.max_bytes_per_chunk <= 2_000_000_000:
        problems.append("gemini.max_bytes_per_chunk must be in 1..2000000000 (the vendor's limit)")
    if not 0 <= s.gemini.inline_max_bytes <= 20_000_000:
        problems.append("gemini.inline_max_bytes must be in 0..20000000 (the vendor's limit)")
    if s.gemini.max_lines_per_chunk < 1:
        problems.append("gemini.max_lines_per_chunk must be >= 1")
    problems += vllm_problems(s.backends.vllm)
    problems += alias_problems(s) + cs.semantic_problems(s.cache.semantic)
    problems += [
        p for n, a in s.models.items() if a.quality for p in quality_problems(n, a.quality)
    ] + [p for n, a in s.models.items() for p in escalate_problems(n, a.escalate_on)]
    if problems:
        raise BatchdError("Invalid settings: " + "; ".join(problems) + ".", "Fix the values.")
