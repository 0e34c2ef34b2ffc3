"""Retention against a real database and a real storage root: package expiry,
job-row and queue-row pruning, the orphan sweep, batching, concurrency,
`exportd cleanup`. The clock is moved with `now`, never waited for."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from daemon.actions import cancel_export, retry_export
from daemon.config import Settings
from daemon.db import downloads
from daemon.maintenance.cleanup import Cleanup, CleanupReport
from daemon.maintenance.schedule import every
from daemon.models import JobStatus
from daemon.storage.local import LocalStorage
from tests.api_helpers import api_client, api_settings, bearer
from tests.e2e.processes import EXPORTD, worker_env
from tests.helpers import (
    PATH_TO,
    completed_job,
    create,
    fast_settings,
    kinds_registry,
    running_worker,
    wait_for,
)

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    return fast_settings(tmp_path, **overrides)


async def cleanup(
    conn: AConn, settings: Settings, *, now: datetime | None = None, **kwargs: Any
) -> CleanupReport:
    batch = kwargs.pop("batch_size", None)
    return await Cleanup(settings, LocalStorage(settings.storage_dir), batch_size=batch).run(
        conn, now=now, **kwargs
    )


async def row(conn: AConn, job_id: UUID, columns: str) -> tuple[Any, ...]:
    cur = await conn.execute(f"SELECT {columns} FROM exportd.jobs WHERE job_id = %s", (job_id,))
    found = await cur.fetchone()
    assert found is not None
    return tuple(found)


async def exists(conn: AConn, job_id: UUID) -> bool:
    cur = await conn.execute("SELECT 1 FROM exportd.jobs WHERE job_id = %s", (job_id,))
    return await cur.fetchone() is not None


def package_file(settings: Settings, relative: str) -> Path:
    return settings.storage_dir / relative


# -- package expiry -------------------------------------------------------------------


async def test_expired_package_deleted_row_kept_api_410_and_reexport(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    settings = api_settings(tmp_path)
    old, _ = await completed_job(aconn, settings, expires_in=-DAY)
    fresh, fresh_data = await completed_job(aconn, settings, expires_in=DAY)
    (old_path, old_expiry, sha, size) = await row(
        aconn, old.job_id, "package_path, package_expires_at, package_sha256, package_size_bytes"
    )
    await aconn.execute(
        "UPDATE exportd.jobs SET download_count = 4 WHERE job_id = %s", (old.job_id,)
    )
    report = await cleanup(aconn, settings)
    assert (report.packages_deleted, report.bytes_freed, report.failures) == (1, size, 0)
    assert not package_file(settings, old_path).exists()
    assert not package_file(settings, old_path).parent.exists()  # its directory too
    path, deleted_at, kept_sha, kept_size, count = await row(
        aconn,
        old.job_id,
        "package_path, package_deleted_at, package_sha256, package_size_bytes, download_count",
    )
    assert path is None and deleted_at is not None
    assert (kept_sha, kept_size, count) == (sha, size, 4)
    (fresh_path,) = await row(aconn, fresh.job_id, "package_path")
    assert package_file(settings, fresh_path).read_bytes() == fresh_data
    async with api_client(settings, db_url) as client:
        gone = await client.get(f"/api/v1/jobs/{old.job_id}/download", headers=bearer())
        job = (await client.get(f"/api/v1/jobs/{old.job_id}", headers=bearer())).json()["data"]
    assert gone.status_code == 410 and gone.json()["expired_at"] is not None
    assert job["package"]["deleted_at"] is not None and job["package"]["sha256"] == sha

    # Re-export: a new run, a new package, a new expiry.
    await aconn.execute(
        "UPDATE exportd.jobs SET kind = 'blob', params = '{\"size\": 1000}' WHERE job_id = %s",
        (old.job_id,),
    )
    await retry_export(aconn, kinds_registry(), old.job_id)
    async with running_worker(settings, db_url):
        done = await wait_for(aconn, old.job_id)
    assert done.status is JobStatus.COMPLETED and done.package_path is not None
    assert done.package_deleted_at is None
    assert done.package_expires_at is not None and done.package_expires_at > old_expiry + DAY
    assert package_file(settings, done.package_path).exists()


async def test_future_expiry_untouched_and_boundary(aconn: AConn, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    job, _ = await completed_job(aconn, settings, expires_in=HOUR)
    (expires_at,) = await row(aconn, job.job_id, "package_expires_at")
    before = await cleanup(aconn, settings, now=expires_at - timedelta(seconds=1))
    assert before.packages_deleted == 0
    at = await cleanup(aconn, settings, now=expires_at)  # due at its expiry time
    assert at.packages_deleted == 1


async def test_missing_file_is_fine_and_an_undeletable_one_is_retried(
    aconn: AConn, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    missing, _ = await completed_job(aconn, settings, expires_in=-DAY)
    stuck, _ = await completed_job(aconn, settings, expires_in=-DAY)
    normal, _ = await completed_job(aconn, settings, expires_in=-DAY)
    (missing_path,) = await row(aconn, missing.job_id, "package_path")
    (stuck_path,) = await row(aconn, stuck.job_id, "package_path")
    (normal_path,) = await row(aconn, normal.job_id, "package_path")
    package_file(settings, missing_path).unlink()
    # A file that cannot be unlinked (root ignores permissions, so: a
    # non-empty directory where the package should be).
    target = package_file(settings, stuck_path)
    target.unlink()
    target.mkdir()
    (target / "inside").write_bytes(b"x" * 10)
    report = await cleanup(aconn, settings)
    assert (report.packages_deleted, report.failures) == (2, 1)
    assert not package_file(settings, normal_path).exists()
    assert target.exists()
    for job in (missing, stuck, normal):
        assert (await row(aconn, job.job_id, "package_path"))[0] is None
    # Next tick, once the grace period passed: the sweep removes it.
    later = datetime.now(UTC) + timedelta(seconds=settings.orphan_grace_seconds + 60)
    again = await cleanup(aconn, settings, now=later)
    assert again.orphans_removed >= 1 and again.failures == 0
    assert not target.exists()


# -- job-row retention -------------------------------------------------------------------


async def in_state(conn: AConn, status: str, *, ended: datetime | None) -> UUID:
    """A job moved through allowed transitions to `status`, ended at `ended`."""
    job = await create(conn, "noop", owner="alice")
    for step in PATH_TO[status]:
        await conn.execute(
            "UPDATE exportd.jobs SET status = %s WHERE job_id = %s", (step, job.job_id)
        )
    await conn.execute(
        "UPDATE exportd.jobs SET completed_at = %s WHERE job_id = %s", (ended, job.job_id)
    )
    return job.job_id


async def test_job_retention_by_state_and_boundary(aconn: AConn, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, job_retention_days=90)
    now = datetime(2027, 6, 1, tzinfo=UTC)
    old = now - timedelta(days=91)
    final = ["completed", "failed", "rolled_back", "cancelled"]
    doomed = {s: await in_state(aconn, s, ended=old) for s in final}
    active = {
        s: await in_state(aconn, s, ended=old) for s in ("pending", "in_progress", "cancelling")
    }
    recent = {s: await in_state(aconn, s, ended=now - timedelta(days=89)) for s in final}
    at_limit = await in_state(aconn, "cancelled", ended=now - timedelta(days=90))
    past_limit = await in_state(aconn, "cancelled", ended=now - timedelta(days=90, seconds=1))
    # Finished long ago, but its package is kept until after `now`.
    live, _ = await completed_job(aconn, settings, expires_in=now - datetime.now(UTC) + DAY)
    await aconn.execute(
        "UPDATE exportd.jobs SET completed_at = %s WHERE job_id = %s", (old, live.job_id)
    )
    victim = doomed["completed"]
    await aconn.execute(
        "INSERT INTO exportd.job_attempts (job_id, run, attempt, worker, started_at)"
        " VALUES (%s, 1, 1, 'w', %s)",
        (victim, old),
    )
    await aconn.execute(
        "INSERT INTO exportd.downloads (job_id, subject, status_code) VALUES (%s, 'alice', 200)",
        (victim,),
    )
    report = await cleanup(aconn, settings, now=now)
    assert report.jobs_pruned == len(doomed) + 1
    for job_id in doomed.values():
        assert not await exists(aconn, job_id)
    for job_id in [*active.values(), *recent.values(), at_limit, live.job_id]:
        assert await exists(aconn, job_id)
    assert not await exists(aconn, past_limit)
    for table in ("job_attempts", "downloads"):
        cur = await aconn.execute(
            f"SELECT count(*) FROM exportd.{table} WHERE job_id = %s", (victim,)
        )
        assert await cur.fetchone() == (0,)


async def test_job_retention_zero_keeps_everything(aconn: AConn, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, job_retention_days=0)
    job_id = await in_state(aconn, "cancelled", ended=datetime(2000, 1, 1, tzinfo=UTC))
    report = await cleanup(aconn, settings)
    assert report.jobs_pruned == 0 and await exists(aconn, job_id)


# -- queue pruning -------------------------------------------------------------------------


async def test_finished_queue_rows_are_pruned_after_their_age(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, queue_retention_hours=24)
    done = [await create(aconn, "noop") for _ in range(3)]
    async with running_worker(settings, db_url):
        for job in done:
            await wait_for(aconn, job.job_id)
        waiting = await create(aconn, "noop", delay_seconds=3600)
    cancelled = await create(aconn, "noop")
    await cancel_export(aconn, cancelled.job_id)

    async def queue_rows() -> int:
        cur = await aconn.execute("SELECT count(*) FROM procrastinate_jobs")
        found = await cur.fetchone()
        assert found is not None
        return int(found[0])

    total = await queue_rows()
    today = await cleanup(aconn, settings)
    assert today.queue_rows_pruned == 0
    later = await cleanup(aconn, settings, now=datetime.now(UTC) + timedelta(hours=25))
    # The three exports, the cancelled one and the periodic tasks' finished
    # ticks go; the delayed job (todo) and rows a periodic task points at stay.
    cur = await aconn.execute(
        "SELECT count(*) FROM procrastinate_jobs q WHERE q.status = 'todo'"
        " OR EXISTS (SELECT 1 FROM procrastinate_periodic_defers d WHERE d.job_id = q.id)"
    )
    kept = await cur.fetchone()
    assert kept is not None
    assert later.queue_rows_pruned == total - int(kept[0]) >= 4
    assert await queue_rows() == int(kept[0])
    cur = await aconn.execute(
        "SELECT status::text FROM exportd.jobs WHERE job_id = %s", (waiting.job_id,)
    )
    assert await cur.fetchone() == ("pending",)
    cur = await aconn.execute("SELECT count(*) FROM exportd.jobs")
    assert await cur.fetchone() == (5,)  # the history stays


# -- orphan sweep ---------------------------------------------------------------------------


def age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past), follow_symlinks=False)


async def test_orphan_sweep(aconn: AConn, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, orphan_grace_seconds=3600)
    root = settings.storage_dir
    referenced, _ = await completed_job(aconn, settings, expires_in=DAY)
    (referenced_path,) = await row(aconn, referenced.job_id, "package_path")
    age(root / referenced_path, 7200)
    old_orphan = root / "ab" / "abababab-0000-0000-0000-000000000000" / "r1-a1-x.tar.gz"
    old_orphan.parent.mkdir(parents=True)
    old_orphan.write_bytes(b"o" * 100)
    age(old_orphan, 7200)
    young_orphan = root / "cd" / "cdcdcdcd-0000-0000-0000-000000000000" / "r1-a1-y.tar.gz"
    young_orphan.parent.mkdir(parents=True)
    young_orphan.write_bytes(b"y")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    link = root / "ef" / "link"
    link.parent.mkdir()
    link.symlink_to(outside)
    age(link, 7200)
    file_link = root / "ef" / "file-link.tar.gz"
    file_link.symlink_to(outside / "precious.txt")
    age(file_link, 7200)
    # Temp files and work directories: of a finished job → removed; of a
    # running job → kept however old.
    running = await in_state(aconn, "in_progress", ended=None)
    finished = await in_state(aconn, "cancelled", ended=datetime.now(UTC))
    (root / ".tmp").mkdir(exist_ok=True)
    (root / ".work").mkdir(exist_ok=True)
    stale_tmp = root / ".tmp" / f"{finished}-r1-a1-ab12.tar.gz.part"
    live_tmp = root / ".tmp" / f"{running}-r1-a1-cd34.tar.gz.part"
    stale_work = root / ".work" / f"{finished}-r1-a1-ef56"
    live_work = root / ".work" / f"{running}-r1-a1-0a0b"
    for path in (stale_tmp, live_tmp):
        path.write_bytes(b"t" * 10)
    for path in (stale_work, live_work):
        path.mkdir()
        (path / "rows.csv").write_bytes(b"w" * 20)
    for path in (stale_tmp, live_tmp, stale_work, live_work):
        age(path, 7200)

    dry = await cleanup(aconn, settings, dry_run=True)
    assert old_orphan.exists() and link.is_symlink() and stale_work.exists()
    planned = {what for action, what in dry.planned if action == "remove orphan"}

    report = await cleanup(aconn, settings)
    assert not old_orphan.exists() and not old_orphan.parent.exists()
    assert young_orphan.exists()
    assert (root / referenced_path).exists()
    assert not link.is_symlink() and not file_link.is_symlink()
    assert (outside / "precious.txt").read_text() == "keep me"
    assert not stale_tmp.exists() and not stale_work.exists()
    assert live_tmp.exists() and live_work.exists()
    assert report.orphans_removed == 5 == dry.orphans_removed == len(planned)
    assert report.bytes_freed == 100 + 10 + 20


# -- batches, concurrency, crash --------------------------------------------------------------


async def many_expired(conn: AConn, count: int) -> None:
    """`count` completed jobs whose (non-existent) packages expired yesterday."""
    await conn.execute(
        "INSERT INTO exportd.jobs (kind, owner_id)"
        " SELECT 'noop', 'bulk' FROM generate_series(1, %s)",
        (count,),
    )
    await conn.execute(
        "UPDATE exportd.jobs SET status = 'in_progress', started_at = now() WHERE owner_id = 'bulk'"
    )
    await conn.execute(
        """UPDATE exportd.jobs
              SET status = 'completed', completed_at = now(),
                  package_path = 'bu/' || job_id || '/r1-a1-bulk.tar.gz',
                  package_size_bytes = 10, package_sha256 = repeat('a', 64),
                  package_expires_at = now() - interval '1 day'
            WHERE owner_id = 'bulk'"""
    )


async def test_sweep_leaves_the_event_loop_running(aconn: AConn, tmp_path: Path) -> None:
    """A worker runs cleanup on the loop that runs its exports: walking 20 K
    files (an lstat and an unlink each) must happen in a thread, not stall every
    job and heartbeat of the process meanwhile."""
    settings = settings_for(tmp_path, orphan_grace_seconds=0)
    root = settings.storage_dir
    for i in range(20_000):
        folder = root / f"{i % 256:02x}" / f"{i:08x}-0000-0000-0000-000000000000"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "r1-a1-x.tar.gz").write_bytes(b"o")
    gaps: list[float] = []
    sweeping = True

    async def ticker() -> None:
        last = time.monotonic()
        while sweeping:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticks = asyncio.create_task(ticker())
    report = await cleanup(aconn, settings)
    sweeping = False
    await ticks
    assert report.orphans_removed == 20_000 and not any(root.iterdir())
    # In the loop, the sweep stalled it for seconds; in a thread
    # the longest gap is a scheduling hiccup. Generous bound for noisy machines.
    assert max(gaps) < 0.5, f"event loop stalled {max(gaps):.2f} s during the sweep"


async def live_packages(conn: AConn) -> int:
    cur = await conn.execute("SELECT count(*) FROM exportd.jobs WHERE package_path IS NOT NULL")
    found = await cur.fetchone()
    assert found is not None
    return int(found[0])


async def test_two_cleanups_at_once_equal_one(db_url: str, aconn: AConn, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    await many_expired(aconn, 1200)
    async with (
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as one,
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as two,
    ):
        first, second = await asyncio.gather(
            cleanup(one, settings, batch_size=100), cleanup(two, settings, batch_size=100)
        )
    assert first.packages_deleted + second.packages_deleted == 1200
    assert first.failures == second.failures == 0
    assert await live_packages(aconn) == 0
    cur = await aconn.execute(
        "SELECT count(*) FROM exportd.jobs WHERE package_deleted_at IS NOT NULL"
    )
    assert await cur.fetchone() == (1200,)


async def test_interrupted_run_then_rerun_finishes(aconn: AConn, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    await many_expired(aconn, 1000)
    partial = await cleanup(aconn, settings, batch_size=300, max_batches=1)
    assert partial.packages_deleted == 300 and await live_packages(aconn) == 700
    rest = await cleanup(aconn, settings, batch_size=300)
    assert rest.packages_deleted == 700 and await live_packages(aconn) == 0
    nothing = await cleanup(aconn, settings, batch_size=300)
    assert nothing.packages_deleted == 0


async def next_xid(conn: AConn) -> int:
    cur = await conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
    found = await cur.fetchone()
    assert found is not None
    return int(found[0])


async def test_hundred_thousand_expired_in_bounded_batches(aconn: AConn, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, cleanup_batch_size=500, job_retention_days=0)
    await many_expired(aconn, 100_000)
    before = await next_xid(aconn)
    started = time.monotonic()
    report = await cleanup(aconn, settings)
    seconds = time.monotonic() - started
    writes = await next_xid(aconn) - before
    print(f"expired 100000 packages in {seconds:.1f} s ({report.batches} batches)")
    assert report.packages_deleted == 100_000 and await live_packages(aconn) == 0
    # 200 full batches and the empty one that ends expiry; one for queue
    # pruning, one for open download rows; every batch its own transaction,
    # each at most 500 rows.
    assert report.batches == 200 + 1 + 1 + 1
    # Transaction ids are the server's, not this database's: a process an
    # earlier test left stopping may still take one or two. One write per
    # batch more would be 200 more.
    assert writes <= report.batches + 3


# -- the periodic task, the command ---------------------------------------------------------


def test_cleanup_cron() -> None:
    assert every(1) == "* * * * * */1"
    assert every(30) == "* * * * * */30"
    assert every(900) == "*/15 * * * *"
    assert every(7200) == "0 */2 * * *"


async def test_a_worker_runs_cleanup_periodically(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, cleanup_interval_seconds=1)
    job, _ = await completed_job(aconn, settings, expires_in=-DAY)
    (path,) = await row(aconn, job.job_id, "package_path")
    async with running_worker(settings, db_url):
        deadline = time.monotonic() + 20
        while (await row(aconn, job.job_id, "package_path"))[0] is not None:
            assert time.monotonic() < deadline, "no cleanup tick ran"
            await asyncio.sleep(0.2)
    assert not package_file(settings, path).exists()


async def test_cleanup_command_dry_run_then_real(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    job, _ = await completed_job(aconn, settings, expires_in=-DAY)
    (path,) = await row(aconn, job.job_id, "package_path")
    orphan = settings.storage_dir / "zz" / "stray.tar.gz"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"s")
    age(orphan, 2 * 3600)
    env = worker_env(db_url, settings.storage_dir, COLUMNS="200")

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [EXPORTD, "cleanup", *args], env=env, capture_output=True, text=True, timeout=60
        )

    dry = command("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run" in dry.stdout and f"job {job.job_id}" in dry.stdout
    assert "zz/stray.tar.gz" in dry.stdout
    assert package_file(settings, path).exists() and orphan.exists()
    assert (await row(aconn, job.job_id, "package_path"))[0] == path
    real = command()
    assert real.returncode == 0, real.stderr
    lines = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in real.stdout.splitlines()
        if line.count("│") == 3
    }
    assert lines["expired packages"] == "1" and lines["orphan files"] == "1"
    assert not package_file(settings, path).exists() and not orphan.exists()


async def test_work_of_a_failed_job_is_swept_unless_it_still_rolls_back(
    aconn: AConn, tmp_path: Path
) -> None:
    """`failed` is final once its queue entry is closed (found by the chaos soak:
    work directories of jobs failed by lost attempts were kept forever)."""
    settings = settings_for(tmp_path, orphan_grace_seconds=0)
    settled = await in_state(aconn, "failed", ended=datetime.now(UTC))
    rolling_back = await in_state(aconn, "failed", ended=datetime.now(UTC))
    await aconn.execute(
        "UPDATE procrastinate_jobs SET status = 'failed' WHERE id ="
        " (SELECT queue_job_id FROM exportd.jobs WHERE job_id = %s)",
        (settled,),
    )
    await aconn.execute(
        "UPDATE procrastinate_jobs SET status = 'doing' WHERE id ="
        " (SELECT queue_job_id FROM exportd.jobs WHERE job_id = %s)",
        (rolling_back,),
    )
    work = settings.storage_dir / ".work"
    work.mkdir(parents=True)
    for job_id in (settled, rolling_back):
        (work / f"{job_id}-r1-a1-0000").mkdir()
    report = await cleanup(aconn, settings, now=datetime.now(UTC) + timedelta(seconds=5))
    assert report.orphans_removed == 1
    assert not (work / f"{settled}-r1-a1-0000").exists()
    assert (work / f"{rolling_back}-r1-a1-0000").exists()


# -- download rows left open ------------------------------------------------------------


async def test_download_rows_left_open_by_a_dead_web_process_are_closed(
    aconn: AConn, tmp_path: Path
) -> None:
    """A SIGKILLed web process never closes its download rows (finished_at NULL
    for ever): the cleanup closes those open longer than a day, as not
    completed, counting nothing on the job."""
    settings = settings_for(tmp_path)
    job, _ = await completed_job(aconn, settings)
    t0 = datetime.now(UTC)

    async def start(at: datetime) -> int:
        return await downloads.start_download(
            aconn, job.job_id, subject="alice", range_header=None, status_code=200, now=at
        )

    stale = await start(t0)
    recent = await start(t0 + 2 * HOUR)  # open 23 h at the cleanup below: in flight
    finished = await start(t0)
    await downloads.finish_download(aconn, finished, bytes_sent=10, completed=False, now=t0)
    now = t0 + DAY + HOUR

    plan = await cleanup(aconn, settings, now=now, dry_run=True)
    assert plan.downloads_closed == 1
    assert {
        r.download_id
        for r in await downloads.downloads_of_job(aconn, job.job_id)
        if r.finished_at is None
    } == {stale, recent}

    report = await cleanup(aconn, settings, now=now)
    assert report.downloads_closed == 1 and report.failures == 0
    rows = {r.download_id: r for r in await downloads.downloads_of_job(aconn, job.job_id)}
    assert (rows[stale].finished_at, rows[stale].completed, rows[stale].bytes_sent) == (
        now,
        False,
        0,
    )
    assert rows[recent].finished_at is None
    assert rows[finished].finished_at == t0 and rows[finished].bytes_sent == 10
    assert await row(aconn, job.job_id, "download_count") == (0,)
    # Nothing left to close: the next run closes nothing.
    assert (await cleanup(aconn, settings, now=now)).downloads_closed == 0


async def test_a_response_closed_by_the_cleanup_still_records_its_real_end(
    aconn: AConn, tmp_path: Path
) -> None:
    """A response that really streamed for more than a day is closed by the
    cleanup; when it ends, its own figures replace the cleanup's."""
    settings = settings_for(tmp_path)
    job, data = await completed_job(aconn, settings)
    t0 = datetime.now(UTC)
    download = await downloads.start_download(
        aconn, job.job_id, subject="alice", range_header=None, status_code=200, now=t0
    )
    assert (await cleanup(aconn, settings, now=t0 + 2 * DAY)).downloads_closed == 1
    end = t0 + 2 * DAY + HOUR
    await downloads.finish_download(aconn, download, bytes_sent=len(data), completed=True, now=end)
    (only,) = await downloads.downloads_of_job(aconn, job.job_id)
    assert (only.finished_at, only.completed, only.bytes_sent) == (end, True, len(data))
    assert await row(aconn, job.job_id, "download_count") == (1,)
