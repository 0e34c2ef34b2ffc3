"""The procrastinate side of a worker: one App, its tasks, one attempt's run.

`ExportRuntime` owns the procrastinate App (on a pool from `daemon.db.pools`)
and registers exportd's tasks on it: the export itself, the periodic
maintenance tasks of `daemon.maintenance` (procrastinate defers each tick
once, so one worker runs it), and the webhook delivery
(`daemon.maintenance.webhooks`, queue `webhooks`). Jobs are fetched fairly (`FairJobManager`,
`daemon.worker.fair_fetch`); the start of an attempt is recorded by a trigger
inside that fetch's transaction (migration 0003); its end by the `Settler`
(`daemon.worker.settle`). An attempt runs within its kind's limits
(`daemon.worker.limits`: deadline, package size).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from procrastinate import App, JobContext, PsycopgConnector
from procrastinate.job_context import AbortReason

from daemon.config import Settings
from daemon.db import attempts
from daemon.db import jobs as job_store
from daemon.db.attempts import RunState
from daemon.db.pools import Pool, connection_options, make_pool, pooled
from daemon.errors import DatabaseUnavailable, DeadlineExceeded, UnknownKind
from daemon.kinds.context import ExportContext, JobCancelled, JobInfo, safe_error
from daemon.kinds.registry import Kind, KindRegistry
from daemon.maintenance import checkpoints, rescue, webhooks
from daemon.maintenance.cleanup import Cleanup, CleanupReport
from daemon.maintenance.schedule import every
from daemon.models import JobStatus
from daemon.storage.backend import Attempt, RunId
from daemon.storage.select import open_storage
from daemon.tasks import CLEANUP_TASK, DEFAULT_QUEUE, EXPORT_TASK, RESCUE_TASK
from daemon.worker.checkpoints import RunCheckpoint
from daemon.worker.ended_runs import rollback_kept_steps
from daemon.worker.fair_fetch import FairJobManager
from daemon.worker.limits import attempt_deadline, capped_storage
from daemon.worker.pipeline import Resume, execute, rollback_failed
from daemon.worker.settle import Settler

log = logging.getLogger(__name__)


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
        self.storage = open_storage(settings)
        self.settled: set[int] = set()
        size = pool_size or settings.worker_concurrency + 4
        self.connector = PsycopgConnector(
            conninfo=database_url,
            min_size=1,
            max_size=size,
            pool_factory=make_pool,
            kwargs=connection_options(role),
        )
        self.app = App(connector=self.connector)
        self.app.job_manager = FairJobManager(self.connector, self)
        self._register_tasks()

    @property
    def pool(self) -> Pool:
        """procrastinate's pool (open while the app is)."""
        return self.connector.pool

    def _register_tasks(self) -> None:
        runtime = self

        @self.app.task(name=EXPORT_TASK, pass_context=True, queue=DEFAULT_QUEUE)
        async def run_export(context: JobContext, /, **args: Any) -> None:
            await runtime.run_export(context, args)

        @self.app.periodic(
            cron=every(max(1.0, self.settings.stalled_after_seconds / 2)), periodic_id="rescue"
        )
        @self.app.task(name=RESCUE_TASK, queue=DEFAULT_QUEUE, pass_context=False)
        async def rescue_stalled(timestamp: int) -> int:
            return await runtime.rescue_stalled()

        cleanup_every = every(self.settings.cleanup_interval_seconds)

        @self.app.periodic(cron=cleanup_every, periodic_id="cleanup")
        @self.app.task(name=CLEANUP_TASK, queue=DEFAULT_QUEUE, pass_context=False)
        async def cleanup(timestamp: int) -> None:
            await runtime.cleanup()

        # Webhook deliveries: their own queue, served by their own worker.
        webhooks.register(self.app, self.settings, lambda: runtime.pool)

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
            work_dir, checkpoint = await asyncio.to_thread(
                self._prepare, kind, Attempt(info.job_id, info.run, info.attempt)
            )
            ctx = ExportContext(
                info,
                kind,
                work_dir,
                self._write_progress,
                compression_level=self.settings.compression_level,
            )
            ctx.before_rollback = settler.before_rollback
            settler.ctx = ctx
            storage = capped_storage(self.storage, kind.max_package_bytes)
            resume = self._resume(context, settler, info, checkpoint)
            async with attempt_deadline(kind.timeout):
                await execute(kind, ctx, storage, settler.complete, resume)
        except asyncio.CancelledError:
            if settler.completed:
                raise  # the abort came while the completion committed: settled
            if context.abort_reason() == AbortReason.SHUTDOWN:
                await settler.interrupted()
            else:
                await settler.cancelled()
            raise
        except JobCancelled:
            await settler.cancelled()
        except DeadlineExceeded as exc:
            # (A deadline that came while the completion committed changes nothing.)
            if not settler.completed:
                log.warning("attempt failed: %s", safe_error(exc), extra=extra)
                await settler.failed(exc, rollback_ok=ctx is None or not rollback_failed(ctx))
        except UnknownKind as exc:
            # This worker does not know the kind: another attempt here cannot help.
            log.error("cannot run: %s", safe_error(exc), extra=extra)
            await settler.failed(exc, rollback_ok=True)
        except Exception as exc:
            log.warning("attempt failed: %s%s", safe_error(exc), _os_paths(exc), extra=extra)
            await settler.failed(exc, rollback_ok=ctx is None or not rollback_failed(ctx))

    def _prepare(self, kind: Kind, attempt: Attempt) -> tuple[Path, RunCheckpoint]:
        """The attempt's work directory, with what its run kept already read
        back into it (blocking: one thread hop for both, each hop costing the
        event loop a GIL handoff; `execute` applies the checkpoint)."""
        work_dir = self.storage.make_work_dir(attempt)
        run = RunId(attempt.job_id, attempt.run)
        checkpoint = RunCheckpoint(self.storage.checkpoints, run, work_dir)
        checkpoint.prefetch(kind.steps)
        return work_dir, checkpoint

    def _resume(
        self, context: JobContext, settler: Settler, info: JobInfo, checkpoint: RunCheckpoint
    ) -> Resume:
        """The run's checkpoint, and which failures end the run: a user's
        cancel does, a shutdown does not (retried at once), an attempt's
        deadline and any other error when no retry follows."""

        def ends_run(exc: BaseException) -> bool:
            if isinstance(exc, JobCancelled):
                return True
            if isinstance(exc, asyncio.CancelledError):
                reason = context.abort_reason()
                if reason == AbortReason.SHUTDOWN:
                    return False
                return reason is not None or settler.final  # None: the deadline
            return settler.ends_run(exc)

        async def claim_end() -> bool:
            async with pooled(self.pool) as conn:
                return await attempts.end_run(conn, info.job_id, info.run)

        async def record_resume(step: int) -> None:
            await attempts.record_resume(self.pool, info.job_id, info.run, info.attempt, step=step)

        return Resume(checkpoint, ends_run, claim_end, record_resume)

    async def _write_progress(
        self, job_id: UUID, done: int, total: int, current_step: str | None, percentage: int
    ) -> JobStatus | None:
        try:
            async with pooled(self.pool) as conn:
                return await job_store.update_progress(
                    conn, job_id, done, total, current_step, percentage
                )
        except DatabaseUnavailable as exc:
            # Progress is best effort: a lost write must not fail the export.
            log.warning("progress not recorded: %s", exc, extra={"job_id": str(job_id)})
            return JobStatus.IN_PROGRESS

    async def cleanup(self) -> CleanupReport:
        """One retention run (daemon.maintenance), on a pooled connection."""
        async with pooled(self.pool) as conn:
            return await Cleanup(self.settings, self.storage, end_run=self._end_run).run(conn)

    async def rescue_stalled(self) -> int:
        rescued = await rescue.rescue_stalled(self.app.job_manager, self.pool, self.settings)
        # Runs that ended without a worker (cancelled while waiting for their
        # retry, a lost last attempt) get their kept steps rolled back soon,
        # not at the next cleanup. A failure waits for the next tick.
        try:
            await self.sweep_checkpoints()
        except Exception as exc:
            log.warning("checkpoint sweep failed: %s", safe_error(exc), extra={"action": "cleanup"})
        return rescued

    async def sweep_checkpoints(self) -> int:
        """The checkpoint sweep (daemon.maintenance.checkpoints), with rollbacks."""
        async with pooled(self.pool) as conn:
            return await checkpoints.sweep_checkpoints(conn, self.storage, end_run=self._end_run)

    async def _end_run(self, state: RunState) -> None:
        await rollback_kept_steps(self.registry, self.storage, state)

    async def rescue(self, queue_job_id: int, *, attempt: int) -> str:
        return await rescue.rescue(self.pool, self.settings, queue_job_id, attempt=attempt)


def _os_paths(exc: BaseException) -> str:
    """The file names of an OS error, for the operator's log only: the job's
    `error_message` never shows server paths (`safe_error`)."""
    if not isinstance(exc, OSError):
        return ""
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    return f" ({', '.join(names)})" if names else ""
