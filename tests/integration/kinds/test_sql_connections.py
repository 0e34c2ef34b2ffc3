"""Export connections kept open between SQL exports (daemon.db.copy): one
server backend serves consecutive exports to the same database, and nothing
of one export — a failure, a cancel, a timeout, a kind's name — reaches the
next."""

from __future__ import annotations

import asyncio
import gzip
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from daemon.db.copy import CONNECTIONS, ExportConnections, QueryCopy, close_export_connections
from daemon.kinds.context import ExportContext, JobCancelled, JobInfo
from daemon.kinds.exports_file import load_exports_file
from daemon.kinds.registry import Kind
from daemon.kinds.sql import SqlExportError
from daemon.models import JobStatus
from daemon.worker.pipeline import run_steps

pytestmark = pytest.mark.anyio

AConn = psycopg.AsyncConnection[Any]

EXPORTS = """
[exports.pid]
[[exports.pid.queries]]
name = "pid"
sql = '''
SELECT pg_backend_pid() AS pid, current_setting('statement_timeout') AS timeout,
       current_setting('application_name') AS app
WHERE %(owner_id)s IS NOT NULL
'''

[exports.timed]
statement_timeout = "1500ms"
[[exports.timed.queries]]
name = "pid"
sql = '''
SELECT pg_backend_pid() AS pid, current_setting('statement_timeout') AS timeout,
       current_setting('application_name') AS app
WHERE %(owner_id)s IS NOT NULL
'''

[exports.broken]
[[exports.broken.queries]]
name = "broken"
sql = "SELECT 1 / 0 AS never"

[exports.writer]
[[exports.writer.queries]]
name = "writer"
sql = "INSERT INTO planted VALUES (1) RETURNING id"

[exports.sleepy]
[[exports.sleepy.queries]]
name = "sleepy"
sql = "SELECT pg_sleep(30)"
"""


class RunningSink:
    """A progress sink that keeps the job running."""

    async def __call__(
        self, job_id: uuid.UUID, done: int, total: int, current_step: str | None, percentage: int
    ) -> JobStatus | None:
        return JobStatus.IN_PROGRESS


@pytest.fixture
async def kinds(tmp_path: Path, db_url: str) -> AsyncIterator[dict[str, Kind]]:
    path = tmp_path / "exports.toml"
    path.write_text(EXPORTS)
    yield {kind.name: kind for kind in load_exports_file(path, default_database_url=db_url)}
    close_export_connections()


def make_ctx(tmp_path: Path, kind: Kind) -> ExportContext:
    job = JobInfo(
        job_id=uuid.uuid4(),
        kind=kind.name,
        owner_id="alice",
        params=kind.validate_params({}),
        run=1,
        attempt=1,
        created_at=datetime.now(UTC),
    )
    return ExportContext(
        job=job,
        kind=kind,
        work_dir=tmp_path / "work" / str(job.job_id),
        sink=RunningSink(),
        progress_interval=0,
    )


async def export_row(tmp_path: Path, kind: Kind) -> dict[str, str]:
    """Run `kind` (one row of the session's settings); return that row."""
    ctx = make_ctx(tmp_path, kind)
    await run_steps(kind, ctx)
    (member,) = ctx.files
    header, row, *rest = gzip.decompress(member.source.read_bytes()).decode().splitlines()
    assert rest == []
    return dict(zip(header.split(","), row.split(","), strict=True))


async def test_consecutive_exports_share_one_backend(
    tmp_path: Path, db_url: str, kinds: dict[str, Kind]
) -> None:
    first = await export_row(tmp_path, kinds["pid"])
    second = await export_row(tmp_path, kinds["pid"])
    assert second["pid"] == first["pid"]
    assert CONNECTIONS.idle_count(db_url) == 1


async def test_a_timeout_and_a_name_stay_with_their_export(
    tmp_path: Path, kinds: dict[str, Kind]
) -> None:
    plain = await export_row(tmp_path, kinds["pid"])
    timed = await export_row(tmp_path, kinds["timed"])
    after = await export_row(tmp_path, kinds["pid"])
    assert plain["pid"] == timed["pid"] == after["pid"]
    assert timed["timeout"] == "1500ms"
    assert after["timeout"] == plain["timeout"] == "0"
    assert (plain["app"], timed["app"], after["app"]) == (
        "exportd export pid",
        "exportd export timed",
        "exportd export pid",
    )


