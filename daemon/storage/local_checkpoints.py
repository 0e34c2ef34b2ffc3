"""Checkpoint areas of the local backend: `<root>/.checkpoints/<job_id>-r<run>/`.

The area sits under the storage root, on the same file system as the work
directories (`<root>/.work/`), so keeping a step's file is a hard link and
putting it back into the next attempt's work directory is another: no byte
is copied, and the kept file costs no space until the work directory that
shared it is removed. Where the file system refuses links (another file
system mounted on `.work`, a file system without them) the file is copied.

    files/<name>        a kept file (name: hex, chosen by the caller)
    step-<n>.json       the record of step n, written (atomically) after its files

A record names the kept files, so they are made durable (fsync of each file
and of `files/`) before the record is written: after a power loss a record
never points to a file whose bytes the disk had not kept yet. The record
itself is not fsynced (one disk flush less per step, about a third of what
a 100-row step's checkpoint took): a record lost with the power only means its
step runs again, and one the disk kept torn (short, zero-filled) is no JSON
and counts as lost too (`daemon.worker.checkpoints` also checks that a record
names its own run and step, against stale bytes on file systems that may
show them).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path

from daemon.storage import layout
from daemon.storage.backend import RunId
from daemon.storage.local_walk import scandir_or_empty

_RECORD = re.compile(r"step-(\d{1,6})\.json")
_NAME = re.compile(r"[0-9a-f]{8,128}")


class LocalCheckpoints:
    """The checkpoint areas under one storage root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.base = root / layout.CHECKPOINT_DIR

    def area(self, run: RunId) -> Path:
        return self.root / run.relative

    def put_file(self, run: RunId, name: str, source: Path) -> None:
        target = self._file(run, name)
        if target.exists():
            return  # kept by an earlier step of the run
        _make_private_dirs(target.parent)
        _link_or_copy(source, target)
        _fsync(target, os.O_RDONLY)
        _fsync(target.parent, os.O_RDONLY | os.O_DIRECTORY)

    def get_file(self, run: RunId, name: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        _link_or_copy(self._file(run, name), target)

    def put_record(self, run: RunId, step: int, data: bytes) -> None:
        area = self.area(run)
        _make_private_dirs(area)
        temp = area / f".step-{int(step)}.{secrets.token_hex(4)}.part"
        with temp.open("xb") as out:
            out.write(data)  # not fsynced: see the module's docstring
        os.replace(temp, area / f"step-{int(step)}.json")

    def records(self, run: RunId) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        for entry in scandir_or_empty(self.area(run)):
            match = _RECORD.fullmatch(entry.name)
            if match and entry.is_file(follow_symlinks=False):
                found[int(match[1])] = Path(entry.path).read_bytes()
        return found

    def delete(self, run: RunId) -> None:
        shutil.rmtree(self.area(run), ignore_errors=True)

    def runs(self) -> list[RunId]:
        runs: list[RunId] = []
        for entry in scandir_or_empty(self.base):
            parsed = layout.checkpoint_run_of(entry.name)
            if parsed is not None and entry.is_dir(follow_symlinks=False):
                runs.append(RunId(*parsed))
        return runs

    def _file(self, run: RunId, name: str) -> Path:
        if not _NAME.fullmatch(name):
            raise ValueError("a checkpoint file name is lower-case hex")
        return self.area(run) / "files" / name


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:
        # Another file system, or one without hard links: copy the bytes.
        shutil.copyfile(source, target, follow_symlinks=False)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_private_dirs(path: Path) -> None:
    """The area holds exported data: as private as a work directory."""
    missing: list[Path] = []
    current = path
    while not current.is_dir():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=layout.WORK_DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(directory, layout.WORK_DIR_MODE)
