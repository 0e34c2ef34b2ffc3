"""Settling attempts: exportd writes each attempt's outcome itself.

procrastinate runs the task; the `Settler` records how the attempt ended in
ONE statement (`daemon.db.attempts`) that updates the job, closes its attempt
row and finishes or retries procrastinate's job — the commit procrastinate
would have made anyway, so domain tracking adds no commit. procrastinate's own
finish/retry is then skipped for settled jobs (`SettlingJobManager`).

Retries honour each job's `max_attempts` (procrastinate's `retry_job` does
not), with the backoff of `Settings.retry_delay`. An error that no retry can
fix (`daemon.errors.is_permanent`: a SQL syntax error, a missing table, an
unknown kind…) ends the run on the attempt it happened in, like the last
attempt would (DESIGN §16).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from procrastinate import PsycopgConnector, manager
from procrastinate import jobs as pjobs

from daemon.db import attempts
from daemon.db.attempts import AttemptIds
from daemon.db.pools import Pool
from daemon.errors import DatabaseUnavailable, is_permanent
from daemon.kinds.context import ExportContext, JobCancelled, JobInfo, safe_error
from daemon.tasks import EXPORT_TASK
from daemon.worker.pipeline import Published

if TYPE_CHECKING:
    from daemon.worker.runtime import ExportRuntime

log = logging.getLogger(__name__)

SETTLE_TIMEOUT_SECONDS = 120.0
SHUTDOWN_ERROR = "Interrupted: the worker shut down before the export finished"
CANCELLED_ERROR = "Cancelled"

T = TypeVar("T")


class SettlingJobManager(manager.JobManager):
    """procrastinate's JobManager, minus the persistence of jobs exportd settled.

    For an export job the task could not settle (a bug, or the database was
    gone for longer than the settle timeout), the attempt is treated as lost
    — recorded, and retried while attempts remain — instead of leaving the
    job row in_progress forever.

    Overrides `finish_job` and `retry_job` of procrastinate's JobManager; the
    minor version of procrastinate is pinned and their signatures are checked
    by tests/unit/worker/test_procrastinate_contract.py.
    """

    def __init__(self, connector: PsycopgConnector, runtime: ExportRuntime) -> None:
        super().__init__(connector)
        self.runtime = runtime

    async def finish_job(self, job: pjobs.Job, status: pjobs.Status, delete_job: bool) -> None:
        if await self._handled(job):
            return
        await super().finish_job(job, status, delete_job)

    async def retry_job(
        self,
        job: pjobs.Job,
        retry_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        lock: str | None = None,
    ) -> None:
        if await self._handled(job):
            return
        await super().retry_job(job, retry_at, priority, queue, lock)

    async def _handled(self, job: pjobs.Job) -> bool:
        if job.task_name != EXPORT_TASK or job.id is None:
            return False
        if job.id in self.runtime.settled:
            self.runtime.settled.discard(job.id)
            return True
        log.error(
            "export attempt ended unsettled; recording it as lost",
            extra={"job_id": job.task_kwargs.get("job_id"), "action": "settle.fallback"},
        )
        await self.runtime.rescue(job.id, attempt=job.attempts + 1)
        return True


class Settler:
    """Writes the outcome of one attempt (one statement each, retried while the
    database is unreachable, so a short outage does not lose an outcome)."""

    def __init__(self, runtime: ExportRuntime, info: JobInfo, queue_job_id: int, max_attempts: int):
        self.runtime = runtime
        self.info = info
        self.queue_job_id = queue_job_id
        self.max_attempts = max_attempts
        self.marked_failed = False
        self.completed = False  # the completion committed: nothing more to settle
        self.ctx: ExportContext | None = None
        self.extra = {"job_id": str(info.job_id), "kind": info.kind}
        self.ids = AttemptIds(info.job_id, info.run, info.attempt, queue_job_id)

    @property
    def final(self) -> bool:
        return self.info.attempt >= self.max_attempts

    @property
    def _pool(self) -> Pool:
        return self.runtime.pool

    async def _settle(self, call: Callable[[], Awaitable[bool]]) -> bool:
        settled = await _retrying(call)
        self.runtime.settled.add(self.queue_job_id)
        return settled

    async def complete(self, published: Published) -> bool:
        built = published.built
        settled = await self._settle(
            lambda: attempts.complete_attempt(
                self._pool,
                self.ids,
                steps_total=self._steps_total(),
                result=self.ctx.result if self.ctx is not None else {},
                package_path=published.relative_path,
                package_size_bytes=built.size_bytes,
                package_sha256=built.sha256,
                retention_days=self.runtime.settings.package_retention_days,
            )
        )
        if settled:
            self.completed = True
            log.info("completed", extra={**self.extra, "action": "completed"})
        else:
            self.runtime.settled.discard(self.queue_job_id)
        return settled

    def _steps_total(self) -> int:
        kind = self.runtime.registry.get(self.info.kind)
        return len(kind.steps) + 1

    def ends_run(self, exc: BaseException) -> bool:
        """No retry follows: the last attempt, or an error no retry can fix."""
        return self.final or is_permanent(exc)

    async def before_rollback(self, exc: BaseException) -> None:
        """A final failure is 'failed' while its rollback runs (DESIGN §3)."""
        if isinstance(exc, JobCancelled | asyncio.CancelledError) or not self.ends_run(exc):
            return
        await self._mark_failed(exc)

    async def _mark_failed(self, exc: BaseException) -> None:
        self.marked_failed = await _retrying(
            lambda: attempts.mark_failed(self._pool, self.ids, error=safe_error(exc))
        )

    async def failed(self, exc: BaseException, *, rollback_ok: bool) -> None:
        """Record a failed attempt: retry it with backoff, or end the run when
        it was the last attempt or `exc` says retrying is futile."""
        error = safe_error(exc)
        if self.ends_run(exc) and not self.marked_failed:
            await self._mark_failed(exc)
        if self.marked_failed:
            await self._fail(None, "rolled_back" if rollback_ok else "failed", "failed", error)
            reason = "" if self.final else " (not retried: it cannot succeed)"
            log.error(
                "failed for good%s: %s", reason, error, extra={**self.extra, "action": "failed"}
            )
            return
        delay = self.runtime.settings.retry_delay(self.info.attempt)
        retry_at = datetime.now(UTC) + timedelta(seconds=delay)
        if await self._fail(retry_at, "failed", "failed", error):
            log.info("retry in %.1f s: %s", delay, error, extra={**self.extra, "action": "retry"})
        else:
            await self.cancelled()  # cancelled meanwhile, or no longer ours

    async def cancelled(self) -> None:
        await self._settle(
            lambda: attempts.cancel_attempt(self._pool, self.ids, error=CANCELLED_ERROR)
        )
        log.info("cancelled", extra={**self.extra, "action": "cancelled"})

    async def interrupted(self) -> None:
        """Shutdown past the grace period: rolled back; retry at once, elsewhere."""
        if not await self._fail(datetime.now(UTC), "failed", "cancelled", SHUTDOWN_ERROR):
            await self.cancelled()

    async def _fail(
        self, retry_at: datetime | None, final_status: str, outcome: str, error: str
    ) -> bool:
        return await self._settle(
            lambda: attempts.fail_attempt(
                self._pool,
                self.ids,
                retry_at=retry_at,
                final_status=final_status,
                outcome=outcome,
                error=error,
            )
        )


async def _retrying(call: Callable[[], Awaitable[T]]) -> T:
    """Retry a statement while the database is unreachable (up to SETTLE_TIMEOUT_SECONDS)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_TIMEOUT_SECONDS
    delay = 0.5
    while True:
        try:
            return await call()
        except DatabaseUnavailable:
            if loop.time() + delay > deadline:
                raise
            log.warning("database unavailable while settling; retrying in %.1f s", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
