"""Image parts on a vLLM model that takes images (`images = true`), without the engine: the
capability table, the settings, and hostile image parts that each end as a named refusal."""

from __future__ import annotations

import base64
import io
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchd.backends import capabilities as caps
from batchd.backends.vllm import images as vimages
from batchd.backends.vllm.prompts import Refused, plan_of, prompts_of
from batchd.config.settings import VllmSettings, load_settings
from batchd.config.vllm_settings import vllm_problems
from tests.support.tiny_vlm import CHAT_TEMPLATE

pytestmark = pytest.mark.timeout(300)


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new(mode, (width, height)).save(out, format="PNG")
    return out.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def image_line(url: Any, text: str = "what is this") -> dict[str, Any]:
    part = {"type": "image_url", "image_url": {"url": url}}
    return {"messages": [{"role": "user", "content": [part, {"type": "text", "text": text}]}]}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny Llama tokenizer with the test VLM's template (renders image parts)."""
    from tests.support.tiny_model import build_tiny_llama

    path = build_tiny_llama(tmp_path_factory.mktemp("tok"), layers=1)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _prompt(body: dict[str, Any], tokenizer: Any, images: bool = True) -> Any:
    plan = plan_of("chat", body, "generate", "", "vlm", images)
    return prompts_of(plan, body, tokenizer)[0]


def test_an_image_line_becomes_a_prompt_with_its_images(tokenizer: Any) -> None:
    body = image_line(data_url(png(40, 30)))
    body["messages"][0]["content"].append({"type": "image_url", "image_url": data_url(png(8, 8))})
    prompt = _prompt(body, tokenizer)
    assert prompt["prompt"].count("<image>") == 2 and "what is this" in prompt["prompt"]
    got = prompt["multi_modal_data"]["image"]
    assert [im.size for im in got] == [(40, 30), (8, 8)] and {im.mode for im in got} == {"RGB"}


def test_text_only_models_and_web_urls_are_refused_with_a_reason(tokenizer: Any) -> None:
    with pytest.raises(Refused, match=r"takes text only.*images = true"):
        _prompt(image_line(data_url(png(4, 4))), tokenizer, images=False)
    with pytest.raises(Refused, match="data: URLs only") as web:
        _prompt(image_line("https://example.com/cat.png"), tokenizer)
    assert web.value.error_type == "unsupported_parameter"


def test_a_template_that_drops_images_is_refused(tokenizer: Any) -> None:
    plain = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    plain.chat_template = (  # renders text parts, skips the rest
        "{% for m in messages %}{% if m['content'] is string %}{{ m['content'] }}{% else %}"
        "{{ m['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') "
        "| join('') }}{% endif %}{% endfor %}"
    )
    with pytest.raises(Refused, match="does not render image parts"):
        _prompt(image_line(data_url(png(4, 4))), plain)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("data:image/png;base64,@@@notbase64", "not valid base64"),
        (data_url(b"plain text, no image"), "not an image"),
        (data_url(png(40, 30)[:60]), "not an image"),  # truncated
        (data_url(png(1, 1)), "too small"),
        (data_url(png(8000, 6000, "1")), "pixels, over"),  # a decompression bomb
        (data_url(png(4, 4), "text/plain"), "data:image/<type>;base64"),
        ("ftp://example.com/x.png", "neither a data: URL"),
    ],
)
def test_each_bad_image_is_refused_naming_why(tokenizer: Any, url: str, reason: str) -> None:
    with pytest.raises(Refused, match=reason) as bad:
        _prompt(image_line(url), tokenizer)
    assert bad.value.error_type == "invalid_image"


def test_an_image_over_the_byte_cap_is_refused_before_decoding(
    tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vimages, "MAX_IMAGE_BYTES", 1000)
    with pytest.raises(Refused, match="over 1000 bytes"):
        plan_of("chat", image_line(data_url(b"x" * 2000)), "generate", "", "vlm", True)


_SEED_URLS = [
    data_url(png(6, 5)),
    data_url(png(1, 1)),
    data_url(b"GIF89a"),
    data_url(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40),
    "data:image/png;base64,",
    "data:image/png,abc",
    "https://example.com/a.png",
    "",
]
_urls = st.one_of(
    st.sampled_from(_SEED_URLS),
    st.binary(max_size=200).map(data_url),
    st.text(max_size=60).map(lambda t: "data:image/jpeg;base64," + t),
    st.text(max_size=40),
)
_parts = st.one_of(
    _urls.map(lambda u: {"type": "image_url", "image_url": {"url": u}}),
    _urls.map(lambda u: {"type": "image_url", "image_url": u}),
    st.sampled_from(["image", "input_image", "image_url"]).map(lambda k: {"type": k}),
    st.just({"type": "image_url", "image_url": {"url": 7}}),
    st.text(max_size=20).map(lambda t: {"type": "text", "text": t}),
    st.just({"type": "text", "text": 3}),
    st.just("a bare string"),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(_parts, min_size=1, max_size=5))
def test_hostile_image_parts_end_as_a_prompt_or_a_named_refusal(
    tokenizer: Any, parts: list[Any]
) -> None:
    body = {"messages": [{"role": "user", "content": parts}]}
    try:
        prompt = _prompt(body, tokenizer)
    except Refused as exc:
        assert exc.error_type and str(exc)
        return
    n_images = sum(1 for p in parts if p["type"] != "text")
    if n_images:
        got = prompt["multi_modal_data"]["image"]
        assert len(got if isinstance(got, list) else [got]) == n_images
        assert prompt["prompt"].count("<image>") == n_images
    else:
        assert isinstance(prompt, str)


def _settings(images: bool, kind: str = "generate") -> VllmSettings:
    return msgspec.convert(
        {
            "model": "/m/base",
            "gpu_memory_utilization": 0.4,
            "models": {
                "vlm": {
                    "model": "/m/vlm",
                    "images": images,
                    "kind": kind,
                    "gpu_memory_utilization": 0.4,
                },
            },
        },
        VllmSettings,
    )


def test_the_capability_table_takes_images_only_where_settings_say() -> None:
    s = load_settings(environ={})
    s = msgspec.structs.replace(
        s, backends=msgspec.structs.replace(s.backends, vllm=_settings(True))
    )
    vlm = caps.family_of("vllm", "vlm", s)
    base = caps.family_of("vllm", "base", s)
    assert vlm.can(caps.IMAGES) and not vlm.can(caps.IMAGE_URLS)
    assert not base.can(caps.IMAGES)
    assert caps.missing(frozenset({caps.CHAT, caps.IMAGES, caps.IMAGE_URLS}), vlm) == [
        caps.IMAGE_URLS
    ]
    assert caps.cannot("vllm:base", caps.missing(frozenset({caps.IMAGES}), base)) == (
        "vllm:base cannot read images"
    )
    assert "data: URLs only" in caps.markdown_table()
    assert not vllm_problems(_settings(True))
    assert any("takes no images" in p for p in vllm_problems(_settings(True, "embed")))
