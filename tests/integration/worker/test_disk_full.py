"""A full disk (DESIGN §14), on a real tmpfs of a few MiB as the storage root:

- an export bigger than the volume fails its attempt with `OSError: storage
  full` — whether the COPY output or the package filled it — leaves no
  partial file, and is retried with backoff; the worker keeps running and
  its next export completes on the same volume; once the volume is enlarged
  the retry completes;
- below `EXPORTD_MIN_FREE_BYTES` a worker starts no export (the job stays
  pending while the worker visibly polls), and starts it by itself once
  space is back.

The worker runs in this process against a real database.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast
from uuid import UUID, uuid4

import psycopg
import pytest

from daemon.kinds.exports_file import load_exports_file
from daemon.kinds.registry import KindRegistry
from daemon.models import Job, JobStatus
from daemon.storage.backend import Attempt
from daemon.storage.layout import TMP_DIR, WORK_DIR
from daemon.storage.local import LocalStorage
from daemon.tasks import DEFAULT_QUEUE
from daemon.worker.fair_fetch import FairJobManager
from tests.helpers import (
    attempt_rows,
    create,
    fast_settings,
    kinds_registry,
    poll_until,
    running_worker,
    wait_for,
)
from tests.s3_server import SeaweedServer
from tests.s3_settings import PREFIX, object_keys, pending_uploads, s3_settings
from tests.tmpfs import MiB, files_under, free_bytes, mounted_tmpfs, resize

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]

STORAGE_FULL = "OSError: storage full"
# An automatic retry this far away never comes by itself during the test:
# the test moves the job's clock instead, once the volume was enlarged.
LONG_BACKOFF: dict[str, Any] = {"retry_base_seconds": 600.0, "retry_max_seconds": 600.0}


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "volume", 4) as path:
        yield path


def registry_with(tmp_path: Path, db_url: str) -> KindRegistry:
    """`bigsql`: ~15 MB of CSV (fills the volume while COPY writes it);
    `bigfiles`: one 6 MiB file of random bytes read from another volume
    (the work directory stays empty: the package fills it)."""
    root = tmp_path / "files" / "alice"
    root.mkdir(parents=True)
    (root / "random.bin").write_bytes(os.urandom(6 * MiB))
    exports = tmp_path / "exports.toml"
    exports.write_text(
        "[exports.bigsql]\n"
        "[[exports.bigsql.queries]]\n"
        'name = "rows"\n'
        "sql = '''SELECT g, md5(g::text) || md5((g + 1)::text) AS h"
        " FROM generate_series(1, 200000) AS g'''\n"
        "[exports.bigfiles]\n"
        'type = "files"\n'
        f'root = "{tmp_path}/files/{{owner_id}}"\n'
    )
    registry = kinds_registry()
    for kind in load_exports_file(exports, default_database_url=db_url):
        registry.register(kind)
    return registry


async def first_failure(aconn: AConn, job_id: UUID) -> Job:
    """The job once its first attempt failed and it waits for its retry."""

    async def first_attempt_failed() -> bool:
        return [r[2] for r in await attempt_rows(aconn, job_id)] == ["failed"]

    await poll_until(first_attempt_failed, "the first attempt failing")
    return await wait_for(aconn, job_id, {JobStatus.PENDING})


async def retry_due_now(aconn: AConn, job_id: UUID) -> None:
    """Move the clock of the job's scheduled retry: it is due at once."""
    await aconn.execute(
        "UPDATE procrastinate_jobs SET scheduled_at = now() WHERE id = "
        "(SELECT queue_job_id FROM exportd.jobs WHERE job_id = %s)",
        (job_id,),
    )


async def retry_delay_seconds(aconn: AConn, job_id: UUID) -> float:
    cur = await aconn.execute(
        "SELECT extract(epoch FROM q.scheduled_at - now()) FROM procrastinate_jobs AS q "
        "JOIN exportd.jobs AS j ON j.queue_job_id = q.id WHERE j.job_id = %s",
        (job_id,),
    )
    row = await cur.fetchone()
    assert row is not None and row[0] is not None
    return float(row[0])


