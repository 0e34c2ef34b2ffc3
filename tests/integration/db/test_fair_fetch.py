"""The fair fetch of migration 0009 on a real server: which job a worker gets
(owner caps, kind caps, pauses, priorities, procrastinate's own rules), the
caps under many racing fetchers, the wake-up when a slot frees, and the
per-owner waiting cap at creation under racing creates."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from daemon.db import fetch, pauses
from daemon.db import jobs as job_store
from daemon.errors import TooManyExports
from daemon.models import NewJob

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]
Limits = dict[str, int]


async def create(
    conn: AConn, owner: str, kind: str = "k", *, priority: int = 0, queue: str = "exports"
) -> UUID:
    job = await job_store.create_job(
        conn,
        NewJob(kind=kind, owner_id=owner, params={}, priority=priority),
        queue=queue,
        task="exportd.run_export",
    )
    return job.job_id


async def register_worker(conn: AConn) -> int:
    cur = await conn.execute("SELECT worker_id FROM procrastinate_register_worker_v1()")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def take(
    conn: AConn,
    worker: int,
    *,
    cap: int | None = 2,
    limits: Limits | None = None,
    queues: list[str] | None = None,
) -> tuple[str | None, str | None, int] | None:
    """One fetch: (owner, kind, queue entry id) of the job it started, or None."""
    cur = await conn.execute(
        "SELECT f.id, j.owner_id, j.kind FROM exportd.fetch_job(%s, %s, %s, %s) AS f"
        " LEFT JOIN exportd.jobs j ON j.queue_job_id = f.id",
        (queues, worker, cap, Jsonb(limits or {})),
    )
    row = await cur.fetchone()
    assert row is not None
    return None if row[0] is None else (row[1], row[2], int(row[0]))


async def finish(conn: AConn, queue_job_id: int) -> None:
    """What a settle does to a running job: completed, queue entry finished."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE exportd.jobs SET status = 'completed', completed_at = now()"
            " WHERE queue_job_id = %s",
            (queue_job_id,),
        )
        await conn.execute(
            "SELECT procrastinate_finish_job_v1(%s, 'succeeded', false)", (queue_job_id,)
        )


async def running(conn: AConn) -> dict[str, int]:
    cur = await conn.execute(
        "SELECT owner_id, count(*) FROM exportd.jobs"
        " WHERE status IN ('in_progress', 'cancelling') GROUP BY owner_id"
    )
    return {str(owner): int(n) for owner, n in await cur.fetchall()}


# -- which job a fetch starts ------------------------------------------------------


async def test_an_owner_at_the_cap_does_not_block_the_others(aconn: AConn) -> None:
    worker = await register_worker(aconn)
    for _ in range(5):
        await create(aconn, "alice")
    await create(aconn, "bob")
    taken = [await take(aconn, worker) for _ in range(4)]
    assert [t[0] if t else None for t in taken] == ["alice", "alice", "bob", None]
    assert await running(aconn) == {"alice": 2, "bob": 1}
    first = taken[0]
    assert first is not None
    await finish(aconn, first[2])
    again = await take(aconn, worker)
    assert again is not None and again[0] == "alice"
    # The started job's attempt is recorded as before (the trigger of 0003).
    cur = await aconn.execute("SELECT count(*) FROM exportd.job_attempts")
    assert await cur.fetchone() == (4,)


async def test_priority_first_then_the_oldest(aconn: AConn) -> None:
    worker = await register_worker(aconn)
    await create(aconn, "alice")
    await create(aconn, "alice", priority=5)
    await create(aconn, "alice", priority=5)
    await create(aconn, "bob", priority=1)
    await create(aconn, "carol")
    order = []
    while (taken := await take(aconn, worker, cap=None)) is not None:
        order.append(taken[2])
    cur = await aconn.execute("SELECT id FROM procrastinate_jobs ORDER BY priority DESC, id ASC")
    assert order == [int(r[0]) for r in await cur.fetchall()]
    # With the cap, alice's third waits behind everyone else's.
    await aconn.execute("TRUNCATE procrastinate_jobs, exportd.jobs CASCADE")
    low = await create(aconn, "alice")
    await create(aconn, "alice", priority=5)
    await create(aconn, "alice", priority=5)
    await create(aconn, "bob", priority=1)
    await create(aconn, "carol")
    owners = []
    while (taken := await take(aconn, worker, cap=2)) is not None:
        owners.append(taken[0])
    assert owners == ["alice", "alice", "bob", "carol"]
    assert (await job_store.get_job(aconn, low)).status.value == "pending"


