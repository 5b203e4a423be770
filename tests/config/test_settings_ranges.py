"""Settings refuse impossible values: each number has its range, NaN and infinity are refused,
with one line naming the key and the range; a command refused this way creates nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchd.config.settings import load_settings
from batchd.errors import BatchdError
from tests.support.helpers import Batchd, chat, write_jsonl

REFUSED = [
    ("BATCHD_MAX_STEP_FAILURES", "0", "max_step_failures", "in 1..1000"),
    ("BATCHD_MAX_STEP_FAILURES", "-3", "max_step_failures", "in 1..1000"),
    ("BATCHD_LEASE_TTL_S", "0", "lease_ttl_s", ">= 1"),
    ("BATCHD_LEASE_TTL_S", "-5", "lease_ttl_s", ">= 1"),
    ("BATCHD_CACHE_TTL_S", "-1", "cache.ttl_s", ">= 0"),
    ("BATCHD_CACHE_SEMANTIC_MAX_ERROR_RATE", "1.5", "cache.semantic.max_error_rate", "< 1"),
    ("BATCHD_STEP_RETRY_BASE_S", "0", "step_retry_base_s", "> 0"),
    ("BATCHD_STEP_RETRY_BASE_S", "-2", "step_retry_base_s", "> 0"),
    ("BATCHD_OPENAI_MAX_RETRIES", "-1", "openai.max_retries", "in 0..100"),
    ("BATCHD_OPENAI_TIMEOUT_S", "0", "openai.timeout_s", "> 0"),
    ("BATCHD_OPENAI_TIMEOUT_S", "-1", "openai.timeout_s", "> 0"),
    ("BATCHD_INGEST_WORKERS", "-1", "ingest_workers", "in 0..1024"),
    ("BATCHD_INGEST_DEDUP_MEMORY_MB", "0", "ingest_dedup_memory_mb", "in 1..65536"),
    ("BATCHD_S3_MAX_ATTEMPTS", "0", "s3.max_attempts", "in 1..100"),
    ("BATCHD_ANTHROPIC_DEFAULT_MAX_TOKENS", "0", "anthropic.default_max_tokens", "in 1..10000000"),
    ("BATCHD_POLL_INTERVAL_S", "inf", "poll_interval_s", "finite"),
    ("BATCHD_POLL_INTERVAL_S", "0", "poll_interval_s", "> 0"),
    ("BATCHD_DEFAULT_DEADLINE_H", "nan", "default_deadline_h", "> 0"),
    ("BATCHD_DEFAULT_DEADLINE_H", "inf", "default_deadline_h", "finite"),
    ("BATCHD_STEP_RETRY_MAX_S", "-inf", "step_retry_max_s", "> 0"),
    ("BATCHD_VLLM_GPU_MEMORY_UTILIZATION", "1.5", "backends.vllm.gpu_memory_utilization", "<= 1"),
    ("BATCHD_OPENAI_MAX_LINES_PER_CHUNK", "50001", "openai.max_lines_per_chunk", "in 1..50000"),
    ("BATCHD_PLANNER_OUTPUT_RATIO", "nan", "planner.output_ratio", "in 0..1"),
]


@pytest.mark.parametrize(("env", "value", "key", "rule"), REFUSED)
def test_impossible_value_is_refused_naming_key_and_range(
    env: str, value: str, key: str, rule: str, tmp_path: Path
) -> None:
    with pytest.raises(BatchdError) as refused:
        load_settings(environ={env: value})
    text = str(refused.value)
    assert key in text and rule in text, text
    assert "\n" not in text


def test_ranges_declared_in_the_file_too(tmp_path: Path) -> None:
    cfg = tmp_path / "batchd.toml"
    cfg.write_text("[openai]\nmax_retries = -2\n")
    with pytest.raises(BatchdError) as refused:
        load_settings(environ={}, config_path=cfg)
    assert "openai.max_retries = -2" in str(refused.value)
    assert "in 0..100" in str(refused.value)
    cfg.write_text('[prices.mine]\nvendor = "openai"\ninput_per_mtok = -1\noutput_per_mtok = 1\n')
    with pytest.raises(BatchdError) as refused:
        load_settings(environ={}, config_path=cfg)
    assert "prices.input_per_mtok" in str(refused.value) and ">= 0" in str(refused.value)


@pytest.mark.parametrize(
    ("env", "value", "field"),
    [
        ("BATCHD_OPENAI_MAX_RETRIES", "0", "max_retries"),  # 0 = the SDK does not retry
        ("BATCHD_CACHE_TTL_S", "0", "ttl_s"),  # 0 = cached answers never expire
        ("BATCHD_INGEST_WORKERS", "0", "ingest_workers"),  # 0 = one per core on big files
    ],
)
def test_zero_where_zero_means_something(env: str, value: str, field: str, tmp_path: Path) -> None:
    s = load_settings(environ={env: value})
    section = s.openai if env.startswith("BATCHD_OPENAI") else s
    section = s.cache if env.startswith("BATCHD_CACHE") else section
    assert getattr(section, field) == 0


def test_empty_debug_means_off_and_empty_numbers_mean_unset(tmp_path: Path) -> None:
    s = load_settings(environ={"BATCHD_DEBUG": "", "BATCHD_POLL_INTERVAL_S": ""})
    assert s.debug is False and s.poll_interval_s == 30.0
    assert load_settings(environ={"BATCHD_DEBUG": "1"}).debug


@pytest.mark.parametrize("url", ["localhost:6379", "http://localhost:6379", "redis//x"])
def test_redis_url_needs_its_scheme(url: str, tmp_path: Path) -> None:
    with pytest.raises(BatchdError) as refused:
        load_settings(environ={"BATCHD_REDIS_URL": url})
    assert "redis_url must start with redis://" in str(refused.value)


def test_refused_setting_on_the_cli_is_one_line_and_creates_nothing(
    batchd: Batchd, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "a.jsonl", [chat("a", "hi")])
    for env in ({"BATCHD_DEFAULT_DEADLINE_H": "nan"}, {"BATCHD_MAX_STEP_FAILURES": "0"}):
        for args in (("submit", str(src)), ("plan", str(src)), ("status",)):
            got = batchd.run(*args, **env)
            assert got.returncode == 1, got.stderr
            assert_one_red_line(got.stderr)
            assert next(iter(env)).removeprefix("BATCHD_").lower() in got.stderr
    assert not batchd.home.exists()
    assert not batchd.out.exists()


def test_missing_input_creates_nothing(batchd: Batchd, tmp_path: Path) -> None:
    for cmd in ("submit", "plan"):
        got = batchd.run(cmd, str(tmp_path / "missing.jsonl"))
        assert got.returncode == 1
        assert_one_red_line(got.stderr)
        assert "missing.jsonl does not exist" in got.stderr
    assert not batchd.home.exists(), list(batchd.home.rglob("*"))
    assert not (tmp_path / "batchd-results").exists()


def assert_one_red_line(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr


@pytest.fixture(autouse=True)
def _no_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run where no batchd.toml lies, so only the values under test are read."""
    monkeypatch.chdir(tmp_path)
