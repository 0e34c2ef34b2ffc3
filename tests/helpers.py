"""Shared test helpers: fast settings, a worker running in the test's loop,
waiting for a job state or any condition with a deadline (never a bare sleep)."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

from daemon.actions import ExportRequest, create_export
from daemon.config import Settings
from daemon.db import jobs as job_store
from daemon.kinds.registry import KindRegistry
from daemon.models import Job, JobStatus
from daemon.worker.process import WorkerDaemon
from tests import kinds_for_tests

FINAL = {JobStatus.COMPLETED, JobStatus.ROLLED_BACK, JobStatus.CANCELLED}


def fast_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings with second-scale timings so retries and rescues happen quickly."""
    base = Settings(
        data_dir=tmp_path / "data",
        storage_dir=tmp_path / "packages",
        work_dir=tmp_path / "work",
        retry_base_seconds=0.05,
        retry_max_seconds=0.2,
        heartbeat_seconds=0.5,
        stalled_after_seconds=1.5,
        poll_seconds=0.2,
        shutdown_grace_seconds=10.0,
        worker_concurrency=2,
    )
    return replace(base, **overrides)


def kinds_registry() -> KindRegistry:
    registry = KindRegistry()
    registry.load_module(kinds_for_tests.__name__)
    return registry


@asynccontextmanager
async def running_worker(
    settings: Settings,
    db_url: str,
    registry: KindRegistry | None = None,
    *,
    queues: Iterable[str] | None = None,
) -> AsyncIterator[WorkerDaemon]:
    daemon = WorkerDaemon(settings, db_url, registry or kinds_registry(), queues=queues)
    task = asyncio.create_task(daemon.run())
    ready = asyncio.create_task(daemon.ready.wait())
    await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raise the start-up error
    assert daemon.ready.is_set(), "worker did not become ready"
    try:
        yield daemon
    finally:
        daemon.stop()
        await asyncio.wait_for(task, timeout=60)


async def create(
    conn: psycopg.AsyncConnection[Any],
    kind: str,
    params: dict[str, Any] | None = None,
    *,
    owner: str = "alice",
    registry: KindRegistry | None = None,
    **request: Any,
) -> Job:
    job, _ = await create_export(
        conn,
        registry or kinds_registry(),
        ExportRequest(kind=kind, params=params or {}, **request),
        owner_id=owner,
    )
    return job


async def wait_for(
    conn: psycopg.AsyncConnection[Any],
    job_id: UUID,
    statuses: Iterable[JobStatus] = FINAL,
    *,
    timeout: float = 30.0,  # noqa: ASYNC109 - a deadline for polling, not a cancel scope
) -> Job:
    """Poll the job row until its status is one of `statuses` (or fail at the deadline)."""
    wanted = set(statuses)
    deadline = time.monotonic() + timeout
    while True:
        job = await job_store.get_job(conn, job_id)
        if job.status in wanted and not (
            job.status is JobStatus.FAILED and job.completed_at is None
        ):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} is {job.status.value}, wanted {wanted}")
        await asyncio.sleep(0.05)


async def poll_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    what: str,
    *,
    timeout: float = 30.0,  # noqa: ASYNC109 - a deadline for polling, not a cancel scope
) -> None:
    """Check `predicate` (plain or async) until it holds; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if await result if inspect.isawaitable(result) else result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


async def attempt_rows(conn: psycopg.AsyncConnection[Any], job_id: UUID) -> list[tuple[Any, ...]]:
    cur = await conn.execute(
        "SELECT run, attempt, outcome::text, error FROM exportd.job_attempts "
        "WHERE job_id = %s ORDER BY run, attempt",
        (job_id,),
    )
    return await cur.fetchall()


async def completed_job(
    conn: psycopg.AsyncConnection[Any],
    settings: Settings,
    data: bytes | None = None,
    *,
    path: str | None = None,
    expires_in: timedelta = timedelta(days=30),
) -> tuple[Job, bytes]:
    """A job of alice's, completed, whose package is `data` in the storage root."""
    data = os.urandom(300_000) if data is None else data
    job = await create(conn, "noop", owner="alice")
    relative = path or f"{str(job.job_id)[:2]}/{job.job_id}/r1-a1-test.tar.gz"
    if path is None:
        target = settings.storage_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    await conn.execute(
        "UPDATE exportd.jobs SET status = 'in_progress', started_at = now(), attempts = 1"
        " WHERE job_id = %s",
        (job.job_id,),
    )
    await conn.execute(
        """UPDATE exportd.jobs SET status = 'completed', completed_at = now(),
                  steps_completed = 1, steps_total = 1, progress_percentage = 100,
                  package_path = %s, package_size_bytes = %s, package_sha256 = %s,
                  package_expires_at = now() + %s
            WHERE job_id = %s""",
        (relative, len(data), hashlib.sha256(data).hexdigest(), expires_in, job.job_id),
    )
    return job, data


# A path through the state machine to reach each status from pending.
PATH_TO: dict[str, list[str]] = {
    "pending": [],
    "in_progress": ["in_progress"],
    "cancelling": ["in_progress", "cancelling"],
    "completed": ["in_progress", "completed"],
    "failed": ["in_progress", "failed"],
    "rolled_back": ["in_progress", "failed", "rolled_back"],
    "cancelled": ["cancelled"],
}
