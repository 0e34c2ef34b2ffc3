"""Running one attempt of an export: steps, progress, cancellation, rollback, package.

The pipeline knows nothing about HTTP or about procrastinate. It receives a
kind, a context and a `complete` callback (which commits the job as
completed), and guarantees:

- steps run in order; a step that raises, or a cancellation, rolls back the
  steps that finished, in reverse, then re-raises;
- the package is built in a temp file, published under a name unique to the
  attempt, and deleted again if the completion is refused (the job was
  cancelled or taken over meanwhile), so storage only ever holds packages
  that a committed row points to (or that the orphan sweep will remove);
- the work directory is removed whatever happens.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from daemon.kinds import Kind, Step
from daemon.models import JobStatus
from daemon.packaging import BuiltPackage, PackageFile, build_package, check_arcname
from daemon.storage import Attempt, PackageStorage

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.25  # seconds: at most 4 progress writes per second per job
PACKAGING_TITLE = "Packaging"


class JobCancelled(Exception):
    """The job was cancelled (or is no longer ours to run); stop and roll back."""


class ProgressSink(Protocol):
    """Writes progress; returns the job's status (None: no longer running)."""

    async def __call__(
        self, job_id: UUID, done: int, total: int, current_step: str | None, percentage: int
    ) -> JobStatus | None: ...


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
class Published:
    """A package moved into storage, waiting for its row to commit."""

    relative_path: str
    built: BuiltPackage


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
    ) -> None:
        self.job = job
        self.kind = kind
        self.work_dir = work_dir
        self.params: dict[str, Any] = kind.converted(job.params)
        self.log = logging.LoggerAdapter(log, {"job_id": str(job.job_id), "kind": kind.name})
        self.result: dict[str, Any] = {}
        self.state: dict[str, Any] = {}
        self.files: list[PackageFile] = []
        self._sink = sink
        self._clock = clock
        self._interval = progress_interval
        self._cancelled = False
        self._last_write = clock()  # the first write waits one interval: short jobs write none
        self._pending: tuple[int, int, str | None, int] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._step_index = 0
        self._step_count = len(kind.steps) + 1  # + packaging
        self._step_title: str | None = None
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

    def add_file(self, source: Path, arcname: str, *, rows: int | None = None) -> None:
        """Add a file to the package (read at packaging time, never followed if a symlink)."""
        arcname = check_arcname(arcname)
        self.files = [f for f in self.files if f.arcname != arcname]
        self.files.append(PackageFile(source=source, arcname=arcname, rows=rows))

    def set_rows(self, arcname: str, rows: int) -> None:
        self.files = [
            PackageFile(f.source, f.arcname, rows) if f.arcname == arcname else f
            for f in self.files
        ]

    # -- progress --------------------------------------------------------------

    async def progress(self, done: int, total: int, message: str | None = None) -> None:
        """Progress inside the current step (throttled to 4 writes/s, latest value wins)."""
        fraction = 0.0 if total <= 0 else min(1.0, max(0.0, done / total))
        title = self._step_title
        if message:
            title = f"{title}: {message}" if title else message
        await self._report(self._step_index, title, fraction)

    async def _enter_step(self, index: int, title: str) -> None:
        self._step_index = index
        self._step_title = title
        await self._report(index, title, 0.0)

    async def _report(self, index: int, title: str | None, fraction: float) -> None:
        percentage = min(99, int(100 * (index + fraction) / self._step_count))
        self._pending = (index, self._step_count, title, percentage)
        now = self._clock()
        if now - self._last_write >= self._interval:
            await self._flush()
        elif self._flusher is None:
            delay = self._interval - (now - self._last_write)
            self._flusher = asyncio.create_task(self._flush_later(delay))

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._flusher = None
        await self._flush()

    async def _flush(self) -> None:
        if self._pending is None:
            return
        done, total, title, percentage = self._pending
        self._pending = None
        self._last_write = self._clock()
        status = await self._sink(self.job.job_id, done, total, title, percentage)
        if status is not JobStatus.IN_PROGRESS:
            # cancelling, or the job is no longer ours (rescued, finished elsewhere)
            self._cancelled = True

    def _stop_progress(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        self._pending = None


async def run_steps(kind: Kind, ctx: ExportContext) -> None:
    """Run every step; on any exception (or cancellation) roll back and re-raise."""
    finished: list[Step] = []
    try:
        for index, step in enumerate(kind.steps):
            await ctx.check_cancelled()
            await ctx._enter_step(index, step.title)
            await step.run(ctx)
            finished.append(step)
        await ctx.check_cancelled()
    except BaseException as exc:
        ctx._stop_progress()
        if ctx.before_rollback is not None:
            await ctx.before_rollback(exc)
        await rollback(finished, ctx)
        raise


async def rollback(finished: list[Step], ctx: ExportContext) -> None:
    """Undo finished steps in reverse. A failing rollback is recorded, not raised."""
    for step in reversed(finished):
        if step.undo is None:
            continue
        try:
            await step.undo(ctx)
        except Exception as exc:
            ctx.log.error(
                "rollback of %r failed: %s",
                step.title,
                safe_error(exc),
                extra={"action": "rollback"},
            )
            ctx.state.setdefault("_rollback_errors", []).append(f"{step.title}: {safe_error(exc)}")


def rollback_failed(ctx: ExportContext) -> bool:
    return bool(ctx.state.get("_rollback_errors"))


async def execute(
    kind: Kind,
    ctx: ExportContext,
    storage: PackageStorage,
    complete: Callable[[Published], Awaitable[bool]],
) -> Published:
    """One attempt from first step to committed completion.

    `complete` commits the job as completed and returns False when the row
    refused (cancelled or no longer this attempt's): the package is then
    deleted, the steps rolled back, and JobCancelled raised.
    """
    attempt = Attempt(ctx.job.job_id, ctx.job.run, ctx.job.attempt)
    finished_all = False
    try:
        await run_steps(kind, ctx)
        finished_all = True
        await ctx._enter_step(len(kind.steps), PACKAGING_TITLE)
        ctx._stop_progress()
        temp = storage.temp_package_path(attempt)
        try:
            built = await asyncio.to_thread(
                build_package,
                temp,
                ctx.files,
                top_dir=_top_dir(ctx),
                manifest_header=_manifest_header(ctx),
            )
            await ctx.check_cancelled()
            relative = storage.final_path(attempt)
            await asyncio.to_thread(storage.publish, temp, relative)
        finally:
            temp.unlink(missing_ok=True)
        published = Published(relative, built)
        try:
            committed = await complete(published)
        except BaseException:
            # Unknown whether the row committed: neither roll back nor delete
            # what a committed row may point to (an uncommitted file is swept).
            finished_all = False
            raise
        if not committed:
            await asyncio.to_thread(storage.delete, relative)
            raise JobCancelled(f"job {ctx.job.job_id} was cancelled before it completed")
        return published
    except BaseException as exc:
        if finished_all:
            if ctx.before_rollback is not None:
                await ctx.before_rollback(exc)
            await rollback(list(kind.steps), ctx)
        raise
    finally:
        ctx._stop_progress()
        await asyncio.to_thread(storage.remove_tree, ctx.work_dir)


def _top_dir(ctx: ExportContext) -> str:
    return f"export-{ctx.job.kind}-{ctx.job.created_at.date().isoformat()}"


def _manifest_header(ctx: ExportContext) -> dict[str, Any]:
    return {
        "job_id": str(ctx.job.job_id),
        "kind": ctx.job.kind,
        "params": ctx.job.params,
        "owner_id": ctx.job.owner_id,
        "created_at": ctx.job.created_at.isoformat(),
        "run": ctx.job.run,
        "attempt": ctx.job.attempt,
    }


def safe_error(exc: BaseException) -> str:
    """`Type: message`, one line, bounded; no traceback, no connection strings."""
    text = " ".join(str(exc).split())
    text = _redact(text)
    name = type(exc).__name__
    return f"{name}: {text[:500]}" if text else name


def _redact(text: str) -> str:
    text = re.sub(r"postgres(?:ql)?://\S+", "postgresql://…", text)
    text = re.sub(r"password=\S+", "password=…", text)
    return text
