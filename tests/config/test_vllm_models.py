"""[backends.vllm.models.<name>]: more models on one GPU worker, how they share it, routing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchd.config.explain import explain
from batchd.config.pricing import load_price_book
from batchd.config.settings import load_settings
from batchd.errors import BatchdError
from batchd.planning.routing import Route, Router

TOML = """
[backends.vllm]
model = "/models/qwen"
served_model_name = "qwen"
reference_model = "gpt-5.4-mini"
gpu_memory_utilization = 0.7
tool_parser = "hermes"
gpu_hourly_usd = 2.5
windows = ["22:00-06:00"]

[backends.vllm.models.minilm]
model = "/models/all-MiniLM-L6-v2"
kind = "embed"
gpu_memory_utilization = 0.2
reference_model = "text-embedding-3-small"

[models.embedder]
targets = ["vllm:minilm"]
"""


def settings(tmp_path: Path, text: str = TOML, environ: dict[str, str] | None = None) -> Any:
    path = tmp_path / "batchd.toml"
    path.write_text(text)
    return load_settings(environ=environ or {}, config_path=path)


def test_each_model_has_complete_engine_settings(tmp_path: Path) -> None:
    v = settings(tmp_path).backends.vllm
    chat, embed = v.engines()
    assert v.served_names() == ["qwen", "minilm"]
    assert (chat.kind, chat.tool_parser, chat.gpu_memory_utilization) == ("generate", "hermes", 0.7)
    assert (embed.kind, embed.model, embed.gpu_memory_utilization) == (
        "embed",
        "/models/all-MiniLM-L6-v2",
        0.2,
    )
    # worker fields come from [backends.vllm]; engine fields from the model's table
    assert embed.gpu_hourly_usd == 2.5 and embed.windows == ["22:00-06:00"]
    assert embed.tool_parser == "" and embed.reference_model == "text-embedding-3-small"
    assert v.engine("minilm") == embed and v.engine("other") is None


def test_lines_route_to_every_served_model(tmp_path: Path) -> None:
    s = settings(tmp_path)
    router = Router(load_price_book(s), {"vllm": object(), "openai": object()}, s)  # type: ignore[dict-item]
    assert router.route("minilm") == Route("vllm", "minilm")
    assert router.route("vllm:minilm") == Route("vllm", "minilm")
    assert router.route("vllm:qwen") == Route("vllm", "qwen")
    assert router.reference_of(Route("vllm", "minilm")) == "text-embedding-3-small"
    assert router.reference_of(Route("vllm", "qwen")) == "gpt-5.4-mini"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("0.2\nreference", "0.5\nreference"), "add\nup to at most 1"),
        (('kind = "embed"', 'kind = "rerank"'), "kind must be generate or embed"),
        (("[backends.vllm.models.minilm]", "[backends.vllm.models.qwen]"), "two models named"),
        (('kind = "embed"', 'kind = "embed"\ntool_parser = "hermes"'), "calls no tools"),
        (('targets = ["vllm:minilm"]', 'targets = ["vllm:nomic"]'), "needs [backends.vllm]"),
    ],
)
def test_bad_model_tables_are_refused(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    with pytest.raises(BatchdError) as err:
        settings(tmp_path, TOML.replace(*change))
    assert message.replace("\n", " ") in str(err.value).replace("\n", " ")


def test_a_fixed_kv_cache_takes_no_memory_share(tmp_path: Path) -> None:
    text = TOML.replace("gpu_memory_utilization = 0.2", "kv_cache_memory_bytes = 268435456")
    text = text.replace("gpu_memory_utilization = 0.7", "gpu_memory_utilization = 0.9")
    assert settings(tmp_path, text).backends.vllm.engine("minilm").kv_cache_memory_bytes > 0


def test_models_are_a_file_table_not_a_variable(tmp_path: Path) -> None:
    with pytest.raises(BatchdError, match="BATCHD_VLLM_MODELS"):
        settings(tmp_path, environ={"BATCHD_VLLM_MODELS": "x"})
    # the per-model settings of the worker's first model are variables as before
    s = settings(tmp_path, environ={"BATCHD_VLLM_TOOL_PARSER": "llama3_json"})
    assert s.backends.vllm.tool_parser == "llama3_json"


def test_batchd_settings_lists_each_models_fields(tmp_path: Path) -> None:
    (tmp_path / "batchd.toml").write_text(TOML)
    rows = {r.key: r for r in explain(environ={}, config_path=tmp_path / "batchd.toml")}
    assert rows["backends.vllm.models.minilm.kind"].value == "embed"
    assert rows["backends.vllm.models.minilm.kind"].source.startswith("file ")
    assert rows["backends.vllm.models.minilm.max_num_seqs"].value == 256
    assert rows["backends.vllm.kind"].value == "generate"
