"""Images on the real vLLM engine: a tiny random Idefics3 (tests/support/tiny_vlm.py) served
with `images = true`. One engine start for the module; lines are encoded as ingest does and
run as one chunk on batchd's GpuRunner."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchd.backends.base import UnsupportedRequest
from batchd.backends.vllm.backend import VllmBackend
from batchd.backends.vllm.runner import GpuRunner, checkpointed
from batchd.requests import CHAT, RESPONSES, Request
from batchd.storage.blobs import LocalBlobs
from tests.support.helpers import vllm_settings
from tests.support.tiny_vlm import IMAGE_TOKENS

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def vlm_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpuRunner]:
    pytest.importorskip("vllm")
    from tests.support.tiny_vlm import build_tiny_idefics3

    path = build_tiny_idefics3(tmp_path_factory.mktemp("vlm") / "tiny-idefics3")
    runner = GpuRunner(vllm_settings(path, served_model_name="vlm", images=True))
    yield runner
    runner.close()


def png_url(width: int, height: int, color: tuple[int, int, int]) -> str:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def request(i: int, body: dict[str, Any], endpoint: str = CHAT) -> Request:
    return Request(
        line_no=i,
        custom_id=f"r{i}",
        fmt="native",
        model="vlm",
        tenant="default",
        tags={},
        cache_ok=True,
        deadline_at=None,
        body={"model": "vlm", "max_tokens": 8, **body},
        key=i.to_bytes(16, "big"),
        endpoint=endpoint,
    )


def chat(*images: str, text: str = "what is in the picture") -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": u}} for u in images]
    return {"messages": [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]}


def test_image_lines_run_and_bad_images_fail_alone(vlm_runner: GpuRunner, tmp_path: Path) -> None:
    backend = VllmBackend(vlm_runner.cfg, runner=vlm_runner)
    red, blue = png_url(40, 30, (200, 10, 10)), png_url(16, 64, (0, 0, 255))
    responses = {"input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": blue}, {"type": "input_text", "text": "and this"},
    ]}]}  # fmt: skip
    reqs = [
        request(0, chat(red)),
        request(1, chat()),  # the same text, no image
        request(2, chat(red, blue)),
        request(3, chat("data:image/png;base64,@@not-base64@@")),
        request(4, chat("data:image/png;base64," + base64.b64encode(b"no image").decode())),
        request(5, responses, RESPONSES),
    ]
    with pytest.raises(UnsupportedRequest, match="data: URLs only"):
        backend.encode_line("web", request(9, chat("https://example.com/cat.png")))
    blobs = LocalBlobs(tmp_path / "work")
    with blobs.writer("chunks/c.jsonl") as f:
        for r in reqs:
            f.write(backend.encode_line(r.custom_id, r) + b"\n")
    job = vlm_runner.start_chunk("c", "vlm", "chunks/c.jsonl", blobs)
    assert job.finished.wait(300)
    out = checkpointed(blobs, "c")
    assert sorted(out) == [f"r{i}" for i in range(6)]
    for cid in ("r0", "r1", "r2", "r5"):
        o = out[cid]
        assert o.status == "succeeded", (cid, o)
        assert isinstance(o.output_text, str) and o.output_tokens >= 1
    # each image's tokens are counted in the prompt: the image placeholder expands to
    # IMAGE_TOKENS image tokens (plus its wrapping tokens) per image
    one = out["r0"].input_tokens - out["r1"].input_tokens
    assert one > IMAGE_TOKENS
    assert out["r2"].input_tokens - out["r1"].input_tokens == 2 * one
    assert out["r5"].input_tokens > IMAGE_TOKENS
    assert out["r3"].status == "failed" and out["r3"].error_type == "invalid_image"
    assert "not valid base64" in (out["r3"].error_message or "")
    assert out["r4"].status == "failed" and "not an image" in (out["r4"].error_message or "")
