"""The procrastinate side: one App, the task that runs an export, settling.

procrastinate runs the task; exportd settles each attempt itself, in ONE
statement that updates the job row, closes the attempt row and finishes (or
retries) procrastinate's job — the commit procrastinate would have made
anyway, so domain tracking adds no commit. The start of an attempt is
recorded by a trigger inside procrastinate's fetch transaction (migration
0003). procrastinate's own finish/retry is then skipped for settled jobs
(`SettlingJobManager`).

Retries honour each job's `max_attempts` (procrastinate's `retry_job` does
not), with exponential backoff between `EXPORTD_RETRY_BASE_SECONDS` and
`EXPORTD_RETRY_MAX_SECONDS`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString, TypeVar
from uuid import UUID

import psycopg
from procrastinate import App, JobContext, PsycopgConnector, manager
from procrastinate import jobs as pjobs
from procrastinate.job_context import AbortReason
from psycopg.types.json import Jsonb

from daemon import store
from daemon.config import Settings
from daemon.database import POOL_RECONNECT_SECONDS
from daemon.kinds import KindRegistry, UnknownKind
from daemon.models import JobStatus
from daemon.pipeline import (
    ExportContext,
    JobCancelled,
    JobInfo,
    Published,
    execute,
    rollback_failed,
    safe_error,
)
from daemon.pools import idle_checked_pool
from daemon.retention import Cleanup, CleanupReport, cleanup_cron
from daemon.sqlfiles import named_queries
from daemon.storage import Attempt, PackageStorage

log = logging.getLogger(__name__)

Q = named_queries("attempts")
TASK_NAME = "exportd.run_export"
RESCUE_TASK_NAME = "exportd.rescue_stalled"
CLEANUP_TASK_NAME = "exportd.cleanup"
DEFAULT_QUEUE = "exports"
SETTLE_TIMEOUT_SECONDS = 120.0
SHUTDOWN_ERROR = "Interrupted: the worker shut down before the export finished"
CANCELLED_ERROR = "Cancelled"

T = TypeVar("T")


def backoff(settings: Settings, attempt: int) -> float:
    """Seconds to wait before retrying after failed attempt number `attempt`."""
    exponent = min(max(attempt - 1, 0), 30)
    return float(min(settings.retry_max_seconds, settings.retry_base_seconds * 2**exponent))


def application_name(role: str) -> str:
    """Shown in pg_stat_activity and recorded as the worker of each attempt."""
    return f"exportd-{role} {socket.gethostname()}:{os.getpid()}"[:63]


class SettlingJobManager(manager.JobManager):
    """procrastinate's JobManager, minus the persistence of jobs exportd settled.

    For an export job the task could not settle (a bug, or the database was
    gone for longer than the settle timeout), the attempt is treated as lost
    — recorded, and retried while attempts remain — instead of leaving the
    job row in_progress forever.
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
        if job.task_name != TASK_NAME or job.id is None:
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