async def test_a_capped_kind_runs_one_at_a_time(aconn: AConn) -> None:
    worker = await register_worker(aconn)
    await create(aconn, "alice", "single")
    await create(aconn, "bob", "single")
    await create(aconn, "carol", "other")
    limits = {"single": 1}
    first = await take(aconn, worker, limits=limits)
    second = await take(aconn, worker, limits=limits)
    assert first is not None and first[1] == "single"
    assert second is not None and second[1] == "other"
    assert await take(aconn, worker, limits=limits) is None
    await finish(aconn, first[2])
    third = await take(aconn, worker, limits=limits)
    assert third is not None and (third[0], third[1]) == ("bob", "single")


async def test_a_paused_kind_waits_until_it_is_resumed(aconn: AConn) -> None:
    worker = await register_worker(aconn)
    held = await create(aconn, "alice", "held")
    await create(aconn, "bob", "free")
    assert await pauses.pause_kind(aconn, "held", paused_by="ops")
    assert not await pauses.pause_kind(aconn, "held", paused_by="someone else")
    taken = await take(aconn, worker)
    assert taken is not None and taken[1] == "free"
    assert await take(aconn, worker) is None
    assert (await job_store.get_job(aconn, held)).status.value == "pending"
    stored = await pauses.paused_kinds(aconn)
    assert stored["held"].paused_by == "ops"
    assert await pauses.resume_kind(aconn, "held", queue="exports")
    assert not await pauses.resume_kind(aconn, "held", queue="exports")
    taken = await take(aconn, worker)
    assert taken is not None and taken[1] == "held"


async def test_queue_entries_without_an_export_follow_the_queue_rules_only(
    aconn: AConn,
) -> None:
    """Maintenance tasks have no owner and no kind; procrastinate's `lock` and
    queue filter still hold."""
    worker = await register_worker(aconn)
    for _ in range(2):
        await aconn.execute(
            "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW('maintenance', 'exportd.cleanup',"
            " 0, 'L', NULL, '{}'::jsonb, NULL)::procrastinate_job_to_defer_v1])"
        )
    await create(aconn, "alice", queue="exports")
    assert await take(aconn, worker, queues=["nothing-here"]) is None
    exports = await take(aconn, worker, queues=["exports"])
    assert exports is not None and exports[0] == "alice"
    first = await take(aconn, worker)
    assert first is not None and first[0] is None
    # The second has the same lock as the running first: it waits.
    assert await take(aconn, worker) is None
    await aconn.execute("SELECT procrastinate_finish_job_v1(%s, 'succeeded', false)", (first[2],))
    second = await take(aconn, worker)
    assert second is not None and second[0] is None


async def test_the_python_side_returns_procrastinates_row(aconn: AConn, db_url: str) -> None:
    worker = await register_worker(aconn)
    job_id = await create(aconn, "alice")
    async with AsyncConnectionPool(db_url, min_size=1, max_size=2, open=False) as pool:
        row = await fetch.fetch_job(
            pool, queues=None, worker_id=worker, owner_max_running=2, kind_limits={}
        )
        assert row is not None
        assert row["task_name"] == "exportd.run_export"
        assert row["args"]["job_id"] == str(job_id)
        assert row["status"] == "doing" and row["worker_id"] == worker
        assert (
            await fetch.fetch_job(
                pool, queues=None, worker_id=worker, owner_max_running=2, kind_limits={}
            )
            is None
        )


# -- racing workers ------------------------------------------------------------------

OWNER_CAP = 2
KIND_CAP = 3
FETCHERS = 12


