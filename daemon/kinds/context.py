"""What a step is handed: `ExportContext`, and the job it runs for.

A kind's steps see only this module (and `daemon.kinds.progress` through
it): the job's id, owner and validated params, a private work directory,
throttled progress, cancellation, and the files to put in the package. It
knows nothing of procrastinate, storage or HTTP, so the API process can load
kinds without loading the worker.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from uuid import UUID

from daemon.compression import DEFAULT_LEVEL
from daemon.errors import PackagingError, is_storage_full
from daemon.kinds.progress import PROGRESS_INTERVAL, ProgressReporter, ProgressSink

if TYPE_CHECKING:
    from daemon.kinds.registry import Kind

log = logging.getLogger("daemon.worker.pipeline")

MANIFEST_NAME = "manifest.json"


class JobCancelled(Exception):
    """The job was cancelled (or is no longer ours to run); stop and roll back."""


@dataclass(frozen=True)
class JobInfo:
    """What a step may know about its job."""

    job_id: UUID
    kind: str
    owner_id: str | None
    params: dict[str, Any]  # validated JSON form, as stored
    run: int
    attempt: int
    created_at: datetime


@dataclass(frozen=True)
class PackageFile:
    """A member to archive: where to read it and its name inside the package.

    `compressed`: `source` holds the content already as one complete gzip
    member (the SQL step compresses while rows arrive); packaging copies it
    into the archive as it is. `size` and `sha256` then describe the
    content, which packaging does not read again. Every field is a plain
    JSON value or a Path (a checkpoint stores them generically).
    """

    source: Path
    arcname: str
    rows: int | None = None
    compressed: bool = False
    size: int | None = None
    sha256: str | None = None


def check_arcname(name: str) -> str:
    """A relative POSIX name with no `..`, no empty part, no control characters."""
    pure = PurePosixPath(name)
    if (
        not name
        or not pure.parts
        or pure.is_absolute()
        or any(part in ("", ".", "..") for part in pure.parts)
        or any(ord(ch) < 32 for ch in name)
        or name == MANIFEST_NAME
    ):
        raise PackagingError(f"invalid file name in package: {name!r}")
    return pure.as_posix()


class ExportContext:
    """Handed to every step: the job, a work directory, progress, cancellation, files."""

    def __init__(
        self,
        job: JobInfo,
        kind: Kind,
        work_dir: Path,
        sink: ProgressSink,
        *,
        clock: Callable[[], float] = time.monotonic,
        progress_interval: float = PROGRESS_INTERVAL,
        compression_level: int = DEFAULT_LEVEL,
    ) -> None:
        self.job = job
        # EXPORTD_COMPRESSION_LEVEL: for steps that compress their output
        # (the SQL step) and for the package.
        self.compression_level = compression_level
        self.kind = kind
        self.work_dir = work_dir
        self.params: dict[str, Any] = kind.converted(job.params)
        self.log = logging.LoggerAdapter(log, {"job_id": str(job.job_id), "kind": kind.name})
        self.result: dict[str, Any] = {}
        self.state: dict[str, Any] = {}
        self.files: list[PackageFile] = []
        self._cancelled = False
        # Owned by the pipeline, which moves it from step to step.
        self.reporter = ProgressReporter(
            job.job_id,
            len(kind.steps) + 1,  # + packaging
            sink,
            on_stopped=self.cancel,
            clock=clock,
            interval=progress_interval,
        )
        # Called with the exception before finished steps are rolled back
        # (the queue layer marks a final failure 'failed' there).
        self.before_rollback: Callable[[BaseException], Awaitable[None]] | None = None

    # -- cancellation --------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Mark the job cancelled; the next check stops the pipeline."""
        self._cancelled = True

    async def check_cancelled(self) -> None:
        """Raise JobCancelled if the job was cancelled. Call it between units of work."""
        self.raise_if_cancelled()

    def raise_if_cancelled(self) -> None:
        """`check_cancelled` for code off the event loop (the packaging thread)."""
        if self._cancelled:
            raise JobCancelled(f"job {self.job.job_id} was cancelled")

    # -- files -----------------------------------------------------------------

    def file(self, name: str, *, rows: int | None = None) -> Path:
        """A path in the work directory for a package member named `name`."""
        arcname = check_arcname(name)
        path = self.work_dir / arcname
        path.parent.mkdir(parents=True, exist_ok=True)
        self.add_file(path, arcname, rows=rows)
        return path

    def add_file(
        self,
        source: Path,
        arcname: str,
        *,
        rows: int | None = None,
        compressed: bool = False,
        size: int | None = None,
        sha256: str | None = None,
    ) -> None:
        """Add a file to the package (read at packaging time, never followed if a symlink).

        `compressed=True`: `source` is one gzip member of the content, whose
        `size` and `sha256` must then be given (see `PackageFile`).
        """
        arcname = check_arcname(arcname)
        if compressed and (size is None or sha256 is None):
            raise ValueError("a compressed member needs its content's size and sha256")
        self.files = [f for f in self.files if f.arcname != arcname]
        self.files.append(
            PackageFile(
                source=source,
                arcname=arcname,
                rows=rows,
                compressed=compressed,
                size=size,
                sha256=sha256,
            )
        )

    def set_rows(self, arcname: str, rows: int) -> None:
        self.files = [
            dataclasses.replace(f, rows=rows) if f.arcname == arcname else f for f in self.files
        ]

    # -- progress --------------------------------------------------------------

    async def progress(self, done: int, total: int, message: str | None = None) -> None:
        """Progress inside the current step (throttled to 4 writes/s, latest value wins)."""
        fraction = 0.0 if total <= 0 else min(1.0, max(0.0, done / total))
        title = self.reporter.step_title
        if message:
            title = f"{title}: {message}" if title else message
        await self.reporter.report(self.reporter.step_index, title, fraction)


# What the owner reads for an OS error, by errno: never the path (it names
# the server's directories), never the raw strerror where a plainer word fits.
# A full volume (ENOSPC, EDQUOT) is `STORAGE_FULL`, found by `is_storage_full`
# wherever it sits in the chain of errors.
STORAGE_FULL = "storage full"
OS_ERROR_MESSAGES = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOENT: "file not found",
}


def safe_error(exc: BaseException) -> str:
    """`Type: message`, one line, bounded; no traceback, no connection strings,
    and for an OS error no file name (`No space left on device: '/srv/…'`
    becomes `OSError: storage full`). This is what a job's `error_message`
    and its attempt rows hold. A full disk reads `OSError: storage full`
    wherever it struck, even when the error on its way up is another one
    (a COPY or a stream closed after the failing write)."""
    if is_storage_full(exc):
        return f"OSError: {STORAGE_FULL}"
    text = _os_error_text(exc) if isinstance(exc, OSError) else None
    if text is None:
        text = _redact(" ".join(str(exc).split()))
    name = type(exc).__name__
    return f"{name}: {text[:500]}" if text else name


def _os_error_text(exc: OSError) -> str | None:
    """The message of an OS error by its errno; None for one without errno
    (raised with a message of its own, like any other exception)."""
    if exc.errno is None:
        return None
    known = OS_ERROR_MESSAGES.get(exc.errno)
    if known is not None:
        return known
    try:
        text = exc.strerror or os.strerror(exc.errno)
    except ValueError:  # an errno the platform does not know
        text = ""
    return " ".join(text.split()) or f"error {exc.errno}"


def _redact(text: str) -> str:
    text = re.sub(r"postgres(?:ql)?://\S+", "postgresql://…", text)
    text = re.sub(r"password=\S+", "password=…", text)
    return text
