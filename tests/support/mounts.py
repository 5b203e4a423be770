"""Real failing disks for tests: a command run with a tiny tmpfs (a disk that fills up) or a
read-only mount at a path, in a private user + mount namespace (`unshare -rm`; no root on
the host needed). Where the kernel refuses namespaces the tests that need them skip."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path


@cache
def namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=8k tmpfs /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


def with_mount(
    argv: list[str], path: Path, *, size_kib: int = 0, read_only: bool = False
) -> list[str]:
    """`argv` run with a fresh tmpfs of `size_kib` at `path`, read-only if asked."""
    path.mkdir(parents=True, exist_ok=True)
    opts = [f"size={size_kib}k"] if size_kib else []
    if read_only:
        opts.append("ro")
    mount = f"mount -t tmpfs -o {','.join(opts) or 'defaults'} tmpfs {shlex.quote(str(path))}"
    return ["unshare", "-rm", "sh", "-c", f"{mount} && exec {shlex.join(argv)}"]
