"""Offline token counts for the vLLM model: its own tokenizer.json, loaded lazily.

Nothing is downloaded: without a tokenizer.json in the model directory the planner falls
back to its bytes-per-token estimate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class TokenCounter:
    def __init__(self, model_dir: str) -> None:
        self._path = Path(model_dir) / "tokenizer.json" if model_dir else None
        self._tok: Any = None
        self._loaded = False

    def _load(self) -> Any:
        if not self._loaded:
            self._loaded = True
            if self._path is not None and self._path.is_file():
                try:
                    from tokenizers import Tokenizer

                    self._tok = Tokenizer.from_file(str(self._path))
                except Exception:  # a broken tokenizer file: estimate by bytes instead
                    self._tok = None
        return self._tok

    def __getstate__(self) -> dict[str, Any]:  # worker processes load their own copy
        return {"_path": self._path, "_tok": None, "_loaded": False}

    def count(self, messages: list[Any]) -> int:
        """Prompt tokens of a chat (text parts only), or -1 when no tokenizer is available."""
        tok = self._load()
        if tok is None:
            return -1
        parts = []
        for m in messages:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
        # a few tokens per message for the chat template's role markers
        return len(tok.encode("\n".join(parts), add_special_tokens=False).ids) + 4 * len(messages)
