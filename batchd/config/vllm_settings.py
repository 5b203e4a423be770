"""[backends.vllm]: the self-hosted GPU worker, the models it serves and how they share it.

The section itself describes the worker (its GPUs, their price, off-peak windows,
checkpoints) and its first model. `[backends.vllm.models.<name>]` adds more models the same
worker serves, e.g. an embedding model beside a chat model; each inherits the worker's
fields and sets its own engine fields.

How the models share the GPU: every model has its own engine, resident at once (started at
its first chunk), holding its own share of GPU memory (`gpu_memory_utilization`, or a fixed
`kv_cache_memory_bytes`); the shares of the models on one worker add up to at most 1. The
engines take turns at steps (one engine step at a time on the worker), so every GPU-second
is billed to exactly one model's requests.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from batchd.config.fields import (
    ByteCount,
    Count,
    MemoryShare,
    NonNegative,
    NonNegInt,
    PositiveS,
    Section,
)

GENERATE, EMBED = "generate", "embed"
MODEL_KINDS = (GENERATE, EMBED)


class VllmModelSettings(Section):
    """[backends.vllm.models.<name>]: one more model on the worker; <name> is what lines ask for
    (also as vllm:<name>). Worker fields (GPUs, price, windows, checkpoints) come from
    [backends.vllm]."""

    model: str  # path to the model (HF layout)
    kind: str = GENERATE  # generate (chat, completions) | embed (embeddings: a pooling model)
    tool_parser: str = ""  # vLLM tool-call parser (e.g. hermes) for tool_choice auto
    images: bool = False  # a multimodal model: chat lines may hold images (data: URLs)
    reference_model: str = ""  # realtime model priced as the baseline for its lines
    quantization: str = "none"
    dtype: str = "auto"
    max_num_seqs: Count = 256
    max_num_batched_tokens: NonNegInt = 0
    gpu_memory_utilization: MemoryShare = 0.9
    kv_cache_memory_bytes: ByteCount = 0
    max_model_len: NonNegInt = 0
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    seed: int = 0


# what a [backends.vllm.models.<name>] table sets for its own engine
_ENGINE_FIELDS = tuple(f for f in VllmModelSettings.__struct_fields__ if f != "model")


class VllmSettings(Section):
    """Self-hosted vLLM: the engine, its GPUs, their price and their off-peak windows."""

    model: str = ""  # path to the model (HF layout); empty = no vLLM backend
    served_model_name: str = ""  # the name lines ask for (also as vllm:<name>); default: dir name
    kind: str = GENERATE  # generate (chat, completions) | embed (embeddings: a pooling model)
    tool_parser: str = ""  # vLLM tool-call parser (e.g. hermes) for tool_choice auto; "" = none
    images: bool = False  # a multimodal model (vision): chat lines may hold images (data: URLs)
    reference_model: str = ""  # realtime model priced as the baseline for lines naming this one
    quantization: str = "none"  # awq, gptq, fp8, compressed-tensors, none, ...
    dtype: str = "auto"
    max_num_seqs: Count = 256
    max_num_batched_tokens: NonNegInt = 0  # 0 = vLLM's default
    gpu_memory_utilization: MemoryShare = 0.9
    kv_cache_memory_bytes: ByteCount = 0  # fixed KV cache size; 0 = from gpu_memory_utilization
    max_model_len: NonNegInt = 0  # 0 = the model's own
    tensor_parallel_size: Count = 1
    num_gpus: Count = 1  # GPUs one engine holds; GPU-seconds = wall seconds x num_gpus
    gpu_hourly_usd: NonNegative = 2.0  # per GPU
    gpu_type: str = ""  # label for throughput records (e.g. "H100"); "" = detected
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    seed: int = 0
    windows: list[str] = msgspec.field(default_factory=list)  # empty = always open
    timezone: str = "UTC"
    admit_margin_s: NonNegative = 300.0  # stop admitting this long before a window ends
    checkpoint_every: Count = 256  # results per checkpoint part
    checkpoint_interval_s: PositiveS = 30.0  # or this often, whichever comes first
    max_requests_per_chunk: Count = 4096
    throughput_tokens_per_s: NonNegative = 0.0  # planner's default before any run is measured
    # more models on the same worker: [backends.vllm.models.<served name>]
    models: dict[str, VllmModelSettings] = msgspec.field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.model)

    @property
    def name(self) -> str:
        return self.served_model_name or Path(self.model.rstrip("/")).name

    def engines(self) -> list[VllmSettings]:
        """One settings object per model the worker serves (the first is this section's own);
        each is complete: worker fields from this section, engine fields from its table."""
        if not self.enabled:
            return []
        out = [msgspec.structs.replace(self, models={})]
        for name, m in self.models.items():
            fields = {f: getattr(m, f) for f in _ENGINE_FIELDS}
            out.append(
                msgspec.structs.replace(
                    self, models={}, model=m.model, served_model_name=name, **fields
                )
            )
        return out

    def served_names(self) -> list[str]:
        return [e.name for e in self.engines()]

    def engine(self, name: str) -> VllmSettings | None:
        """The settings of the model served as `name` (None: this worker does not serve it)."""
        return next((e for e in self.engines() if e.name == name), None)


def vllm_problems(v: VllmSettings) -> list[str]:
    """What is wrong with the section as a whole (one phrase each)."""
    problems = []
    engines = v.engines()
    names = [e.name for e in engines]
    if v.models and not v.enabled:
        problems.append("backends.vllm.models needs backends.vllm.model (the worker's first model)")
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"backends.vllm serves two models named {dup!r}: rename one")
    for e in engines:
        if e.kind not in MODEL_KINDS:
            problems.append(f"backends.vllm model {e.name!r}: kind must be generate or embed")
        if e.kind == EMBED and e.tool_parser:
            problems.append(
                f"backends.vllm model {e.name!r}: an embed model calls no tools (tool_parser)"
            )
        if e.kind == EMBED and e.images:
            problems.append(
                f"backends.vllm model {e.name!r}: an embed model takes no images (images = true)"
            )
    shared = [e for e in engines if not e.kv_cache_memory_bytes]
    if len(engines) > 1 and sum(e.gpu_memory_utilization for e in shared) > 1.0 + 1e-9:
        shares = ", ".join(f"{e.name} {e.gpu_memory_utilization:g}" for e in shared)
        problems.append(
            "the models of backends.vllm share the GPU: their gpu_memory_utilization must add "
            f"up to at most 1 (now {shares}); lower them, or set kv_cache_memory_bytes"
        )
    return problems