async def test_a_failed_query_does_not_return_its_connection(
    tmp_path: Path, db_url: str, kinds: dict[str, Kind]
) -> None:
    before = await export_row(tmp_path, kinds["pid"])
    with pytest.raises(SqlExportError, match="division by zero"):
        await run_steps(kinds["broken"], make_ctx(tmp_path, kinds["broken"]))
    assert CONNECTIONS.idle_count(db_url) == 0
    after = await export_row(tmp_path, kinds["pid"])
    assert after["pid"] != before["pid"]


async def test_a_reused_connection_is_still_read_only(
    tmp_path: Path, db_url: str, kinds: dict[str, Kind], aconn: AConn
) -> None:
    await aconn.execute("CREATE TABLE planted (id int)")
    await export_row(tmp_path, kinds["pid"])
    assert CONNECTIONS.idle_count(db_url) == 1
    with pytest.raises(SqlExportError, match="read-only transaction"):
        await run_steps(kinds["writer"], make_ctx(tmp_path, kinds["writer"]))
    cur = await aconn.execute("SELECT count(*) FROM planted")
    assert await cur.fetchone() == (0,)


async def sleeping(conn: AConn) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND query LIKE 'COPY (SELECT pg_sleep(30)%%'"
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_a_cancelled_export_does_not_return_its_connection(
    tmp_path: Path, db_url: str, kinds: dict[str, Kind], aconn: AConn
) -> None:
    before = await export_row(tmp_path, kinds["pid"])
    ctx = make_ctx(tmp_path, kinds["sleepy"])
    task = asyncio.create_task(run_steps(kinds["sleepy"], ctx))
    deadline = time.monotonic() + 5
    while await sleeping(aconn) != 1:
        assert time.monotonic() < deadline, "the query never started"
        await asyncio.sleep(0.05)
    ctx.cancel()
    with anyio.fail_after(5), pytest.raises(JobCancelled):
        await task
    assert CONNECTIONS.idle_count(db_url) == 0
    after = await export_row(tmp_path, kinds["pid"])
    assert after["pid"] != before["pid"]


def test_a_connection_a_cancel_was_sent_to_is_closed(db_url: str) -> None:
    """Even when the cancel came after the commit: it could reach the next export."""
    pool = ExportConnections()
    copy = QueryCopy.connect(db_url, connections=pool)
    copy.begin(application_name="exportd export test")
    copy.copy_to("SELECT 1 AS one", {}, fmt="csv", write=lambda block: None)
    copy.commit()
    copy.cancel(wait_seconds=5)
    copy.close()
    assert pool.idle_count(db_url) == 0
    copy.cancel(wait_seconds=5)  # after close: nothing, no error


async def test_an_idle_connection_the_server_dropped_is_replaced(
    tmp_path: Path, db_url: str, kinds: dict[str, Kind], aconn: AConn
) -> None:
    before = await export_row(tmp_path, kinds["pid"])
    await aconn.execute("SELECT pg_terminate_backend(%s)", (int(before["pid"]),))
    deadline = time.monotonic() + 5
    while True:  # the backend ends after the call returns
        cur = await aconn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (int(before["pid"]),)
        )
        if await cur.fetchone() == (0,):
            break
        assert time.monotonic() < deadline, "the backend never ended"
        await asyncio.sleep(0.05)
    after = await export_row(tmp_path, kinds["pid"])
    assert after["pid"] != before["pid"]
    assert CONNECTIONS.idle_count(db_url) == 1


def test_an_old_idle_connection_is_closed_not_reused(db_url: str) -> None:
    pool = ExportConnections(idle_seconds=0)
    copy = QueryCopy.connect(db_url, connections=pool)
    copy.begin(application_name="exportd export test")
    copy.commit()
    old = copy.backend_pid
    copy.close()
    assert pool.idle_count(db_url) == 1
    fresh = QueryCopy.connect(db_url, connections=pool)
    try:
        assert fresh.backend_pid != old
        assert pool.idle_count(db_url) == 0
    finally:
        fresh.close()


def test_shutdown_closes_the_idle_connections(db_url: str) -> None:
    copy = QueryCopy.connect(db_url)
    copy.begin(application_name="exportd export test")
    copy.commit()
    pid = copy.backend_pid
    copy.close()
    assert CONNECTIONS.idle_count(db_url) == 1
    close_export_connections()
    assert CONNECTIONS.idle_count(db_url) == 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        deadline = time.monotonic() + 5
        while conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, "the idle backend is still there"