class ExportRuntime:
    """Everything a worker process needs to run exports."""

    def __init__(
        self,
        settings: Settings,
        database_url: str,
        registry: KindRegistry,
        *,
        role: str = "worker",
        pool_size: int | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.storage = PackageStorage(settings.storage_dir)
        self.settled: set[int] = set()
        size = pool_size or settings.worker_concurrency + 4
        self.connector = PsycopgConnector(
            conninfo=database_url,
            min_size=1,
            max_size=size,
            reconnect_timeout=POOL_RECONNECT_SECONDS,
            pool_factory=idle_checked_pool,
            kwargs={"application_name": application_name(role)},
        )
        self.app = App(connector=self.connector)
        self.app.job_manager = SettlingJobManager(self.connector, self)
        self._register_tasks()

    # -- tasks -----------------------------------------------------------------

    def _register_tasks(self) -> None:
        runtime = self

        @self.app.task(name=TASK_NAME, pass_context=True, queue=DEFAULT_QUEUE)
        async def run_export(context: JobContext, /, **args: Any) -> None:
            await runtime.run_export(context, args)

        seconds = max(1, int(self.settings.stalled_after_seconds // 2))
        cron = f"* * * * * */{seconds}" if seconds < 60 else "* * * * *"

        @self.app.periodic(cron=cron, periodic_id="rescue")
        @self.app.task(name=RESCUE_TASK_NAME, queue=DEFAULT_QUEUE, pass_context=False)
        async def rescue_stalled(timestamp: int) -> int:
            return await runtime.rescue_stalled()

        # Retention: procrastinate defers each tick once, so one worker runs it.
        @self.app.periodic(
            cron=cleanup_cron(self.settings.cleanup_interval_seconds), periodic_id="cleanup"
        )
        @self.app.task(name=CLEANUP_TASK_NAME, queue=DEFAULT_QUEUE, pass_context=False)
        async def cleanup(timestamp: int) -> None:
            await runtime.cleanup()

    async def run_export(self, context: JobContext, args: dict[str, Any]) -> None:
        """The body of the procrastinate task: one attempt of one export."""
        queue_job = context.job
        assert queue_job.id is not None
        info = JobInfo(
            job_id=UUID(args["job_id"]),
            kind=args["kind"],
            owner_id=args.get("owner_id"),
            params=dict(args.get("params") or {}),
            run=int(args["run"]),
            attempt=queue_job.attempts + 1,
            created_at=datetime.fromisoformat(args["created_at"]),
        )
        settler = Settler(self, info, queue_job.id, int(args.get("max_attempts") or 1))
        extra = {"job_id": str(info.job_id), "kind": info.kind, "action": "attempt"}
        log.info("attempt %d of run %d started", info.attempt, info.run, extra=extra)
        ctx: ExportContext | None = None
        try:
            kind = self.registry.get(info.kind)
            work_dir = await asyncio.to_thread(
                self.storage.make_work_dir, Attempt(info.job_id, info.run, info.attempt)
            )
            ctx = ExportContext(info, kind, work_dir, self._write_progress)
            ctx.before_rollback = settler.before_rollback
            settler.ctx = ctx
            await execute(kind, ctx, self.storage, settler.complete)
        except asyncio.CancelledError:
            if context.abort_reason() == AbortReason.SHUTDOWN:
                await settler.interrupted()
            else:
                await settler.cancelled()
            raise
        except JobCancelled:
            await settler.cancelled()
        except UnknownKind as exc:
            await settler.failed(exc, rollback_ok=True)
        except Exception as exc:
            log.warning("attempt failed: %s", safe_error(exc), extra=extra)
            await settler.failed(exc, rollback_ok=ctx is None or not rollback_failed(ctx))

    async def _write_progress(
        self, job_id: UUID, done: int, total: int, current_step: str | None, percentage: int
    ) -> JobStatus | None:
        try:
            async with self.connector.pool.connection() as conn:
                await conn.set_autocommit(True)
                return await store.update_progress(
                    conn, job_id, done, total, current_step, percentage
                )
        except psycopg.OperationalError as exc:
            # Progress is best effort: a lost write must not fail the export.
            log.warning("progress not recorded: %s", exc, extra={"job_id": str(job_id)})
            return JobStatus.IN_PROGRESS

    # -- retention -----------------------------------------------------------------

    async def cleanup(self) -> CleanupReport:
        """One retention run (daemon/retention.py), on a pooled connection."""
        async with self.connector.pool.connection() as conn:
            await conn.set_autocommit(True)
            return await Cleanup(self.settings, self.storage).run(conn)

    # -- stalled jobs ------------------------------------------------------------

    async def rescue_stalled(self) -> int:
        """Retry (or fail) exports whose worker stopped heartbeating."""
        stalled = await self.app.job_manager.get_stalled_jobs(
            task_name=TASK_NAME, seconds_since_heartbeat=self.settings.stalled_after_seconds
        )
        rescued = 0
        for job in stalled:
            assert job.id is not None
            outcome = await self.rescue(job.id, attempt=job.attempts + 1)
            rescued += outcome in ("retried", "failed", "cancelled")
        if rescued:
            log.warning("rescued %d stalled export(s)", rescued, extra={"action": "rescue"})
        return rescued

    async def rescue(self, queue_job_id: int, *, attempt: int) -> str:
        retry_at = datetime.now(UTC) + timedelta(seconds=backoff(self.settings, attempt))
        row = await self.fetch_one(
            Q["rescue_lost"], {"queue_job_id": queue_job_id, "retry_at": retry_at}
        )
        return str(row[0]) if row else "gone"

    # -- database helpers ----------------------------------------------------------

    async def fetch_one(
        self, query: LiteralString, params: dict[str, Any]
    ) -> tuple[Any, ...] | None:
        async with self.connector.pool.connection() as conn:
            await conn.set_autocommit(True)
            cur = await conn.execute(query, params)
            return await cur.fetchone()


class Settler:
    """Writes the outcome of one attempt (one statement each, retried while the
    database is unreachable, so a short outage does not lose an outcome)."""

    def __init__(self, runtime: ExportRuntime, info: JobInfo, queue_job_id: int, max_attempts: int):
        self.runtime = runtime
        self.info = info
        self.queue_job_id = queue_job_id
        self.max_attempts = max_attempts
        self.marked_failed = False
        self.ctx: ExportContext | None = None
        self.extra = {"job_id": str(info.job_id), "kind": info.kind}

    @property
    def _ids(self) -> dict[str, Any]:
        return {
            "job_id": self.info.job_id,
            "run": self.info.run,
            "attempt": self.info.attempt,
            "queue_job_id": self.queue_job_id,
            "now": None,
        }

    @property
    def final(self) -> bool:
        return self.info.attempt >= self.max_attempts

    async def _settle(self, query: LiteralString, params: dict[str, Any]) -> int:
        row = await _retrying(lambda: self.runtime.fetch_one(query, {**self._ids, **params}))
        self.runtime.settled.add(self.queue_job_id)
        return int(row[0]) if row else 0

    async def complete(self, published: Published) -> bool:
        built = published.built
        settled = await self._settle(
            Q["complete_attempt"],
            {
                "steps_total": self._steps_total(),
                "result": Jsonb(self.ctx.result if self.ctx is not None else {}),
                "package_path": published.relative_path,
                "package_size_bytes": built.size_bytes,
                "package_sha256": built.sha256,
                "retention_days": self.runtime.settings.package_retention_days,
            },
        )
        if settled:
            log.info("completed", extra={**self.extra, "action": "completed"})
        else:
            self.runtime.settled.discard(self.queue_job_id)
        return bool(settled)

    def _steps_total(self) -> int:
        kind = self.runtime.registry.get(self.info.kind)
        return len(kind.steps) + 1

    async def before_rollback(self, exc: BaseException) -> None:
        """A final failure is 'failed' while its rollback runs (DESIGN §3)."""
        if isinstance(exc, JobCancelled | asyncio.CancelledError) or not self.final:
            return
        row = await _retrying(
            lambda: self.runtime.fetch_one(
                Q["mark_failed"], {**self._ids, "error": safe_error(exc)}
            )
        )
        self.marked_failed = row is not None

    async def failed(self, exc: BaseException, *, rollback_ok: bool) -> None:
        error = safe_error(exc)
        if self.final and not self.marked_failed:
            await self.before_rollback(exc)
        if self.marked_failed:
            await self._settle(
                Q["fail_attempt"],
                {
                    "retry": False,
                    "retry_at": None,
                    "final_status": "rolled_back" if rollback_ok else "failed",
                    "outcome": "failed",
                    "error": error,
                },
            )
            log.error("failed for good: %s", error, extra={**self.extra, "action": "failed"})
            return
        delay = backoff(self.runtime.settings, self.info.attempt)
        settled = await self._settle(
            Q["fail_attempt"],
            {
                "retry": True,
                "retry_at": datetime.now(UTC) + timedelta(seconds=delay),
                "final_status": "failed",
                "outcome": "failed",
                "error": error,
            },
        )
        if settled:
            log.info("retry in %.1f s", delay, extra={**self.extra, "action": "retry"})
        else:
            await self.cancelled()  # cancelled meanwhile, or no longer ours

    async def cancelled(self) -> None:
        await self._settle(Q["cancel_attempt"], {"error": CANCELLED_ERROR})
        log.info("cancelled", extra={**self.extra, "action": "cancelled"})

    async def interrupted(self) -> None:
        """Shutdown past the grace period: rolled back; retry at once, elsewhere."""
        settled = await self._settle(
            Q["fail_attempt"],
            {
                "retry": True,
                "retry_at": datetime.now(UTC),
                "final_status": "failed",
                "outcome": "cancelled",
                "error": SHUTDOWN_ERROR,
            },
        )
        if not settled:
            await self.cancelled()


async def _retrying(call: Callable[[], Awaitable[T]]) -> T:
    """Retry a statement while the database is unreachable (up to SETTLE_TIMEOUT_SECONDS)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_TIMEOUT_SECONDS
    delay = 0.5
    while True:
        try:
            return await call()
        except psycopg.OperationalError:
            if loop.time() + delay > deadline:
                raise
            log.warning("database unavailable while settling; retrying in %.1f s", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
