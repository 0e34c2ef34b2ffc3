"""The real `exportd worker` on a full disk (DESIGN §14): a tmpfs of 4 MiB as
its storage directory, settings from the environment as an operator sets them.

- An export bigger than the volume fails its attempt with `OSError: storage
  full` and waits for its retry; the process keeps running and its next
  export completes; once the volume is enlarged the retry completes.
- With `EXPORTD_MIN_FREE_BYTES` above the volume's free space the worker
  logs why and leaves the job pending; once space is back it runs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from daemon.tasks import DEFAULT_QUEUE
from tests.e2e.processes import (
    create,
    outcomes,
    poll_until,
    status_of,
    wait_status,
    worker,
    worker_env,
)
from tests.tmpfs import MiB, files_under, mounted_tmpfs, resize

pytestmark = pytest.mark.slow
STORAGE_FULL = "OSError: storage full"


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "volume", 4) as path:
        yield path


def retry_due_now(db_url: str, job_id: UUID) -> None:
    """Move the clock of the job's scheduled retry: it is due at once."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE procrastinate_jobs SET scheduled_at = now() WHERE id = "
            "(SELECT queue_job_id FROM exportd.jobs WHERE job_id = %s)",
            (job_id,),
        )


def test_a_full_disk_fails_the_attempt_and_the_worker_runs_on(
    db_url: str, tmp_path: Path, volume: Path
) -> None:
    env = worker_env(
        db_url,
        volume,
        EXPORTD_MIN_FREE_BYTES="0",
        EXPORTD_RETRY_BASE_SECONDS="600",
        EXPORTD_RETRY_MAX_SECONDS="600",
    )
    big = create(db_url, "blob", size=6 * MiB, max_attempts=3)
    with worker(env, tmp_path, "worker") as proc:
        poll_until(lambda: outcomes(db_url, big) == [("failed", STORAGE_FULL)], "storage full")
        assert wait_status(db_url, big, "pending") == "pending"
        assert files_under(volume / ".work") == [] and files_under(volume / ".tmp") == []
        small = create(db_url, "noop")
        assert wait_status(db_url, small, "completed", "rolled_back") == "completed"
        assert proc.poll() is None
        resize(volume, 64)
        retry_due_now(db_url, big)
        assert wait_status(db_url, big, "completed", "rolled_back") == "completed"
    assert outcomes(db_url, big) == [("failed", STORAGE_FULL), ("succeeded", None)]


def test_below_the_floor_the_job_waits_until_space_is_back(
    db_url: str, tmp_path: Path, volume: Path
) -> None:
    env = worker_env(db_url, volume, EXPORTD_MIN_FREE_BYTES="8MiB")
    # Created first: the fetch that finds the floor too low finds this job
    # (the exports' queue only: no webhook worker fetches, and warns, first).
    job = create(db_url, "noop")
    log = tmp_path / "worker.log"
    with worker(env, tmp_path, "worker", "--queue", DEFAULT_QUEUE) as proc:
        poll_until(lambda: "below EXPORTD_MIN_FREE_BYTES" in log.read_text(), "the warning")
        assert status_of(db_url, job) == ("pending", 0)
        assert proc.poll() is None
        resize(volume, 64)
        assert wait_status(db_url, job, "completed", "rolled_back") == "completed"
        poll_until(lambda: "exports start again" in log.read_text(), "the all-clear")
    assert log.read_text().count("below EXPORTD_MIN_FREE_BYTES") == 1