@pytest.mark.parametrize("kind", ["bigsql", "bigfiles"])
async def test_an_export_bigger_than_the_volume_fails_cleanly_and_its_retry_completes(
    aconn: AConn, db_url: str, tmp_path: Path, volume: Path, kind: str
) -> None:
    settings = fast_settings(tmp_path, storage_dir=volume, min_free_bytes=0, **LONG_BACKOFF)
    registry = registry_with(tmp_path, db_url)
    async with running_worker(settings, db_url, registry):
        job = await create(aconn, kind, registry=registry, max_attempts=3)
        failed = await first_failure(aconn, job.job_id)
        # The owner reads why, with no server path; a full disk may clear: retried.
        assert failed.error_message == STORAGE_FULL
        assert [r[3] for r in await attempt_rows(aconn, job.job_id)] == [STORAGE_FULL]
        assert await retry_delay_seconds(aconn, job.job_id) > 60  # with backoff
        # Nothing of the attempt is left: no work file, no temp package, no
        # package. (A run's checkpoints of finished steps are kept for its
        # retry by design: they are no partial files.)
        assert files_under(volume / WORK_DIR) == []
        assert files_under(volume / TMP_DIR) == []
        packages = [p for p in files_under(volume) if p.relative_to(volume).parts[0][0] != "."]
        assert packages == []
        assert free_bytes(volume) > 3 * MiB

        # The worker runs on: its next export completes on the same volume.
        small = await create(aconn, "noop", registry=registry)
        done = await wait_for(aconn, small.job_id)
        assert done.status is JobStatus.COMPLETED

        resize(volume, 64)
        await retry_due_now(aconn, job.job_id)
        retried = await wait_for(aconn, job.job_id)
    assert retried.status is JobStatus.COMPLETED, retried.error_message
    assert retried.attempts == 2
    assert retried.package_path is not None and (volume / retried.package_path).is_file()
    assert retried.package_size_bytes is not None
    assert retried.package_size_bytes > 4 * MiB  # bigger than the volume was
    outcomes = [r[2:] for r in await attempt_rows(aconn, job.job_id)]
    assert outcomes == [("failed", STORAGE_FULL), ("succeeded", None)]


async def test_with_s3_a_full_work_volume_fails_cleanly_and_its_retry_completes(
    aconn: AConn,
    db_url: str,
    tmp_path: Path,
    volume: Path,
    s3_server: SeaweedServer,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The package goes to the bucket; the query's rows to this host's work
    volume, which fills up."""
    settings = s3_settings(
        tmp_path, s3_server, s3_bucket, monkeypatch, work_dir=volume, min_free_bytes=0
    )
    settings = replace(settings, retry_base_seconds=600.0, retry_max_seconds=600.0)
    registry = registry_with(tmp_path, db_url)
    async with running_worker(settings, db_url, registry):
        job = await create(aconn, "bigsql", registry=registry, max_attempts=3)
        failed = await first_failure(aconn, job.job_id)
        assert failed.error_message == STORAGE_FULL
        assert files_under(volume / WORK_DIR) == []
        assert object_keys(s3_server, s3_bucket) == []
        assert pending_uploads(s3_server, s3_bucket) == []
        resize(volume, 64)
        await retry_due_now(aconn, job.job_id)
        retried = await wait_for(aconn, job.job_id)
    assert retried.status is JobStatus.COMPLETED, retried.error_message
    assert object_keys(s3_server, s3_bucket) == [f"{PREFIX}/{retried.package_path}"]


async def test_below_the_free_space_floor_jobs_wait_until_space_is_back(
    aconn: AConn,
    db_url: str,
    tmp_path: Path,
    volume: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="daemon.worker.free_space")
    settings = fast_settings(tmp_path, storage_dir=volume, min_free_bytes=8 * MiB)
    async with running_worker(settings, db_url, queues=[DEFAULT_QUEUE]) as worker:
        floor = cast(FairJobManager, worker.runtime.app.job_manager).free_space
        job = await create(aconn, "noop")
        held = floor.held

        def warned() -> list[logging.LogRecord]:
            return [
                r
                for r in caplog.records
                if r.levelno == logging.WARNING and "EXPORTD_MIN_FREE_BYTES" in r.getMessage()
            ]

        # The worker polls (and holds the job back) twice after the job was
        # created, and says why in its log.
        await poll_until(lambda: floor.held >= held + 2 and bool(warned()), "two held fetches")
        waiting = await wait_for(aconn, job.job_id, {JobStatus.PENDING})
        assert waiting.attempts == 0 and waiting.started_at is None
        assert await attempt_rows(aconn, job.job_id) == []
        assert len(warned()) == 1  # once a minute, not at every poll
        assert "storage volume" in warned()[0].getMessage()

        resize(volume, 64)
        done = await wait_for(aconn, job.job_id)
    assert done.status is JobStatus.COMPLETED
    assert any("exports start again" in r.getMessage() for r in caplog.records)


def fill(volume: Path) -> Path:
    """Fill the volume to its last byte; the file that holds the space."""
    ballast = volume / "ballast"
    ballast.write_bytes(b"\0" * free_bytes(volume))
    assert free_bytes(volume) == 0
    return ballast


async def test_a_package_writer_on_a_full_volume_leaves_no_temp_file(volume: Path) -> None:
    """The last bytes of a package sit in the file's buffer: publishing
    flushes them into a full volume, and discarding closes the file — which
    flushes, and fails, again. The temp file goes all the same."""
    storage = LocalStorage(volume)
    storage.ensure()
    fill(volume)
    writer = storage.open_writer(Attempt(uuid4(), 1, 1))
    writer.write(b"the end of a package")
    with pytest.raises(OSError, match="No space left") as info:
        writer.publish()
    assert info.value.errno == errno.ENOSPC
    writer.discard()  # never raises
    assert files_under(volume / TMP_DIR) == []
    assert storage.size(writer.relative) is None
