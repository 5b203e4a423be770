"""Image parts for a vLLM model that takes images (`images = true` in its settings).

A chat message's `image_url` parts with a `data:image/...;base64,` URL are decoded here, on
the worker, into PIL images that go to the engine as the prompt's `multi_modal_data`; the
model's chat template renders each part (as `{"type": "image"}`, the Hugging Face chat
template convention) into the model's image placeholder, which vLLM's processor expands into
the image's tokens (so a row's prompt tokens count them).

Web (http/https) URLs are refused on vLLM, never fetched: the GPU worker may have no
internet, and a fetch on the worker would make a row depend on a third-party host at run
time. The capability table says so (vLLM takes images as data: URLs only), so intake makes
such a line `invalid` naming a target that fetches URLs, and an alias places it elsewhere.

Every bad image (not a data URL, bad base64, not an image, too large, too many pixels) is a
`Refused` with the reason: one `invalid` line or one failed row, never a failed chunk.

A chunk's prompts are built before its lines run, so each image is decoded once to check it
and then held compressed (a lazily opened PIL image over its bytes; only non-RGB images are
held converted), not as pixels, until the engine takes it.
"""

from __future__ import annotations

import binascii
import io
import warnings
from typing import Any

from batchd.backends.vllm.refusal import Refused

IMAGE_KINDS = ("image_url", "input_image", "image")
MAX_IMAGE_BYTES = 20 * 2**20  # decoded bytes per image (OpenAI's own per-image limit)
MAX_IMAGE_PIXELS = 40_000_000  # width x height per image, checked before decoding pixels
MAX_IMAGES = 16  # images per request
MIN_IMAGE_SIDE = 2  # pixels: vision processors cannot resize a 1-pixel side
INVALID_IMAGE = "invalid_image"
URL_TARGETS = "a model that fetches image URLs, e.g. gpt-5.4-mini (OpenAI) or claude-sonnet-4-6"


def image_url_of(part: dict[str, Any], where: str) -> str:
    """The data URL of one image part, or Refused saying why vLLM cannot take it.

    Needs no decoding: run at encode time (the line is then `invalid`) and on the worker.
    """
    if part.get("type") != "image_url":
        raise Refused(
            "unsupported_parameter",
            f"{where}: a {part.get('type')!r} part is not a chat image part: give "
            '{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}',
        )
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise Refused("invalid_request", f"{where}: image_url needs a url (a data: URL)")
    if url.startswith(("http://", "https://")):
        raise Refused(
            "unsupported_parameter",
            f"{where}: vLLM takes images as data: URLs only (the GPU worker fetches nothing "
            f"from the web): inline the image as a data: URL, or send the line to {URL_TARGETS}",
        )
    if not url.startswith("data:"):
        raise Refused(INVALID_IMAGE, f"{where}: the image url is neither a data: URL nor a web URL")
    header, sep, _ = url.partition(",")
    if not sep or not header.endswith(";base64") or not header[5:].startswith("image/"):
        raise Refused(
            INVALID_IMAGE, f"{where}: the data URL must read data:image/<type>;base64,<data>"
        )
    if len(url) - len(header) - 1 > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise Refused(INVALID_IMAGE, f"{where}: the image is over {MAX_IMAGE_BYTES} bytes")
    return url


def decode_image(url: str, where: str) -> Any:
    """A checked data URL (`image_url_of`) -> an RGB PIL image, or Refused saying why not."""
    from PIL import Image

    data_text = url.partition(",")[2]
    try:
        data = binascii.a2b_base64(data_text.encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise Refused(INVALID_IMAGE, f"{where}: the image data is not valid base64") from exc
    if len(data) > MAX_IMAGE_BYTES:
        raise Refused(INVALID_IMAGE, f"{where}: the image is over {MAX_IMAGE_BYTES} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise Refused(
                    INVALID_IMAGE,
                    f"{where}: the image has {width}x{height} pixels, over {MAX_IMAGE_PIXELS}",
                )
            img.load()
            rgb = img.convert("RGB")
    except Refused:
        raise
    except Exception as exc:  # PIL raises many kinds on hostile bytes
        raise Refused(
            INVALID_IMAGE, f"{where}: the data is not an image PIL can read ({type(exc).__name__})"
        ) from exc
    if min(rgb.size) < MIN_IMAGE_SIDE:
        raise Refused(INVALID_IMAGE, f"{where}: the image is {width}x{height} pixels, too small")
    if img.mode == "RGB":  # checked: hand over a lazy copy, held compressed until it runs
        return Image.open(io.BytesIO(data))
    return rgb


def check_image_parts(messages: list[Any]) -> int:
    """How many image parts the messages hold, each one checked (`image_url_of`)."""
    count = 0
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, dict) else None
        for j, part in enumerate(content if isinstance(content, list) else ()):
            if isinstance(part, dict) and part.get("type") in IMAGE_KINDS:
                image_url_of(part, f"messages[{i}].content[{j}]")
                count += 1
    if count > MAX_IMAGES:
        raise Refused(
            "unsupported_parameter", f"the request holds {count} images, over {MAX_IMAGES}"
        )
    return count


def template_parts(content: list[Any], i: int, images: list[Any]) -> list[dict[str, Any]]:
    """A message's parts as a chat template takes them; decoded images appended to `images`."""
    out: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if part.get("type") in IMAGE_KINDS:
            where = f"messages[{i}].content[{j}]"
            images.append(decode_image(image_url_of(part, where), where))
            out.append({"type": "image"})
        else:
            out.append({"type": "text", "text": part.get("text", "")})
    return out


def multimodal_prompt(text: str, images: list[Any]) -> dict[str, Any]:
    """What the engine takes: the rendered prompt and its images, in order."""
    return {
        "prompt": text,
        "multi_modal_data": {"image": images[0] if len(images) == 1 else images},
    }
