"""Every error path of the CLI is one red line (exit 1), the traceback only under
BATCHD_DEBUG=1: a directory given as a file, a malformed or dead Redis, S3 refusing, a full
disk, a read-only home or output. Full and read-only disks are real: a tiny or read-only
tmpfs mounted in a private mount namespace (tests.support.mounts)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.run.test_preflight import assert_nothing_bought, assert_one_red_line
from tests.support.helpers import Batchd, chat, write_jsonl
from tests.support.mounts import namespaces_work, with_mount
from tests.support.s3_server import S3Server

needs_mounts = pytest.mark.skipif(
    not namespaces_work(), reason="needs unshare -rm (user + mount namespaces)"
)


def _src(tmp_path: Path, n: int = 3) -> Path:
    return write_jsonl(tmp_path / "in.jsonl", [chat(f"k{i}", f"line {i}") for i in range(n)])


def _args(command: str, src: Path) -> tuple[str, ...]:
    return {"submit": ("submit", str(src)), "plan": ("plan", str(src)), "status": ("status",)}[
        command
    ]


@pytest.mark.parametrize("command", ["plan", "submit"])
def test_a_directory_given_as_the_file(batchd: Batchd, tmp_path: Path, command: str) -> None:
    folder = tmp_path / "somedir"
    folder.mkdir()
    got = batchd.run(command, str(folder))
    assert got.returncode == 1
    assert_one_red_line(got.stderr, "somedir is a directory")
    assert not batchd.home.exists()


def test_traceback_only_under_batchd_debug(batchd: Batchd, tmp_path: Path) -> None:
    folder = tmp_path / "somedir"
    folder.mkdir()
    for off in ("", "0", "false"):
        quiet = batchd.run("plan", str(folder), BATCHD_DEBUG=off)
        assert quiet.returncode == 1
        assert_one_red_line(quiet.stderr, "is a directory")
    loud = batchd.run("plan", str(folder), BATCHD_DEBUG="1")
    assert loud.returncode == 1 and "Traceback" in loud.stderr


@pytest.mark.parametrize("command", ["submit", "status", "plan"])
@pytest.mark.parametrize("url", ["localhost:6379", "127.0.0.1:6379/0", "http://localhost:6379"])
def test_redis_url_without_its_scheme(
    batchd: Batchd, tmp_path: Path, command: str, url: str
) -> None:
    got = batchd.run(*_args(command, _src(tmp_path)), BATCHD_REDIS_URL=url)
    assert got.returncode == 1
    assert_one_red_line(got.stderr, "redis_url must start with redis://")
    assert not batchd.home.exists()


@needs_mounts
@pytest.mark.parametrize("command", ["submit", "status", "plan"])
def test_read_only_home(
    batchd: Batchd,
    emulator: OpenAIBatchEmulator,
    claude: AnthropicBatchEmulator,
    tmp_path: Path,
    command: str,
) -> None:
    src = _src(tmp_path)
    mount = tmp_path / "ro-home"
    argv = with_mount(batchd.argv(*_args(command, src)), mount, read_only=True)
    env = {**batchd.env, "BATCHD_HOME": str(mount / "batchd")}
    got = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert got.returncode == 1, got.stderr
    assert_one_red_line(got.stderr, "BATCHD_HOME", "Read-only file system")
    assert_nothing_bought(emulator, claude)


@needs_mounts
def test_full_home_disk(
    batchd: Batchd, emulator: OpenAIBatchEmulator, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    mount = tmp_path / "full-home"
    argv = with_mount(batchd.argv("submit", str(_src(tmp_path))), mount, size_kib=4)
    env = {**batchd.env, "BATCHD_HOME": str(mount)}
    got = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert got.returncode == 1, got.stderr
    assert_one_red_line(got.stderr, "BATCHD_HOME")
    assert "full" in got.stderr or "No space left" in got.stderr
    assert_nothing_bought(emulator, claude)


@needs_mounts
def test_disk_full_at_finalize_ends_the_run_with_one_red_line(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    """The output's disk takes the preflight's probe but not the results (a 12 KiB tmpfs)."""
    lines = [chat(f"k{i}", f"line {i} " + "words to fill the results " * 8) for i in range(300)]
    src = write_jsonl(tmp_path / "big.jsonl", lines)
    mount = tmp_path / "small-disk"
    argv = with_mount(
        batchd.argv("submit", str(src), "--output", str(mount / "out"), "-q"), mount, size_kib=12
    )
    env = {**batchd.env, "BATCHD_MAX_STEP_FAILURES": "2", "BATCHD_STEP_RETRY_BASE_S": "0.05"}
    got = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert got.returncode == 1, got.stderr
    assert_one_red_line(got.stderr, "ended without results", "No space left on device")
    assert len(emulator.batches()) == 1  # bought once; the run ended instead of hanging
    status = batchd.run("status")
    assert "done" in status.stdout and "failed" in status.stdout


def test_s3_without_credentials_is_one_red_line(
    batchd: Batchd,
    emulator: OpenAIBatchEmulator,
    claude: AnthropicBatchEmulator,
    tmp_path: Path,
    s3_server: S3Server,
) -> None:
    no_creds = {
        "BATCHD_S3_ENDPOINT_URL": s3_server.url,
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    src = _src(tmp_path)
    got = batchd.run("submit", str(src), "--output", "s3://some-bucket/out", **no_creds)
    assert got.returncode == 1, got.stderr
    assert_one_red_line(got.stderr, "s3://some-bucket/out", "credentials")
    plan = batchd.run("plan", "s3://some-bucket/in.jsonl", **no_creds)
    assert plan.returncode == 1, plan.stderr
    assert_one_red_line(plan.stderr, "s3://some-bucket/in.jsonl")
    assert_nothing_bought(emulator, claude)
