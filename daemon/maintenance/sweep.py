"""The orphan sweep: remove what no row references, past the grace period.

An orphan is a package whose job row is gone or never committed, a package
expiry could not unlink, or a temp file or work directory left by a crash.
The walk does not follow symbolic links (a symlink found there is removed as
a link; its target is never touched) and keeps anything of a job that may
still be running. The grace period covers a package being published: its
file exists a moment before the row that references it commits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.db import maintenance
from daemon.db.connect import Connection
from daemon.maintenance.expire import remove_empty_parents
from daemon.storage.layout import WORK_DIR, job_id_of
from daemon.storage.local import PackageStorage

if TYPE_CHECKING:
    # Only for annotations: cleanup.py imports this module to run it.
    from daemon.maintenance.cleanup import CleanupReport

# The logger of every retention task, as before they had modules of their own.
log = logging.getLogger("daemon.maintenance.cleanup")


@dataclass
class Orphan:
    """A file or work directory the sweep found; `size` < 0 marks one to skip."""

    path: Path
    relative: str
    size: int
    is_dir: bool


async def sweep_orphans(
    conn: Connection,
    storage: PackageStorage,
    report: CleanupReport,
    *,
    grace_seconds: float,
    batch_size: int,
    now: datetime | None,
) -> list[Orphan]:
    """Remove (dry run: only list) the orphans; returns them either way."""
    # The walk (an lstat per file: seconds for 100 K packages) and the
    # removals run in a thread, off the event loop that runs exports.
    found = await asyncio.to_thread(_old_entries, storage.root, grace_seconds, now)
    orphans = await _unreferenced(conn, found, batch_size)
    if report.dry_run:
        return orphans
    await asyncio.to_thread(_remove_orphans, storage.root, orphans, report)
    return orphans


def _remove_orphans(root: Path, orphans: list[Orphan], report: CleanupReport) -> None:
    for orphan in orphans:
        if _remove(orphan):
            report.orphans_removed += 1
            report.bytes_freed += orphan.size
            if not orphan.is_dir:
                remove_empty_parents(orphan.path.parent, root)
        else:
            report.failures += 1


def _old_entries(root: Path, grace_seconds: float, now: datetime | None) -> list[Orphan]:
    """Entries of the storage root older than the grace period (lstat, no following)."""
    if not root.is_dir():
        return []
    cutoff = (now or datetime.now(UTC)).timestamp() - grace_seconds
    entries: list[Orphan] = []
    for top in _scandir(root):
        if top.name == WORK_DIR:
            # Work directories as a whole, by the job id their name starts with.
            entries.extend(
                _entry(Path(e.path), root, cutoff, is_dir=e.is_dir(follow_symlinks=False))
                for e in _scandir(Path(top.path))
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


def _entry(path: Path, root: Path, cutoff: float, *, is_dir: bool) -> Orphan:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return Orphan(path, "", -1, is_dir)
    if info.st_mtime > cutoff:
        return Orphan(path, "", -1, is_dir)  # too young: marked to be dropped
    size = _tree_size(path) if is_dir else (info.st_size if stat.S_ISREG(info.st_mode) else 0)
    return Orphan(path, path.relative_to(root).as_posix(), size, is_dir)


async def _unreferenced(conn: Connection, entries: list[Orphan], batch_size: int) -> list[Orphan]:
    """The entries no row points at and no possibly running job owns."""
    referenced: set[str] = set()
    active: set[str] = set()
    for start in range(0, len(entries), batch_size):
        chunk = entries[start : start + batch_size]
        referenced |= await maintenance.referenced_paths(conn, [e.relative for e in chunk])
        job_ids = [j for j in (job_id_of(e.relative) for e in chunk) if j is not None]
        if job_ids:
            active |= await maintenance.active_jobs(conn, job_ids)
    return [
        e
        for e in entries
        if e.relative not in referenced and str(job_id_of(e.relative)) not in active
    ]


def _scandir(path: Path) -> list[os.DirEntry[str]]:
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


def _remove(orphan: Orphan) -> bool:
    try:
        if orphan.is_dir:
            shutil.rmtree(orphan.path)  # does not follow symlinks inside
        else:
            orphan.path.unlink()  # a symlink is removed as a link
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
