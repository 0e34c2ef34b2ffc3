"""A cancellation racing the completion never leaves a package behind.

procrastinate's abort cancels the attempt's asyncio task wherever it waits:
while the package is being moved into storage, or while the completion
statement runs. Whenever the completion did not commit, the package must be
gone when the attempt ends — not left for the orphan sweep — and it must
stay when the row committed (the row points to it).

Each race is reproduced deterministically: the cancellation is delivered at
exactly the point in question (a publish held after its move until the
abort arrived; a `complete` that cancels its caller while it runs)."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from daemon.actions import cancel_export
from daemon.kinds.context import ExportContext, JobCancelled, JobInfo
from daemon.models import JobStatus
from daemon.storage.backend import Attempt
from daemon.storage.local import LocalStorage
from daemon.worker.pipeline import Published, execute
from tests.helpers import (
    attempt_rows,
    create,
    fast_settings,
    kinds_registry,
    poll_until,
    running_worker,
    wait_for,
)

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]
Complete = Callable[[Published], Awaitable[bool]]


def package_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.tar.gz") if ".tmp" not in p.parts)


class HeldPublishStorage(LocalStorage):
    """Real storage whose publishing thread, once the file is in place, waits
    for the test's go-ahead (so an abort can land exactly there)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.published = threading.Event()
        self.go_on = threading.Event()

    def publish(self, temp: Path, relative: str) -> Path:
        target = super().publish(temp, relative)
        self.published.set()
        if not self.go_on.wait(timeout=30):
            raise TimeoutError("the test never released the publish")
        return target


async def test_an_abort_while_publishing_leaves_no_package(
    aconn: AConn, db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="procrastinate.worker")
    settings = fast_settings(tmp_path)
    storage = HeldPublishStorage(settings.storage_dir)
    async with running_worker(settings, db_url) as daemon:
        daemon.runtime.storage = storage
        job = await create(aconn, "noop")
        assert await asyncio.to_thread(storage.published.wait, 30), "never published"
        assert package_files(settings.storage_dir) != []
        assert (await cancel_export(aconn, job.job_id)).status is JobStatus.CANCELLING

        def aborted() -> bool:
            return any(getattr(r, "action", None) == "abort_job" for r in caplog.records)

        await poll_until(aborted, "procrastinate cancelled the attempt's task")
        storage.go_on.set()
        done = await wait_for(aconn, job.job_id)
    assert done.status is JobStatus.CANCELLED and done.package_path is None
    assert [r[2] for r in await attempt_rows(aconn, job.job_id)] == ["cancelled"]
    assert package_files(settings.storage_dir) == []


class Attempted:
    """One pipeline run outside a worker: the `complete` callback is the test's."""

    def __init__(self, tmp_path: Path) -> None:
        self.storage = LocalStorage(tmp_path / "packages")
        self.storage.ensure()
        self.kind = kinds_registry().get("three-steps")
        info = JobInfo(
            job_id=uuid.uuid4(),
            kind=self.kind.name,
            owner_id="alice",
            params=self.kind.validate_params({}),
            run=1,
            attempt=1,
            created_at=datetime.now(UTC),
        )
        work_dir = self.storage.make_work_dir(Attempt(info.job_id, 1, 1))
        self.ctx = ExportContext(info, self.kind, work_dir, self._running, progress_interval=0)
        self.seen: list[Published] = []

    async def _running(
        self, job_id: uuid.UUID, done: int, total: int, current_step: str | None, percentage: int
    ) -> JobStatus | None:
        return JobStatus.IN_PROGRESS  # the progress sink of a job nobody cancels

    async def run(self, complete: Complete) -> Published:
        async def recording(published: Published) -> bool:
            self.seen.append(published)
            return await complete(published)

        return await execute(self.kind, self.ctx, self.storage, recording)

    def packages(self) -> list[Path]:
        return package_files(self.storage.root)


def aborting(attempt: list[asyncio.Task[Any]], *, commits: bool) -> Complete:
    """A completion during which the attempt's task (`attempt[0]`, set once
    created) is cancelled — the abort — and whose statement then commits or
    is refused."""

    async def complete(published: Published) -> bool:
        attempt[0].cancel()
        await asyncio.sleep(0)  # the statement's round trip: the abort lands here
        return commits

    return complete


async def test_an_abort_during_a_refused_completion_deletes_the_package(tmp_path: Path) -> None:
    run = Attempted(tmp_path)
    attempt: list[asyncio.Task[Any]] = []
    attempt.append(asyncio.create_task(run.run(aborting(attempt, commits=False))))
    with pytest.raises(asyncio.CancelledError):
        await attempt[0]
    assert len(run.seen) == 1  # the completion was reached, and refused
    assert run.packages() == []
    assert not run.ctx.work_dir.exists()


async def test_an_abort_during_a_committed_completion_keeps_the_package(tmp_path: Path) -> None:
    run = Attempted(tmp_path)
    attempt: list[asyncio.Task[Any]] = []
    attempt.append(asyncio.create_task(run.run(aborting(attempt, commits=True))))
    with pytest.raises(asyncio.CancelledError):
        await attempt[0]
    (published,) = run.seen
    assert [run.storage.relative(p) for p in run.packages()] == [published.relative_path]


async def test_a_refused_completion_deletes_the_package(tmp_path: Path) -> None:
    run = Attempted(tmp_path)

    async def refused(published: Published) -> bool:
        return False

    with pytest.raises(JobCancelled):
        await run.run(refused)
    assert len(run.seen) == 1 and run.packages() == []


async def test_a_completion_of_unknown_outcome_keeps_the_package(tmp_path: Path) -> None:
    """The statement may have committed before the error: the row may point to
    the file, so it stays (an uncommitted one is removed by the orphan sweep)."""
    run = Attempted(tmp_path)

    async def lost(published: Published) -> bool:
        raise ConnectionError("connection lost after the statement was sent")

    with pytest.raises(ConnectionError):
        await run.run(lost)
    (published,) = run.seen
    assert [run.storage.relative(p) for p in run.packages()] == [published.relative_path]