async def race(db_url: str, fair_fetch: str) -> tuple[int, list[str]]:
    """FETCHERS connections fetch and finish jobs as fast as they can; after
    every start, the fetcher counts what runs for that owner and kind.
    Returns (jobs run, the caps it ever saw exceeded)."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as setup:
        for i in range(160):
            await create(setup, f"owner-{i % 3}", "capped" if i % 2 else "plain")
        await setup.execute(fair_fetch)
    seen: list[str] = []
    done = 0

    async def fetcher() -> None:
        nonlocal done
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            worker = await register_worker(conn)
            idle = 0
            while idle < 20:
                taken = await take(conn, worker, cap=OWNER_CAP, limits={"capped": KIND_CAP})
                if taken is None:
                    idle += 1
                    await asyncio.sleep(0.005)
                    continue
                idle = 0
                owner, _, queue_job_id = taken
                cur = await conn.execute(
                    "SELECT count(*) FILTER (WHERE owner_id = %s),"
                    "       count(*) FILTER (WHERE kind = 'capped')"
                    "  FROM exportd.jobs WHERE status IN ('in_progress', 'cancelling')",
                    (owner,),
                )
                row = await cur.fetchone()
                assert row is not None
                if row[0] > OWNER_CAP:
                    seen.append(f"{owner}: {row[0]} running")
                if row[1] > KIND_CAP:
                    seen.append(f"capped: {row[1]} running")
                await asyncio.sleep(0.002)  # the export "runs"
                await finish(conn, queue_job_id)
                done += 1

    await asyncio.gather(*(fetcher() for _ in range(FETCHERS)))
    return done, seen


def fetch_function(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(
        "SELECT pg_get_functiondef('exportd.fetch_job(varchar[], bigint, integer, jsonb)'"
        "::regprocedure)"
    ).fetchone()
    assert row is not None
    return str(row[0])


def without_locks(definition: str) -> str:
    """The same fetch with its advisory locks taken away (always granted)."""
    unlocked = re.sub(r"PERFORM pg_advisory_xact_lock\([^;]*;", "NULL;", definition)
    unlocked = re.sub(r"NOT pg_try_advisory_xact_lock\([^)]*\)\)", "false", unlocked)
    assert unlocked.count("advisory") == 0, unlocked
    return unlocked


@pytest.fixture
def definitions(db_url: str) -> Iterator[tuple[str, str]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        real = fetch_function(conn)
        yield real, without_locks(real)


async def test_racing_fetchers_never_exceed_a_cap(
    db_url: str, definitions: tuple[str, str]
) -> None:
    real, _ = definitions
    done, exceeded = await race(db_url, real)
    assert done == 160
    assert exceeded == []


async def test_without_its_locks_the_same_race_exceeds_the_caps(
    db_url: str, definitions: tuple[str, str]
) -> None:
    """The race above is sharp enough to see a missing lock (so its silence
    means something)."""
    _, unlocked = definitions
    done, exceeded = await race(db_url, unlocked)
    assert done == 160
    assert exceeded, "no cap was exceeded without the locks"


# -- waking workers when a slot frees ------------------------------------------------


async def notifications(conn: AConn, seconds: float = 0.5) -> list[dict[str, Any]]:
    found = []
    async for note in conn.notifies(timeout=seconds):
        found.append({"channel": note.channel, **json.loads(note.payload)})
    return found


async def test_a_freed_slot_wakes_the_workers_while_jobs_wait(aconn: AConn, db_url: str) -> None:
    worker = await register_worker(aconn)
    for _ in range(3):
        await create(aconn, "alice")
    first = await take(aconn, worker)
    second = await take(aconn, worker)
    assert first is not None and second is not None
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as listener:
        await listener.execute("LISTEN procrastinate_any_queue_v1")
        await listener.execute('LISTEN "procrastinate_queue_v1#exports"')
        await finish(aconn, first[2])  # alice's third can start now
        woken = await notifications(listener)
        assert {n["channel"] for n in woken} == {
            "procrastinate_any_queue_v1",
            "procrastinate_queue_v1#exports",
        }
        assert all(n["type"] == "job_inserted" for n in woken)
        third = await take(aconn, worker)
        assert third is not None
        await finish(aconn, second[2])
        await finish(aconn, third[2])  # nothing waits any more: no wake-up
        assert await notifications(listener) == []


async def test_resuming_a_kind_wakes_the_workers_of_its_queue(aconn: AConn, db_url: str) -> None:
    await pauses.pause_kind(aconn, "held", paused_by=None)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as listener:
        await listener.execute('LISTEN "procrastinate_queue_v1#slow-queue"')
        await pauses.resume_kind(aconn, "held", queue="slow-queue")
        woken = await notifications(listener)
        assert [n["type"] for n in woken] == ["job_inserted"]
        await pauses.resume_kind(aconn, "held", queue="slow-queue")  # not paused: nothing
        assert await notifications(listener) == []


# -- the waiting cap at creation --------------------------------------------------------


async def create_capped(conn: AConn, owner: str, max_pending: int = 100) -> bool:
    """Create one job under the waiting cap; False when it was refused."""
    try:
        await job_store.create_job(
            conn,
            NewJob(kind="k", owner_id=owner, params={}),
            queue="exports",
            task="exportd.run_export",
            max_pending=max_pending,
        )
    except TooManyExports:
        return False
    return True


async def test_the_waiting_cap_holds_under_racing_creates(aconn: AConn, db_url: str) -> None:
    for _ in range(95):
        await create(aconn, "alice")

    async def one() -> bool:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            return await create_capped(conn, "alice")

    results = await asyncio.gather(*(one() for _ in range(20)))
    assert results.count(True) == 5
    cur = await aconn.execute(
        "SELECT (SELECT count(*) FROM exportd.jobs WHERE owner_id = 'alice'),"
        "       (SELECT count(*) FROM procrastinate_jobs)"
    )
    assert await cur.fetchone() == (100, 100)  # the refused left nothing behind
    # Another owner is not affected; jobs that started no longer count.
    assert await create_capped(aconn, "bob")
    assert not await create_capped(aconn, "alice")
    await aconn.execute(
        "UPDATE exportd.jobs SET status = 'in_progress' WHERE job_id IN"
        " (SELECT job_id FROM exportd.jobs WHERE owner_id = 'alice' LIMIT 1)"
    )
    assert await create_capped(aconn, "alice")
    assert not await create_capped(aconn, "alice")
