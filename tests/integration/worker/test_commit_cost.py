"""Domain tracking costs no commit: write transactions per job, exportd vs raw
procrastinate, counted (not timed) on the same server.

Every write transaction consumes one transaction id, so the growth of
`pg_snapshot_xmax(pg_current_snapshot())` over a run is the number of
commits that wrote something. Both sides use procrastinate's Worker with the
same settings; N no-op jobs each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from procrastinate import App, PsycopgConnector
from procrastinate.worker import Worker

from daemon.worker.runtime import ExportRuntime
from tests.helpers import create, fast_settings, kinds_registry

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]
N = 100


async def next_xid(conn: AConn) -> int:
    cur = await conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def drain_worker(app: App) -> Worker:
    return Worker(
        app,
        concurrency=1,
        wait=False,
        install_signal_handlers=False,
        listen_notify=False,
        update_heartbeat_interval=3600,
    )


async def raw_procrastinate(db_url: str, conn: AConn) -> float:
    app = App(connector=PsycopgConnector(conninfo=db_url))

    @app.task(name="bench.noop", queue="raw")
    async def noop() -> None:
        return None

    async with app.open_async():
        before = await next_xid(conn)
        for _ in range(N):
            await noop.defer_async()
        await drain_worker(app).run()
        after = await next_xid(conn)
    return (after - before) / N


async def exportd_jobs(db_url: str, conn: AConn, tmp_path: Path) -> float:
    settings = fast_settings(tmp_path, heartbeat_seconds=60, stalled_after_seconds=600)
    runtime = ExportRuntime(settings, db_url, kinds_registry())
    # Periodic work (rescue, cleanup) costs transactions per tick, not per job,
    # and a run on a slow machine may cross a tick boundary of either: the
    # ticks stay out of this count.
    runtime.app.periodic_registry.periodic_tasks.clear()
    runtime.storage.ensure()
    async with runtime.app.open_async():
        before = await next_xid(conn)
        for _ in range(N):
            await create(conn, "noop")
        await drain_worker(runtime.app).run()
        after = await next_xid(conn)
    cur = await conn.execute("SELECT count(*) FROM exportd.jobs WHERE status = 'completed'")
    assert await cur.fetchone() == (N,)
    return (after - before) / N


async def test_exportd_adds_no_commit_per_job(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    raw = await raw_procrastinate(db_url, aconn)
    ours = await exportd_jobs(db_url, aconn, tmp_path)
    print(f"write transactions per job: procrastinate {raw:.2f}, exportd {ours:.2f}")
    assert raw >= 3  # defer, fetch, finish
    # Per job the same: with the periodic ticks left out, at most the two
    # transactions of worker bookkeeping apart over the whole run.
    assert (ours - raw) * N <= 2
