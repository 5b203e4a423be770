"""Any exception that reaches the command line, as one red line: what went wrong and what to
do. BatchdError says it itself; the rest (a full disk, a read-only home, Redis gone, S3
refusing) are named here. The traceback is shown only under BATCHD_DEBUG=1."""

from __future__ import annotations

import errno
import os
import sqlite3

from batchd.errors import BatchdError

DEBUG_OFF = ("", "0", "false", "no", "off")

_OS_HINTS = {
    errno.ENOSPC: "The disk is full: free space there, or point BATCHD_HOME / --output / "
    "BATCHD_WORKDIR at another disk, then run the same command again.",
    errno.EDQUOT: "The disk quota is used up: free space, or use another place.",
    errno.EROFS: "That file system is read-only: point BATCHD_HOME / --output / BATCHD_WORKDIR "
    "at a writable place.",
    errno.EACCES: "Permission denied: fix the permissions, or use another place.",
    errno.EPERM: "Permission denied: fix the permissions, or use another place.",
    errno.EISDIR: "A directory was given where a file is needed: give the file.",
    errno.ENOTDIR: "A path runs through a file where a directory is needed: fix the path.",
    errno.ENOENT: "Check the path.",
}


def debug_on() -> bool:
    return os.environ.get("BATCHD_DEBUG", "").strip().lower() not in DEBUG_OFF


def explain(exc: BaseException) -> BatchdError:
    """One actionable line for any exception."""
    if isinstance(exc, BatchdError):
        return exc
    if isinstance(exc, OSError) and exc.errno in _OS_HINTS:
        where = f" {exc.filename}" if exc.filename else ""
        return BatchdError(f"Cannot use{where}: {exc.strerror}.", _OS_HINTS[exc.errno])
    if isinstance(exc, sqlite3.Error):
        return BatchdError(
            f"The state or cache database under BATCHD_HOME failed: {exc}.",
            "Check that BATCHD_HOME is writable and its disk has free space.",
        )
    kind = type(exc)
    if kind.__module__.startswith("redis"):
        return BatchdError(
            f"Redis (BATCHD_REDIS_URL) failed: {exc}.",
            "Check that Redis runs and answers at that URL, then run the command again.",
        )
    if kind.__module__.startswith(("botocore", "boto3")):
        return BatchdError(
            f"S3 failed: {exc}.",
            "Check the bucket, the credentials and their permissions ([s3] settings).",
        )
    return BatchdError(
        f"Unexpected {kind.__name__}: {exc}.",
        "Run it again with BATCHD_DEBUG=1 for the traceback, and report it.",
    )
