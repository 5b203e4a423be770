"""Bulk data (chunk files, result parts, run outputs) under one root: a local directory
(LocalBlobs) or an s3:// prefix (S3Blobs).

Files appear atomically: written under a temporary name then renamed (local), or
uploaded whole — multipart above the part size — once complete (S3). Local files are
private (0600, directories 0700) unless a mode is given (storage.private).
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

from batchd.storage.private import FILE_MODE, create, dir_mode_for, make_dirs
from batchd.storage.s3 import S3, is_s3, join, split


class Blobs(Protocol):
    def uri(self, rel: str) -> str: ...
    def exists(self, rel: str) -> bool: ...
    def writer(self, rel: str) -> Any: ...  # context manager yielding a BinaryIO
    def open_write(self, rel: str) -> BinaryIO: ...
    def read_bytes(self, rel: str) -> bytes: ...
    def open(self, rel: str) -> BinaryIO: ...
    def local(self, rel: str) -> Any: ...  # context manager yielding a local Path
    def list(self, prefix: str) -> list[str]: ...
    def remove(self, rel: str) -> None: ...
    def remove_tree(self, prefix: str) -> None: ...


class LocalBlobs:
    """Files under a local directory, created with `file_mode` (0600 unless set) in
    directories that only readers of such files may enter (0700 for 0600)."""

    def __init__(self, root: str | Path, file_mode: int = FILE_MODE) -> None:
        self.root = Path(root)
        self.file_mode = file_mode
        self.dir_mode = dir_mode_for(file_mode)

    def path(self, rel: str) -> Path:
        return self.root / rel

    def uri(self, rel: str) -> str:
        return str(self.path(rel).resolve())

    def exists(self, rel: str) -> bool:
        return self.path(rel).exists()

    @contextmanager
    def writer(self, rel: str) -> Iterator[BinaryIO]:
        """Write `rel` atomically: nothing is visible under its name until the block ends."""
        final = self.path(rel)
        make_dirs(final.parent, self.dir_mode)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        try:
            with create(tmp, self.file_mode) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def open_write(self, rel: str) -> BinaryIO:
        """A plain writable file (no atomic rename): for files a later step cleans up."""
        path = self.path(rel)
        make_dirs(path.parent, self.dir_mode)
        return create(path, self.file_mode)

    def read_bytes(self, rel: str) -> bytes:
        return self.path(rel).read_bytes()

    def open(self, rel: str) -> BinaryIO:
        return open(self.path(rel), "rb")

    @contextmanager
    def local(self, rel: str) -> Iterator[Path]:
        yield self.path(rel)

    def list(self, prefix: str) -> list[str]:
        base = self.path(prefix)
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root)) for p in base.iterdir() if not p.name.startswith(".")
        )

    def remove(self, rel: str) -> None:
        self.path(rel).unlink(missing_ok=True)

    def remove_tree(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix), ignore_errors=True)


class _UploadOnClose(io.FileIO):
    """A local temp file that is uploaded, then deleted, when closed."""

    def __init__(self, path: Path, upload: Callable[[Path], None]) -> None:
        super().__init__(path, "wb")
        self._tmp = path
        self._upload = upload

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        try:
            self._upload(self._tmp)
        finally:
            self._tmp.unlink(missing_ok=True)


class S3Blobs:
    """The same interface on an s3:// prefix; writes go through a local temp file (bounded
    memory) and are uploaded in parts once complete, so readers never see half an object."""

    def __init__(self, s3: S3, root: str, tmp_dir: Path) -> None:
        self.s3 = s3
        self.root = root.rstrip("/")
        self.tmp_dir = tmp_dir

    def uri(self, rel: str) -> str:
        return join(self.root, rel)

    def exists(self, rel: str) -> bool:
        return self.s3.head(self.uri(rel)) is not None

    def _tmp(self, rel: str = "") -> Path:
        """A temp file that ends with the blob's own name (uploads to vendors keep it)."""
        make_dirs(self.tmp_dir)
        suffix = "-" + Path(rel).name if rel else ".part"
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix=".s3-", suffix=suffix)
        os.close(fd)
        return Path(name)

    @contextmanager
    def writer(self, rel: str) -> Iterator[BinaryIO]:
        tmp = self._tmp()
        try:
            with open(tmp, "wb") as f:
                yield f
            self.s3.upload_file(tmp, self.uri(rel))
        finally:
            tmp.unlink(missing_ok=True)

    def open_write(self, rel: str) -> BinaryIO:
        uri = self.uri(rel)
        raw = _UploadOnClose(self._tmp(), lambda p: self.s3.upload_file(p, uri))
        return cast(BinaryIO, io.BufferedWriter(raw, 1 << 20))

    def read_bytes(self, rel: str) -> bytes:
        with self.open(rel) as f:
            return f.read()

    def open(self, rel: str) -> BinaryIO:
        return self.s3.open(self.uri(rel))

    @contextmanager
    def local(self, rel: str) -> Iterator[Path]:
        """Download to a temp file for readers that need to seek (Parquet, vendor uploads)."""
        tmp = self._tmp(rel)
        try:
            self.s3.download_file(self.uri(rel), tmp)
            yield tmp
        finally:
            tmp.unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        base = self.uri(prefix).rstrip("/") + "/"
        root_key = split(self.root)[1]
        skip = len(root_key) + 1 if root_key else 0
        return sorted(o["Key"][skip:] for o in self.s3.list(base, delimiter="/"))

    def remove(self, rel: str) -> None:
        self.s3.delete(self.uri(rel))

    def remove_tree(self, prefix: str) -> None:
        self.s3.delete_prefix(self.uri(prefix).rstrip("/") + "/")


def blobs_at(
    root: str, s3: Callable[[], S3], tmp_dir: Path, file_mode: int = FILE_MODE
) -> LocalBlobs | S3Blobs:
    """Blobs under a local directory (files created `file_mode`) or an s3:// prefix."""
    return S3Blobs(s3(), root, tmp_dir) if is_s3(root) else LocalBlobs(root, file_mode)
