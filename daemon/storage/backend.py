"""The storage interface: what the worker, retention and the API need of the
place packages live, whichever backend holds them.

Two backends implement it: `local.LocalStorage` (a directory, the default)
and `s3_backend.S3PackageStorage` (an S3-compatible bucket). A package is
named by the same relative path in both (`layout.package_path`: the row's
`package_path`), so everything above this module — settling, expiry, the
orphan sweep, downloads — is written once.

Every method blocks: the worker and the API call them from a thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from daemon.errors import ExportdError
from daemon.storage import layout


class UnsafeLocation(ExportdError):
    """A stored package path (from a row, not trusted) that is not one exportd
    writes: it would leave the storage root or the bucket prefix."""


@dataclass(frozen=True)
class Attempt:
    """Identifies one attempt of one run of a job (names its files)."""

    job_id: UUID
    run: int
    attempt: int

    @property
    def label(self) -> str:
        return layout.attempt_label(self.job_id, self.run, self.attempt)


@dataclass(frozen=True)
class RunId:
    """Identifies one run of a job (names its checkpoint area)."""

    job_id: UUID
    run: int

    @property
    def relative(self) -> str:
        return layout.checkpoint_path(self.job_id, self.run)


class CheckpointStore(Protocol):
    """A run's checkpoint area: the kept outputs of its finished resumable
    steps (DESIGN §14), where the run's next attempt finds them — on another
    host too, when the backend is shared (a bucket, or a shared directory).

    A step's record (JSON bytes, `daemon.worker.checkpoints` writes and reads
    it) is saved after its files, so a record present means its files are.
    `name` is a file's name inside the area (hex, made by the caller).
    """

    def put_file(self, run: RunId, name: str, source: Path) -> None:
        """Keep a copy of `source` (a hard link where the file system allows)."""

    def get_file(self, run: RunId, name: str, target: Path) -> None:
        """Put the kept file back at `target` (a new attempt's work directory)."""

    def put_record(self, run: RunId, step: int, data: bytes) -> None: ...

    def records(self, run: RunId) -> dict[int, bytes]:
        """Every step record of the run, by step index (empty: nothing kept)."""

    def delete(self, run: RunId) -> None:
        """Remove the run's area and everything in it (gone already: fine)."""

    def runs(self) -> list[RunId]:
        """The runs that have a checkpoint area (the checkpoint sweep's list)."""


class PackageWriter(Protocol):
    """A binary sink for one attempt's package.

    `relative` is known from the start (unique per attempt, random), so a
    caller can delete the package by name whatever happens after `publish`.
    Nothing is visible under `relative` before `publish()` returns; `discard()`
    drops whatever was written and never raises (it runs while another error
    is on its way up); after a successful `publish()` it does nothing.
    """

    @property
    def relative(self) -> str: ...

    def write(self, data: Any, /) -> int: ...

    def publish(self) -> None: ...

    def discard(self) -> None: ...


@dataclass
class Orphan:
    """An entry of storage the sweep may remove: a package object or file, a
    temp file, a work directory or an unfinished upload. `size` < 0 marks one
    to skip; `handle` is the backend's own (a path, an upload id)."""

    relative: str
    size: int
    is_dir: bool = False
    handle: Any = None


class Storage(Protocol):
    """Where packages live. `name` is "local" or "s3" (metrics, logs, docs)."""

    name: str

    def ensure(self) -> None:
        """Create what must exist (directories), or check the store answers
        and the credentials are accepted. Raises with a one-line message."""

    # -- work directories (always on this host's disk) -------------------------

    @property
    def work_root(self) -> Path:
        """The local directory that holds work directories of running steps."""

    def make_work_dir(self, attempt: Attempt) -> Path: ...

    def remove_tree(self, path: Path) -> None: ...

    # -- packages ----------------------------------------------------------------

    def open_writer(self, attempt: Attempt) -> PackageWriter:
        """A writer for this attempt's package, under a fresh relative path."""

    def delete(self, relative: str) -> bool:
        """Delete a published package; False when it was already gone.
        A relative path that is not one exportd writes is refused."""

    def size(self, relative: str) -> int | None:
        """The package's size in bytes; None when it is not there."""

    def read(self, relative: str) -> Iterator[bytes]:
        """The package's bytes, chunk by chunk (`exportd export --output`)."""

    # -- checkpoints of runs (resume) ------------------------------------------------

    @property
    def checkpoints(self) -> CheckpointStore:
        """Per-run checkpoint areas: a directory next to the work directories
        (local), objects under the prefix (S3)."""

    # -- the orphan sweep ----------------------------------------------------------

    def old_entries(self, grace_seconds: float, now: datetime | None) -> list[Orphan]:
        """Everything in storage (and in this host's work area) older than the
        grace period, named by its relative path (`layout.job_id_of` reads it)."""

    def remove_orphans(self, orphans: Iterable[Orphan]) -> tuple[int, int, int]:
        """Remove the given entries: (removed, bytes freed, failures)."""
