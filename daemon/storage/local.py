"""The local backend: packages in one directory tree (the default).

The names under the storage root (`<aa>/<job_id>/…` packages, `.tmp/`
packages being written, `.work/` work directories) are in `layout`.

Temporary files and work directories live inside the root so a package can
be published with an atomic `os.replace` (same file system), and so the
orphan sweep finds anything a crash left behind. Every path handed in from a
row goes through `resolve()`, which refuses anything that would leave the
root (absolute paths, `..`, symlinks).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from daemon.storage import layout, local_walk
from daemon.storage.backend import Attempt, Orphan, UnsafeLocation
from daemon.storage.layout import TMP_DIR, WORK_DIR
from daemon.storage.local_checkpoints import LocalCheckpoints

READ_CHUNK = 1024 * 1024


class UnsafePath(UnsafeLocation):
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


class WorkArea:
    """Work directories of running steps: `<base>/.work/<attempt>-<token>/`,
    private (0700), on this host's disk whatever the backend."""

    def __init__(self, base: Path) -> None:
        self.base = base.resolve()

    @property
    def work_root(self) -> Path:
        return self.base / WORK_DIR

    def ensure(self) -> None:
        make_dirs(self.work_root)

    def make_work_dir(self, attempt: Attempt) -> Path:
        path = self.base / layout.work_dir_path(attempt.label, secrets.token_hex(4))
        make_dirs(path.parent)
        path.mkdir(mode=layout.WORK_DIR_MODE)
        os.chmod(path, layout.WORK_DIR_MODE)
        return path

    def remove_tree(self, path: Path) -> None:
        """Remove a work directory (never follows symlinks out of it)."""
        shutil.rmtree(path, ignore_errors=True)

    def old_entries(self, grace_seconds: float, now: datetime | None) -> list[Orphan]:
        return local_walk.work_entries(self.work_root, grace_seconds, now)

    def remove_orphans(self, orphans: Iterable[Orphan]) -> tuple[int, int, int]:
        return local_walk.remove_orphans(self.base, orphans)


class LocalStorage:
    """Creates work directories and temp files, publishes and deletes packages."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.work = WorkArea(self.root)
        self._checkpoints = LocalCheckpoints(self.root)

    def ensure(self) -> None:
        for sub in ("", TMP_DIR, WORK_DIR):
            make_dirs(self.root / sub)

    @property
    def work_root(self) -> Path:
        return self.work.work_root

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
        return self.work.make_work_dir(attempt)

    def remove_tree(self, path: Path) -> None:
        self.work.remove_tree(path)

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

    def open_writer(self, attempt: Attempt) -> LocalPackageWriter:
        return LocalPackageWriter(self, attempt)

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

    def size(self, relative: str) -> int | None:
        try:
            info = os.lstat(self.resolve(relative))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return info.st_size if stat.S_ISREG(info.st_mode) else None

    def read(self, relative: str) -> Iterator[bytes]:
        fd = os.open(self.resolve(relative), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as source:
            while chunk := source.read(READ_CHUNK):
                yield chunk

    # -- checkpoints of runs (resume) ------------------------------------------------

    @property
    def checkpoints(self) -> LocalCheckpoints:
        return self._checkpoints

    # -- the orphan sweep ----------------------------------------------------------

    def old_entries(self, grace_seconds: float, now: datetime | None) -> list[Orphan]:
        return local_walk.old_entries(self.root, grace_seconds, now)

    def remove_orphans(self, orphans: Iterable[Orphan]) -> tuple[int, int, int]:
        return local_walk.remove_orphans(self.root, orphans)


class LocalPackageWriter:
    """A package written to a temp file under `.tmp/` and moved into place
    with one `os.replace` (same file system: atomic) once it is complete."""

    def __init__(self, storage: LocalStorage, attempt: Attempt) -> None:
        self.storage = storage
        self.temp = storage.temp_package_path(attempt)
        self._relative = storage.final_path(attempt)
        self._file: IO[bytes] | None = self.temp.open("xb")

    @property
    def relative(self) -> str:
        return self._relative

    def write(self, data: Any, /) -> int:
        if self._file is None:
            raise ValueError("the package writer is closed")
        return self._file.write(data)

    def publish(self) -> None:
        """fsync, then rename into place: a crash never leaves a torn package
        under a name a row may point to."""
        if self._file is None:
            raise ValueError("the package writer is closed")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        self.storage.publish(self.temp, self._relative)

    def discard(self) -> None:
        """Close and remove the temp file. Never raises: on a full disk the
        close flushes what is buffered and fails again (the file is closed
        all the same), and the temp file must go whatever it said."""
        file, self._file = self._file, None
        try:
            if file is not None:
                with contextlib.suppress(OSError):
                    file.close()
        finally:
            with contextlib.suppress(OSError):
                self.temp.unlink(missing_ok=True)
