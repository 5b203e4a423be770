"""Preflight: before anything is sent or bought, the output and workdir take a probe, every
backend the plan uses has its key and a well-formed endpoint, and Redis answers. A failure
is one red line and exit 1, and the vendors have no object of the run (emulator state)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import Batchd, chat, write_jsonl
from tests.support.mounts import namespaces_work, with_mount
from tests.support.s3_server import CREDENTIALS, S3Server
from tests.support.stack import Stack


def _mixed() -> list[dict[str, Any]]:
    return [
        chat("o1", "for openai one"),
        chat("c1", "for claude one", model="claude-haiku-4-5"),
        chat("o2", "for openai two", model="gpt-5.4-mini"),
        chat("c2", "for claude two", model="claude-haiku-4-5"),
    ]


def assert_one_red_line(stderr: str, *needles: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def assert_nothing_bought(emulator: OpenAIBatchEmulator, claude: AnthropicBatchEmulator) -> None:
    assert emulator.batches() == [] and emulator.files() == []
    assert claude.batches() == [] and claude.requests_seen() == []


def test_missing_anthropic_key_in_a_mixed_file_buys_nothing(
    batchd: Batchd, emulator: OpenAIBatchEmulator, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "mixed.jsonl", _mixed())
    got = batchd.submit(src, ANTHROPIC_API_KEY="")
    assert got.returncode == 1, got.stderr
    assert_one_red_line(got.stderr, "ANTHROPIC_API_KEY is not set", "nothing was sent")
    assert_nothing_bought(emulator, claude)
    status = batchd.run("status")
    assert "dispatching" in status.stdout  # kept: the same submit with the key resumes it
    again = batchd.submit(src)
    assert again.returncode == 0, again.stderr
    assert "Resuming" in again.stderr
    rows = batchd.results()
    assert [r["custom_id"] for r in rows] == ["o1", "c1", "o2", "c2"]
    assert {r["status"] for r in rows} == {"succeeded"}
    assert len(emulator.batches()) == 2 and len(claude.batches()) == 1


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ANTHROPIC_BASE_URL": "localhost:9"}, "ANTHROPIC_BASE_URL"),
        ({"ANTHROPIC_BASE_URL": ""}, "ANTHROPIC_BASE_URL"),
        ({"ANTHROPIC_BASE_URL": "http://"}, "ANTHROPIC_BASE_URL"),
        ({"ANTHROPIC_BASE_URL": "http://host:port"}, "ANTHROPIC_BASE_URL"),
    ],
)
def test_malformed_endpoint_of_one_backend_buys_nothing_at_the_other(
    batchd: Batchd,
    emulator: OpenAIBatchEmulator,
    claude: AnthropicBatchEmulator,
    tmp_path: Path,
    env: dict[str, str],
    named: str,
) -> None:
    src = write_jsonl(tmp_path / "mixed.jsonl", _mixed())
    got = batchd.submit(src, **env)
    assert got.returncode == 1, got.stderr
    assert_one_red_line(got.stderr, named, "not a usable endpoint URL")
    assert_nothing_bought(emulator, claude)


def test_missing_openai_key_buys_nothing_at_claude(
    batchd: Batchd, emulator: OpenAIBatchEmulator, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "mixed.jsonl", _mixed())
    got = batchd.submit(src, OPENAI_API_KEY="")
    assert got.returncode == 1
    assert_one_red_line(got.stderr, "OPENAI_API_KEY is not set")
    assert_nothing_bought(emulator, claude)


def test_output_that_is_a_file_is_refused_before_the_run_starts(
    batchd: Batchd, emulator: OpenAIBatchEmulator, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "mixed.jsonl", _mixed())
    taken = tmp_path / "results.txt"
    taken.write_text("not a directory")
    for output in (taken, taken / "below"):
        got = batchd.run("submit", str(src), "--output", str(output))
        assert got.returncode == 1
        assert_one_red_line(got.stderr, "output", str(taken), "--output")
    assert taken.read_text() == "not a directory"
    assert_nothing_bought(emulator, claude)
    assert not batchd.home.exists()  # refused before the home was opened: nothing on disk


@pytest.mark.skipif(not namespaces_work(), reason="needs unshare -rm (user + mount namespaces)")
def test_read_only_output_is_refused_before_anything_is_bought(
    batchd: Batchd, emulator: OpenAIBatchEmulator, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "mixed.jsonl", _mixed())
    ro = tmp_path / "ro"
    argv = with_mount(
        batchd.argv("submit", str(src), "--output", str(ro / "out")), ro, read_only=True
    )
    got = subprocess.run(
        argv, env=batchd.env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert got.returncode == 1, got.stderr
    assert_one_red_line(got.stderr, "Cannot write the output", "Read-only file system")
    assert_nothing_bought(emulator, claude)


def test_unwritable_workdir_is_refused_before_the_run_starts(
    batchd: Batchd, emulator: OpenAIBatchEmulator, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "mixed.jsonl", _mixed())
    blocker = tmp_path / "workfile"
    blocker.write_text("x")
    got = batchd.submit(src, BATCHD_WORKDIR=str(blocker / "work"))
    assert got.returncode == 1
    assert_one_red_line(got.stderr, "the workdir", "BATCHD_WORKDIR")
    assert_nothing_bought(emulator, claude)


@pytest.fixture
def s3_env(s3_server: S3Server) -> dict[str, str]:
    return {**CREDENTIALS, "BATCHD_S3_ENDPOINT_URL": s3_server.url}


def test_s3_output_is_probed_with_an_object_written_and_deleted(
    batchd: Batchd,
    emulator: OpenAIBatchEmulator,
    claude: AnthropicBatchEmulator,
    tmp_path: Path,
    s3_server: S3Server,
    s3_env: dict[str, str],
) -> None:
    src = write_jsonl(tmp_path / "mixed.jsonl", _mixed())
    missing = batchd.run("submit", str(src), "--output", "s3://no-such-bucket-xyz/out", **s3_env)
    assert missing.returncode == 1
    assert_one_red_line(missing.stderr, "Cannot write the output s3://no-such-bucket-xyz/out")
    assert_nothing_bought(emulator, claude)
    bucket = s3_server.client()
    name = f"out-{tmp_path.name[-12:].lower().replace('_', '-')}"
    bucket.create_bucket(Bucket=name)
    ok = batchd.run("submit", str(src), "--output", f"s3://{name}/results", **s3_env)
    assert ok.returncode == 0, ok.stderr
    keys = [o["Key"] for o in bucket.list_objects_v2(Bucket=name).get("Contents", [])]
    assert any(k.endswith("/results.parquet") for k in keys), keys
    assert not [k for k in keys if ".batchd-probe-" in k], keys  # the probe was deleted


# -- distributed mode: the coordinators' preflight, the CLI's red line ---------------------


@pytest.fixture
def stack(tmp_path: Path, emulator: OpenAIBatchEmulator) -> Iterator[Stack]:
    s = Stack(tmp_path, emulator)
    yield s
    s.stop()


def test_coordinator_without_anthropic_key_buys_nothing(
    stack: Stack, emulator: OpenAIBatchEmulator, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    stack.env["ANTHROPIC_BASE_URL"] = claude.base_url
    stack.start_coordinator(ANTHROPIC_API_KEY="")
    src = write_jsonl(tmp_path / "mixed.jsonl", _mixed())
    got = stack.cli("submit", str(src), "--output", str(stack.out), "-q")
    assert got.returncode == 1, got.stderr
    assert_one_red_line(got.stderr, "cannot go on", "ANTHROPIC_API_KEY is not set", "batchd cancel")
    assert_nothing_bought(emulator, claude)
    run_id = next(
        line.split()[-1].rstrip(".") for line in got.stderr.splitlines() if "Started run" in line
    )
    status = stack.cli("status", run_id)
    assert "dispatching" in status.stdout
    canceled = stack.cli("cancel", run_id)
    assert canceled.returncode == 4, canceled.stderr
    assert_nothing_bought(emulator, claude)


@pytest.mark.parametrize("command", ["submit", "status", "plan"])
def test_redis_that_does_not_answer_is_one_red_line(
    batchd: Batchd,
    emulator: OpenAIBatchEmulator,
    claude: AnthropicBatchEmulator,
    tmp_path: Path,
    command: str,
) -> None:
    from tests.support.redis_server import free_port

    src = write_jsonl(tmp_path / "mixed.jsonl", _mixed())
    args = {"submit": (str(src),), "status": (), "plan": (str(src),)}[command]
    url = f"redis://:hunter2-SECRET@127.0.0.1:{free_port()}/0"
    got = batchd.run(command, *args, BATCHD_REDIS_URL=url, BATCHD_WORKDIR=str(tmp_path / "w"))
    assert got.returncode == 1
    line = assert_one_red_line(got.stderr, "does not answer", "BATCHD_REDIS_URL")
    assert "hunter2-SECRET" not in got.stderr and "***" in line
    assert_nothing_bought(emulator, claude)
