"""What a failed job tells its owner: the reason, never a server path."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import psycopg
import pytest

from daemon.models import JobStatus
from tests.helpers import attempt_rows, create, fast_settings, running_worker, wait_for

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]


async def test_a_full_disk_reads_storage_full_without_the_path(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    """The step fails like a write on an inode-exhausted volume
    (`No space left on device: '/srv/exportd/packages/5e/…'`)."""
    async with running_worker(fast_settings(tmp_path), db_url):
        job = await create(aconn, "disk-full", {"errno": errno.ENOSPC}, max_attempts=2)
        done = await wait_for(aconn, job.job_id)
    assert done.status is JobStatus.ROLLED_BACK and done.attempts == 2  # a full disk may clear
    assert done.error_message == "OSError: storage full"
    errors = [r[3] for r in await attempt_rows(aconn, job.job_id)]
    assert errors == ["OSError: storage full", "OSError: storage full"]
    assert all("/srv" not in e and "5e7a" not in e for e in errors)
