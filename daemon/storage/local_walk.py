"""The orphan sweep's walk of a local directory tree: what is old, and removing it.

The walk does not follow symbolic links (a symlink found there is removed as
a link; its target is never touched). Work directories count as one entry
each, named by the job id their name starts with; everything else is listed
file by file.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from daemon.storage.backend import Orphan
from daemon.storage.layout import SCRATCH_DIRS, WORK_DIR

# The logger of every retention task.
log = logging.getLogger("daemon.maintenance.cleanup")


def old_entries(root: Path, grace_seconds: float, now: datetime | None) -> list[Orphan]:
    """Entries of `root` older than the grace period (lstat, no following)."""
    if not root.is_dir():
        return []
    cutoff = (now or datetime.now(UTC)).timestamp() - grace_seconds
    entries: list[Orphan] = []
    for top in scandir_or_empty(root):
        if top.name == WORK_DIR:
            # Work directories as a whole, by the job id their name starts with.
            entries.extend(
                _entry(Path(e.path), root, cutoff, is_dir=e.is_dir(follow_symlinks=False))
                for e in scandir_or_empty(Path(top.path))
            )
            continue
        if top.is_symlink() or not top.is_dir(follow_symlinks=False):
            entries.append(_entry(Path(top.path), root, cutoff, is_dir=False))
            continue
        for dirpath, dirnames, filenames in os.walk(top.path, followlinks=False):
            # os.walk lists symlinks to directories in dirnames; treat them as files.
            links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            dirnames[:] = [d for d in dirnames if d not in links]
            for name in filenames + links:
                entries.append(_entry(Path(dirpath, name), root, cutoff, is_dir=False))
    return [e for e in entries if e.size >= 0]


def work_entries(work_root: Path, grace_seconds: float, now: datetime | None) -> list[Orphan]:
    """Only the work directories under `work_root` (a `.work` directory), as
    `old_entries` names them: for a backend whose packages are elsewhere."""
    parent = work_root.parent
    cutoff = (now or datetime.now(UTC)).timestamp() - grace_seconds
    entries = [
        _entry(Path(e.path), parent, cutoff, is_dir=e.is_dir(follow_symlinks=False))
        for e in scandir_or_empty(work_root)
    ]
    return [e for e in entries if e.size >= 0]


def remove_orphans(root: Path, orphans: Iterable[Orphan]) -> tuple[int, int, int]:
    """Remove each entry (a file, a link or a work directory): (removed, bytes, failures)."""
    removed = freed = failures = 0
    for orphan in orphans:
        path: Path = orphan.handle
        if _remove(path, orphan):
            removed += 1
            freed += orphan.size
            if not orphan.is_dir:
                remove_empty_parents(path.parent, root)
        else:
            failures += 1
    return removed, freed, failures


def remove_empty_parents(directory: Path, root: Path) -> None:
    """Drop the `<aa>/<job_id>/` directories a deletion left empty (never
    the scratch directories, which every running job writes into)."""
    while directory != root and root in directory.parents:
        if directory.name in SCRATCH_DIRS:
            return
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


def _entry(path: Path, root: Path, cutoff: float, *, is_dir: bool) -> Orphan:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return Orphan("", -1, is_dir, path)
    if info.st_mtime > cutoff:
        return Orphan("", -1, is_dir, path)  # too young: marked to be dropped
    size = _tree_size(path) if is_dir else (info.st_size if stat.S_ISREG(info.st_mode) else 0)
    return Orphan(path.relative_to(root).as_posix(), size, is_dir, path)


def scandir_or_empty(path: Path) -> list[os.DirEntry[str]]:
    """The entries of a directory; none when it is gone or is not one (a
    concurrent removal is not an error to a walk or a listing)."""
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path, followlinks=False):
        for name in files:
            try:
                info = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def _remove(path: Path, orphan: Orphan) -> bool:
    try:
        if orphan.is_dir:
            shutil.rmtree(path)  # does not follow symlinks inside
        else:
            path.unlink()  # a symlink is removed as a link
    except FileNotFoundError:
        return True
    except OSError as exc:
        log.warning(
            "cannot remove an orphan in storage (%s)",
            exc.strerror,
            extra={"action": "cleanup.orphan", "path": orphan.relative},
        )
        return False
    return True
