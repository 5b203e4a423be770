"""Bulk data (chunk files, result parts) under one root: a local directory.

Files appear atomically: written under a temporary name, then renamed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


class LocalBlobs:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, rel: str) -> Path:
        return self.root / rel

    def exists(self, rel: str) -> bool:
        return self.path(rel).exists()

    @contextmanager
    def writer(self, rel: str) -> Iterator[BinaryIO]:
        """Write `rel` atomically: nothing is visible under its name until the block ends."""
        final = self.path(rel)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)

    def read_bytes(self, rel: str) -> bytes:
        return self.path(rel).read_bytes()

    def open(self, rel: str) -> BinaryIO:
        return open(self.path(rel), "rb")

    def list(self, prefix: str) -> list[str]:
        base = self.path(prefix)
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root)) for p in base.iterdir() if not p.name.startswith(".")
        )

    def remove_tree(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix), ignore_errors=True)
