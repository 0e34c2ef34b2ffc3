"""A real small file system for disk-full tests: a tmpfs of a few MiB.

CI runs as root, where `mount -t tmpfs` works; elsewhere the tests that need
one are skipped with the reason (never faked: ENOSPC must come from the
kernel, through every layer that writes).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

MiB = 1024 * 1024


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=30)


@contextmanager
def mounted_tmpfs(path: Path, size_mib: int) -> Iterator[Path]:
    """A tmpfs of `size_mib` MiB mounted on `path` for the block; skips the
    test when this process cannot mount one."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    path.mkdir(parents=True, exist_ok=True)
    done = _run("mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0750", "tmpfs", str(path))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield path
    finally:
        # Lazy: a worker thread still closing a file must not leave it mounted.
        _run("umount", "-l", str(path))


def resize(path: Path, size_mib: int) -> None:
    """Grow (or shrink) the mounted tmpfs: space comes back, as an operator frees it."""
    done = _run("mount", "-o", f"remount,size={size_mib}m", str(path))
    assert done.returncode == 0, done.stderr


def files_under(root: Path) -> list[Path]:
    """Every non-directory entry below `root` (partial files left behind)."""
    return [p for p in root.rglob("*") if not p.is_dir()]


def free_bytes(path: Path) -> int:
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize
