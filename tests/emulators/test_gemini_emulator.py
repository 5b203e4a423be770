"""The Gemini Batch emulator, driven through the google-genai SDK's own typed batches/files API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google import genai
from google.genai import errors

from tests.emulators.gemini_batch import GeminiBatchEmulator

MODEL = "gemini-2.5-flash"


def _client(emu: GeminiBatchEmulator, key: str = "k") -> genai.Client:
    return genai.Client(api_key=key, http_options={"base_url": emu.base_url})


def test_inline_batch_states_and_keyed_responses() -> None:
    with GeminiBatchEmulator(api_key="k", seed=3) as emu:
        c = _client(emu)
        src = [
            {
                "contents": [{"parts": [{"text": f"q{i}"}], "role": "user"}],
                "metadata": {"key": f"r{i}"},
            }
            for i in range(6)
        ]
        job = c.batches.create(model=MODEL, src=src, config={"display_name": "batchd-x"})
        assert job.display_name == "batchd-x" and job.state == "JOB_STATE_PENDING"
        assert c.batches.get(name=job.name).state == "JOB_STATE_RUNNING"
        done = c.batches.get(name=job.name)
        assert done.state == "JOB_STATE_SUCCEEDED"
        got = {r.metadata["key"]: r.response.text for r in done.dest.inlined_responses}
        assert got == {f"r{i}": f"echo: q{i}" for i in range(6)}
        keys = [r.metadata["key"] for r in done.dest.inlined_responses]
        assert keys != sorted(keys)  # shuffled: joined by key, never by position


def test_file_batch_upload_download_list_cancel(tmp_path: Path) -> None:
    with GeminiBatchEmulator(api_key="k") as emu:
        c = _client(emu)
        path = tmp_path / "in.jsonl"
        lines = [
            {"key": "a", "request": {"contents": [{"parts": [{"text": "fine"}]}]}},
            {"key": "b", "request": {"contents": [], "bogus": 1}},
        ]
        path.write_text("".join(json.dumps(x) + "\n" for x in lines))
        f = c.files.upload(file=str(path), config={"mime_type": "application/jsonl"})
        assert f.size_bytes == path.stat().st_size
        with pytest.raises(errors.ClientError):
            c.files.download(file=f.name)  # uploaded files cannot be downloaded
        job = c.batches.create(model=MODEL, src=f.name)
        c.batches.get(name=job.name)
        done = c.batches.get(name=job.name)
        out = [json.loads(x) for x in c.files.download(file=done.dest.file_name).splitlines()]
        by_key = {x["key"]: x for x in out}
        assert "response" in by_key["a"] and by_key["b"]["error"]["status"] == "INVALID_ARGUMENT"
        other = c.batches.create(model=MODEL, src=f.name)
        assert [j.name for j in c.batches.list(config={"page_size": 1})] == [other.name, job.name]
        c.batches.cancel(name=other.name)
        assert c.batches.get(name=other.name).state == "JOB_STATE_CANCELLED"


def test_bad_key_429_and_oversized_inline() -> None:
    with GeminiBatchEmulator(api_key="k") as emu:
        stranger = _client(emu, "nope")
        with pytest.raises(errors.ClientError) as bad:
            stranger.batches.list()
        assert bad.value.code == 401
        emu.faults.rate_limit_gets = 1
        c = _client(emu)
        job = c.batches.create(model=MODEL, src=[{"contents": [{"parts": [{"text": "x"}]}]}])
        with pytest.raises(errors.ClientError) as limited:
            c.batches.get(name=job.name)  # no retry_options: the SDK does not retry
        assert limited.value.code == 429
        emu.max_inline_bytes = 100
        with pytest.raises(errors.ClientError) as big:
            c.batches.create(model=MODEL, src=[{"contents": [{"parts": [{"text": "y" * 200}]}]}])
        assert big.value.code == 400
