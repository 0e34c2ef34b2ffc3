"""The pools' connection checks (daemon/db/pools.py): a connection is back
in its pool as soon as it is returned, and one idle for a while is checked
(and replaced when broken) before it is handed out."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from daemon.db import jobs as job_store
from daemon.db import pools
from daemon.db.pools import IDLE_CHECK_SECONDS, Database
from daemon.errors import JobNotFound

pytestmark = pytest.mark.anyio


async def test_a_returned_connection_is_available_at_once(db_url: str) -> None:
    """No hop through a pool worker task between the return and the next checkout."""
    database = Database(db_url, role="test", min_size=1, max_size=1)
    await database.open()
    await database.pool.wait()
    try:
        for _ in range(3):
            async with database.connection() as conn:
                await conn.execute("SELECT 1")
            # Nothing awaited since the block ended.
            assert database.pool.get_stats()["pool_available"] == 1
    finally:
        await database.close()


async def test_a_broken_idle_connection_is_replaced_before_use(db_url: str) -> None:
    database = Database(db_url, role="test", min_size=1, max_size=1)
    await database.open()
    try:
        async with database.connection() as conn:
            pid = conn.info.backend_pid
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
        # Idle long enough to be checked (the clock moved, not waited for).
        pools._LAST_USED[conn] = time.monotonic() - IDLE_CHECK_SECONDS
        async with database.connection() as fresh:
            await fresh.execute("SELECT 1")
            assert fresh.info.backend_pid != pid
    finally:
        await database.close()


async def test_the_job_status_statement_is_prepared_on_a_pooled_connection(db_url: str) -> None:
    """The status API's read is parsed and planned once per connection, not
    once per request: psycopg prepares a statement after a few executions
    (`prepare_threshold`), which the pool's connection options keep on."""
    database = Database(db_url, role="test", min_size=1, max_size=1)
    await database.open()
    try:
        for _ in range(6):
            async with database.connection() as conn:
                with pytest.raises(JobNotFound):
                    await job_store.get_job(conn, uuid.uuid4())
        async with database.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_prepared_statements"
                " WHERE NOT from_sql AND statement LIKE '%FROM exportd.jobs WHERE job_id = $1%'"
            )
            assert await cur.fetchone() == (1,)
    finally:
        await database.close()
