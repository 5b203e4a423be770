"""Files and directories batchd creates are private by default, whatever the umask.

Prompts (chunk files, input copies), answers (cache, outcome parts, results) and run state
are created 0600 in directories created 0700. Results may be shared on purpose
(`results_file_mode`); their directories then get the matching search bits (0644 -> 0755).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

FILE_MODE = 0o600
DIR_MODE = 0o700


def parse_mode(text: str) -> int:
    """An octal permission string ("0600", "640") as a mode; ValueError when it is not one."""
    mode = int(text, 8)
    if not 0 <= mode <= 0o777:
        raise ValueError(f"{text!r} is not a permission mode (0000..0777)")
    return mode


def dir_mode_for(file_mode: int) -> int:
    """The directory mode for files of `file_mode`: who may read may also enter (x)."""
    return file_mode | ((file_mode & 0o444) >> 2) | 0o700


def make_dirs(path: Path, mode: int = DIR_MODE) -> None:
    """Create `path` and its missing parents with `mode` exactly; existing ones are left."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=mode)
        except FileExistsError:
            continue
        os.chmod(d, mode)  # mkdir's mode is cut by the umask


def create(path: Path, mode: int = FILE_MODE) -> BinaryIO:
    """Open `path` for writing (truncated), with exactly `mode`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)
    return os.fdopen(fd, "wb")


def ensure_private(path: Path, mode: int = FILE_MODE) -> None:
    """Make sure a file batchd owns (a SQLite database) exists with exactly `mode`.

    SQLite gives its -wal and -shm files the database file's mode.
    """
    make_dirs(path.parent)
    if path.exists():
        # never open and close an existing database file: closing any descriptor of it
        # drops every POSIX lock this process holds on it, under SQLite connections that
        # are still open (a watcher opens a store per run beside its own)
        os.chmod(path, mode)
    else:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:  # another process made it just now
            os.chmod(path, mode)
        else:
            os.fchmod(fd, mode)
            os.close(fd)
    for extra in ("-wal", "-shm", "-journal"):
        side = path.with_name(path.name + extra)
        if side.exists():
            os.chmod(side, mode)
