"""The worker in this process against a real database: runs, progress,
retries, rollback, cancellation, packages."""

from __future__ import annotations

import hashlib
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from daemon.actions import cancel_export
from daemon.db import jobs as job_store
from daemon.models import JobStatus
from daemon.storage.local import LocalStorage
from tests.helpers import attempt_rows, create, fast_settings, running_worker, wait_for

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]


def package_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.tar.gz") if ".tmp" not in p.parts)


async def test_job_runs_to_a_verified_package(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    settings = fast_settings(tmp_path)
    async with running_worker(settings, db_url):
        job = await create(aconn, "three-steps", {"pause": 0.0})
        done = await wait_for(aconn, job.job_id)
    assert done.status is JobStatus.COMPLETED
    assert (done.attempts, done.progress_percentage) == (1, 100)
    assert (done.steps_completed, done.steps_total) == (4, 4)
    assert done.package_path is not None and done.completed_at is not None
    assert done.package_expires_at is not None
    assert (done.package_expires_at - done.completed_at).days == settings.package_retention_days
    path = LocalStorage(settings.storage_dir).resolve(done.package_path)
    data = path.read_bytes()
    assert len(data) == done.package_size_bytes
    assert hashlib.sha256(data).hexdigest() == done.package_sha256
    with tarfile.open(path) as tar:
        names = tar.getnames()
        top = names[0].split("/")[0]
        assert top == f"export-three-steps-{done.created_at.date().isoformat()}"
        manifest_file = tar.extractfile(f"{top}/manifest.json")
        assert manifest_file is not None
        manifest = json.loads(manifest_file.read())
        for entry in manifest["files"]:
            member = tar.extractfile(f"{top}/{entry['path']}")
            assert member is not None
            body = member.read()
            assert (len(body), hashlib.sha256(body).hexdigest()) == (entry["size"], entry["sha256"])
        assert all(m.isreg() for m in tar.getmembers())
    assert manifest["job_id"] == str(done.job_id) and manifest["owner_id"] == "alice"
    assert [f["path"] for f in manifest["files"]] == ["first.txt", "second.txt", "third.txt"]
    assert await attempt_rows(aconn, done.job_id) == [(1, 1, "succeeded", None)]
    cur = await aconn.execute(
        "SELECT status::text FROM procrastinate_jobs WHERE id = %s", (done.queue_job_id,)
    )
    assert await cur.fetchone() == ("succeeded",)
    # nothing left behind: no work directory, no temp file
    assert list((settings.storage_dir / ".work").iterdir()) == []
    assert list((settings.storage_dir / ".tmp").iterdir()) == []


async def test_progress_is_announced_and_monotonic(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    listener = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    await listener.execute("LISTEN exportd_job_events")
    events: list[dict[str, Any]] = []
    try:
        async with running_worker(fast_settings(tmp_path), db_url):
            job = await create(aconn, "three-steps", {"pause": 0.3})
            async for note in listener.notifies(timeout=20):
                event = json.loads(note.payload)
                if event["job_id"] == str(job.job_id):
                    events.append(event)
                    if event["status"] == "completed":
                        break
    finally:
        await listener.close()
    percentages = [e["percentage"] for e in events]
    assert percentages == sorted(percentages)
    assert events[-1]["percentage"] == 100 and events[-1]["status"] == "completed"
    assert all(e["percentage"] < 100 for e in events[:-1])
    steps = [e["steps_completed"] for e in events if e["status"] == "in_progress"]
    assert steps == sorted(steps) and len(set(steps)) >= 2
    assert {e["current_step"] for e in events} >= {"Second", "Third"}


async def test_failing_twice_then_succeeding(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    async with running_worker(fast_settings(tmp_path), db_url):
        job = await create(aconn, "flaky", {"fail_times": 2}, max_attempts=3)
        done = await wait_for(aconn, job.job_id)
    assert done.status is JobStatus.COMPLETED
    assert done.attempts == 3 and done.error_message is None
    assert done.result == {"attempt": 3}
    rows = await attempt_rows(aconn, job.job_id)
    assert [r[:3] for r in rows] == [(1, 1, "failed"), (1, 2, "failed"), (1, 3, "succeeded")]
    assert rows[0][3] == "RuntimeError: planned failure 1"


async def test_always_failing_ends_rolled_back(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    async with running_worker(fast_settings(tmp_path), db_url):
        job = await create(aconn, "flaky", {"fail_times": 99}, max_attempts=2)
        done = await wait_for(aconn, job.job_id)
    assert done.status is JobStatus.ROLLED_BACK
    assert done.attempts == 2
    assert done.error_message == "RuntimeError: planned failure 2"
    assert done.package_path is None
    assert [r[2] for r in await attempt_rows(aconn, job.job_id)] == ["failed", "failed"]
    settings = fast_settings(tmp_path)
    assert package_files(settings.storage_dir) == []
    assert list((settings.storage_dir / ".work").iterdir()) == []
    assert list((settings.storage_dir / ".tmp").iterdir()) == []


async def test_failing_rollback_ends_failed(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    async with running_worker(fast_settings(tmp_path), db_url):
        job = await create(aconn, "rollback-fails", max_attempts=1)
        done = await wait_for(aconn, job.job_id, {JobStatus.FAILED})
    assert done.status is JobStatus.FAILED and done.completed_at is not None
    assert done.error_message == "ValueError: step two broke"


async def test_cancelled_pending_job_never_runs(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    job = await create(aconn, "noop", delay_seconds=0.5)
    cancelled = await cancel_export(aconn, job.job_id)
    assert cancelled.status is JobStatus.CANCELLED
    # Due no earlier than the cancelled job and queued behind it (same priority,
    # later id): a worker that has run the marker has passed the cancelled job.
    marker = await create(aconn, "noop", delay_seconds=0.5)
    assert marker.scheduled_at >= job.scheduled_at
    async with running_worker(fast_settings(tmp_path, worker_concurrency=1), db_url):
        await wait_for(aconn, marker.job_id)
    assert (await job_store.get_job(aconn, job.job_id)).status is JobStatus.CANCELLED
    assert await attempt_rows(aconn, job.job_id) == []
    cur = await aconn.execute(
        "SELECT status::text FROM procrastinate_jobs WHERE id = %s", (job.queue_job_id,)
    )
    assert await cur.fetchone() == ("cancelled",)


@pytest.mark.parametrize("kind", ["slow", "busy"])
async def test_running_job_is_cancelled_and_rolled_back(
    aconn: AConn, db_url: str, tmp_path: Path, kind: str
) -> None:
    settings = fast_settings(tmp_path)
    async with running_worker(settings, db_url):
        job = await create(aconn, kind, {"seconds": 30})
        await wait_for(aconn, job.job_id, {JobStatus.IN_PROGRESS})
        started = time.monotonic()
        assert (await cancel_export(aconn, job.job_id)).status is JobStatus.CANCELLING
        done = await wait_for(aconn, job.job_id, {JobStatus.CANCELLED}, timeout=10)
        assert time.monotonic() - started < 5
    assert done.package_path is None
    assert [r[2] for r in await attempt_rows(aconn, job.job_id)] == ["cancelled"]
    assert package_files(settings.storage_dir) == []
    assert list((settings.storage_dir / ".work").iterdir()) == []


async def test_duplicate_execution_leaves_one_consistent_package(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    """The job is rescued (as if its worker were lost) while it still runs: a
    second attempt starts beside the first. Whichever completes, storage ends
    with exactly one package, and it is the one the row describes."""
    settings = fast_settings(tmp_path, worker_concurrency=2)
    async with running_worker(settings, db_url) as daemon:
        job = await create(aconn, "slow", {"seconds": 1.0}, max_attempts=3)
        await wait_for(aconn, job.job_id, {JobStatus.IN_PROGRESS})
        assert await daemon.runtime.rescue(job.queue_job_id or 0, attempt=1) == "retried"
        done = await wait_for(aconn, job.job_id)
        # Leaving the block drains the worker (grace 10 s): the first attempt
        # reaches its (refused) completion before anything below is checked.
    assert done.status is JobStatus.COMPLETED
    files = package_files(settings.storage_dir)
    assert len(files) == 1
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == done.package_sha256
    assert [r[2] for r in await attempt_rows(aconn, job.job_id)] == ["lost", "succeeded"]


async def test_priority_and_delay_are_honoured(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    low = await create(aconn, "noop", priority=-5)
    high = await create(aconn, "noop", priority=5)
    later = await create(aconn, "noop", priority=100, delay_seconds=1.0)
    assert later.scheduled_at > later.created_at
    async with running_worker(fast_settings(tmp_path, worker_concurrency=1), db_url):
        done = [await wait_for(aconn, j.job_id) for j in (low, high, later)]
    started = {j.job_id: j.started_at for j in done}
    assert all(v is not None for v in started.values())
    assert started[high.job_id] < started[low.job_id]  # type: ignore[operator]
    # the delayed job, although of the highest priority, did not start before it was due
    assert started[later.job_id] >= later.scheduled_at  # type: ignore[operator]
