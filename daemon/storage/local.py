"""Package storage: the one directory tree packages live in.

The names under the storage root (`<aa>/<job_id>/…` packages, `.tmp/`
packages being written, `.work/` work directories) are in `layout`.

Temporary files and work directories live inside the root so a package can
be published with an atomic `os.replace` (same file system), and so the
orphan sweep finds anything a crash left behind. Every path handed in from a
row goes through `resolve()`, which refuses anything that would leave the
root (absolute paths, `..`, symlinks).
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from uuid import UUID

from daemon.errors import ExportdError
from daemon.storage import layout

# Re-exported: callers imported these from here before `layout` existed.
from daemon.storage.layout import TMP_DIR as TMP_DIR
from daemon.storage.layout import WORK_DIR as WORK_DIR


class UnsafePath(ExportdError):
    """A stored path would leave the storage root."""


def make_dirs(path: Path, mode: int = layout.DIR_MODE) -> None:
    """`mkdir -p path`, every directory it creates getting exactly `mode`.

    `os.mkdir`'s mode is masked by the process umask, and `Path.mkdir(parents=
    True)` gives the parents it creates the default mode: under umask 022 a
    shard directory came out 0755, not the documented 0750. So each directory
    created here is chmod-ed to `mode` right after; directories that already
    existed (an operator's storage root) are left as they are.
    """
    missing: list[Path] = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=mode)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue  # created meanwhile by another attempt: theirs to set
        os.chmod(directory, mode)


@dataclass(frozen=True)
class Attempt:
    """Identifies one attempt of one run of a job (names its files)."""

    job_id: UUID
    run: int
    attempt: int

    @property
    def label(self) -> str:
        return layout.attempt_label(self.job_id, self.run, self.attempt)


class PackageStorage:
    """Creates work directories and temp files, publishes and deletes packages."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def ensure(self) -> None:
        for sub in ("", TMP_DIR, WORK_DIR):
            make_dirs(self.root / sub)

    # -- paths ---------------------------------------------------------------

    def resolve(self, relative: str) -> Path:
        """Absolute path of a stored package path, confined to the root.

        Refuses absolute paths, `..`, empty parts and any symlink on the way.
        """
        pure = PurePosixPath(relative)
        if not relative or pure.is_absolute() or any(p in ("", ".", "..") for p in pure.parts):
            raise UnsafePath(f"refusing package path {relative!r}")
        current = self.root
        for part in pure.parts:
            current = current / part
            try:
                mode = os.lstat(current).st_mode
            except (FileNotFoundError, NotADirectoryError):
                continue  # not there (yet): nothing below it can be a symlink
            if stat.S_ISLNK(mode):
                raise UnsafePath(f"refusing package path {relative!r} (symlink)")
        return self.root.joinpath(*pure.parts)

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    # -- work directories ------------------------------------------------------

    def make_work_dir(self, attempt: Attempt) -> Path:
        path = self.root / layout.work_dir_path(attempt.label, secrets.token_hex(4))
        make_dirs(path.parent)
        path.mkdir(mode=layout.WORK_DIR_MODE)
        os.chmod(path, layout.WORK_DIR_MODE)
        return path

    def remove_tree(self, path: Path) -> None:
        """Remove a work directory (never follows symlinks out of it)."""
        shutil.rmtree(path, ignore_errors=True)

    # -- packages ------------------------------------------------------------

    def temp_package_path(self, attempt: Attempt) -> Path:
        make_dirs(self.root / TMP_DIR)
        return self.root / layout.temp_package_path(attempt.label, secrets.token_hex(4))

    def final_path(self, attempt: Attempt) -> str:
        """A fresh relative path for this attempt's package.

        Unique per attempt (and random), so two runs of the same job never
        write to the same name: whichever commits wins, the other's file is
        removed or swept, and no package is ever a mix of two runs.
        """
        return layout.package_path(
            attempt.job_id, attempt.run, attempt.attempt, secrets.token_hex(4)
        )

    def publish(self, temp: Path, relative: str) -> Path:
        """Atomically move a finished temp file to its final relative path."""
        target = self.resolve(relative)
        make_dirs(target.parent)
        os.replace(temp, target)
        return target

    def delete(self, relative: str) -> bool:
        """Delete a package; False when it was already gone."""
        target = self.resolve(relative)
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        for parent in (target.parent, target.parent.parent):
            if parent == self.root:
                break
            try:
                parent.rmdir()  # only when empty
            except OSError:
                break
        return True
