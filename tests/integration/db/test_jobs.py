"""daemon.db.jobs against a real database: the named queries and the error
translation at the store boundary."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from daemon.db import jobs as job_store
from daemon.db.connect import aconnect
from daemon.errors import ConstraintViolation, IdempotencyConflict, InvalidTransition, JobNotFound
from daemon.models import Job, JobStatus, NewJob

pytestmark = pytest.mark.anyio

AConn = psycopg.AsyncConnection[Any]
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


async def create(conn: AConn, new: NewJob, *, now: datetime | None = None) -> Job:
    return await job_store.create_job(conn, new, queue="exports", task="run_export", now=now)


async def test_insert_and_get(aconn: AConn) -> None:
    job = await create(
        aconn,
        NewJob(kind="orders", owner_id="alice", params={"since": "2026-01-01"}, priority=3),
        now=T0,
    )
    assert job.status is JobStatus.PENDING
    assert (job.attempts, job.max_attempts, job.run, job.priority) == (0, 3, 1, 3)
    assert job.params == {"since": "2026-01-01"}
    assert job.created_at == job.scheduled_at == T0
    assert await job_store.get_job(aconn, job.job_id) == job


async def test_get_job_selects_the_fields_of_job_in_their_order(aconn: AConn) -> None:
    # get_job builds the Job by position: a column out of order would put a
    # value in the wrong field (two integer columns swapped: no error at all).
    async with aconn.cursor() as cur:
        await cur.execute(job_store.Q["get_job"], {"job_id": uuid.uuid4()})
        assert cur.description is not None
        assert tuple(column.name for column in cur.description) == job_store.JOB_FIELDS


async def test_get_job_reads_every_field_of_the_row(aconn: AConn) -> None:
    job = await create(aconn, NewJob(kind="orders", owner_id="alice", params={"a": 1}), now=T0)
    # A distinct value in each integer column, so a swap would show.
    await aconn.execute(
        """UPDATE exportd.jobs SET priority = 2, attempts = 1, max_attempts = 5,
                  steps_completed = 3, steps_total = 7, progress_percentage = 42,
                  download_count = 9, current_step = 'step', package_path = 'p/q',
                  package_size_bytes = 11, notify_url = 'https://example.com/hook'
            WHERE job_id = %s""",
        (job.job_id,),
    )
    async with aconn.cursor(row_factory=job_store.job_row) as cur:
        await cur.execute("SELECT * FROM exportd.jobs WHERE job_id = %s", (job.job_id,))
        whole = await cur.fetchone()
    read = await job_store.get_job(aconn, job.job_id)
    assert read == whole
    assert (read.steps_completed, read.steps_total, read.download_count) == (3, 7, 9)


async def test_scheduled_at_can_be_in_the_future(aconn: AConn) -> None:
    later = T0 + timedelta(minutes=5)
    job = await create(
        aconn, NewJob(kind="orders", owner_id="a", params={}, scheduled_at=later), now=T0
    )
    assert job.scheduled_at == later
    assert job.created_at == T0


async def test_get_unknown_job_raises_job_not_found(aconn: AConn) -> None:
    with pytest.raises(JobNotFound):
        await job_store.get_job(aconn, uuid.uuid4())


async def test_idempotency_key_reuse_is_a_conflict(aconn: AConn) -> None:
    new = NewJob(kind="orders", owner_id="alice", params={}, idempotency_key="k")
    first = await create(aconn, new)
    with pytest.raises(IdempotencyConflict):
        await create(aconn, new)
    stored = await job_store.find_stored_request(aconn, "alice", "k")
    assert stored is not None and stored.job == first
    assert await job_store.find_stored_request(aconn, "bob", "k") is None


async def test_bad_values_become_constraint_violations(aconn: AConn) -> None:
    with pytest.raises(ConstraintViolation):
        await create(aconn, NewJob(kind="orders", owner_id="a", params={}, max_attempts=0))


async def test_list_is_newest_first_with_keyset_pages(aconn: AConn) -> None:
    ids = []
    for i in range(7):
        job = await create(
            aconn, NewJob(kind="orders", owner_id="alice", params={}), now=T0 + timedelta(seconds=i)
        )
        ids.append(job.job_id)
    # same timestamp twice: job_id breaks the tie, nothing is skipped or repeated
    for _ in range(2):
        job = await create(
            aconn, NewJob(kind="orders", owner_id="alice", params={}), now=T0 + timedelta(seconds=3)
        )
        ids.append(job.job_id)
    await create(aconn, NewJob(kind="orders", owner_id="bob", params={}), now=T0)

    seen = []
    after = None
    while True:
        page = await job_store.list_jobs(aconn, owner_id="alice", after=after, limit=2)
        if not page:
            break
        seen.extend(page)
        after = job_store.Cursor(page[-1].created_at, page[-1].job_id)
    assert sorted(j.job_id for j in seen) == sorted(ids)
    keys = [(j.created_at, j.job_id) for j in seen]
    assert keys == sorted(keys, reverse=True)
    assert all(j.owner_id == "alice" for j in seen)


async def test_list_filters_and_admin_view(aconn: AConn) -> None:
    a = await create(aconn, NewJob(kind="orders", owner_id="alice", params={}))
    await create(aconn, NewJob(kind="uploads", owner_id="alice", params={}))
    await create(aconn, NewJob(kind="orders", owner_id="bob", params={}))
    await job_store.set_status(aconn, a.job_id, JobStatus.CANCELLED)

    by_kind = await job_store.list_jobs(aconn, owner_id="alice", kind="uploads")
    assert [j.kind for j in by_kind] == ["uploads"]
    by_status = await job_store.list_jobs(aconn, owner_id="alice", status=JobStatus.CANCELLED)
    assert [j.job_id for j in by_status] == [a.job_id]
    everyone = await job_store.list_jobs(aconn, owner_id=None)
    assert {j.owner_id for j in everyone} == {"alice", "bob"}
    with pytest.raises(ValueError, match="limit"):
        await job_store.list_jobs(aconn, owner_id="alice", limit=job_store.MAX_PAGE + 1)


async def test_set_status_keeps_timestamps_and_progress_consistent(aconn: AConn) -> None:
    job = await create(aconn, NewJob(kind="orders", owner_id="a", params={}))
    running = await job_store.set_status(aconn, job.job_id, JobStatus.IN_PROGRESS, now=T0)
    assert running is not None and running.started_at == T0 and running.completed_at is None
    status = await job_store.update_progress(aconn, job.job_id, 2, 4, "Exporting orders")
    assert status is JobStatus.IN_PROGRESS
    mid = await job_store.get_job(aconn, job.job_id)
    assert (mid.steps_completed, mid.steps_total, mid.progress_percentage) == (2, 4, 50)
    assert mid.current_step == "Exporting orders"
    # all steps done but not yet completed: still below 100
    await job_store.update_progress(aconn, job.job_id, 4, 4, "Packaging")
    assert (await job_store.get_job(aconn, job.job_id)).progress_percentage == 99
    done = await job_store.set_status(aconn, job.job_id, JobStatus.COMPLETED, now=T0 + timedelta(1))
    assert done is not None
    assert done.progress_percentage == 100 and done.steps_completed == 4
    assert done.completed_at == T0 + timedelta(1)


async def test_progress_of_a_job_that_is_not_running_is_ignored(aconn: AConn) -> None:
    job = await create(aconn, NewJob(kind="orders", owner_id="a", params={}))
    assert await job_store.update_progress(aconn, job.job_id, 1, 2, "x") is None
    assert (await job_store.get_job(aconn, job.job_id)).steps_completed == 0


async def test_progress_reports_cancellation_in_the_same_round_trip(aconn: AConn) -> None:
    job = await create(aconn, NewJob(kind="orders", owner_id="a", params={}))
    await job_store.set_status(aconn, job.job_id, JobStatus.IN_PROGRESS)
    await job_store.set_status(aconn, job.job_id, JobStatus.CANCELLING)
    assert await job_store.update_progress(aconn, job.job_id, 1, 2, "x") is JobStatus.CANCELLING


async def test_progress_beyond_total_is_refused(aconn: AConn) -> None:
    job = await create(aconn, NewJob(kind="orders", owner_id="a", params={}))
    await job_store.set_status(aconn, job.job_id, JobStatus.IN_PROGRESS)
    with pytest.raises(ConstraintViolation):
        await job_store.update_progress(aconn, job.job_id, 3, 2, "x")


async def test_illegal_transition_is_translated(aconn: AConn) -> None:
    job = await create(aconn, NewJob(kind="orders", owner_id="a", params={}))
    with pytest.raises(InvalidTransition, match="cannot go from pending to completed"):
        await job_store.set_status(aconn, job.job_id, JobStatus.COMPLETED)


async def test_compare_and_set_loses_races_quietly(aconn: AConn) -> None:
    job = await create(aconn, NewJob(kind="orders", owner_id="a", params={}))
    await job_store.set_status(aconn, job.job_id, JobStatus.CANCELLED, expected=JobStatus.PENDING)
    lost = await job_store.set_status(
        aconn, job.job_id, JobStatus.IN_PROGRESS, expected=JobStatus.PENDING
    )
    assert lost is None
    assert (await job_store.get_job(aconn, job.job_id)).status is JobStatus.CANCELLED


async def test_error_message_is_kept_until_the_next_run(aconn: AConn) -> None:
    job = await create(aconn, NewJob(kind="orders", owner_id="a", params={}))
    await job_store.set_status(aconn, job.job_id, JobStatus.IN_PROGRESS)
    failed = await job_store.set_status(
        aconn, job.job_id, JobStatus.FAILED, error_message="ValueError: bad"
    )
    assert failed is not None and failed.error_message == "ValueError: bad"
    rolled = await job_store.set_status(aconn, job.job_id, JobStatus.ROLLED_BACK)
    assert rolled is not None and rolled.error_message == "ValueError: bad"
    again = await job_store.set_status(aconn, job.job_id, JobStatus.PENDING)
    assert again is not None and again.error_message is None and again.completed_at is None


async def test_expiry_scan_returns_due_packages_oldest_first(aconn: AConn) -> None:
    due = []
    for days in (-3, -1, 5):
        job = await create(aconn, NewJob(kind="orders", owner_id="a", params={}))
        await aconn.execute(
            "UPDATE exportd.jobs SET package_path = %s, package_expires_at = %s WHERE job_id = %s",
            (f"{job.job_id}.tar.gz", T0 + timedelta(days=days), job.job_id),
        )
        if days < 0:
            due.append(job.job_id)
    found = await job_store.packages_due_for_expiry(aconn, now=T0)
    assert [p.job_id for p in found] == due
    assert await job_store.packages_due_for_expiry(aconn, now=T0 - timedelta(days=10)) == []


async def test_create_job_defers_its_queue_entry_in_the_same_statement(aconn: AConn) -> None:
    later = T0 + timedelta(hours=1)
    job = await create(
        aconn,
        NewJob(
            kind="orders",
            owner_id="alice",
            params={"a": 1},
            priority=7,
            max_attempts=5,
            scheduled_at=later,
        ),
        now=T0,
    )
    cur = await aconn.execute(
        "SELECT queue_name, task_name, priority, status::text, scheduled_at, args "
        "FROM procrastinate_jobs WHERE id = %s",
        (job.queue_job_id,),
    )
    row = await cur.fetchone()
    assert row is not None
    queue, task, priority, status, scheduled_at, args = row
    assert (queue, task, priority, status, scheduled_at) == (
        "exports",
        "run_export",
        7,
        "todo",
        later,
    )
    assert args == {
        "job_id": str(job.job_id),
        "kind": "orders",
        "owner_id": "alice",
        "params": {"a": 1},
        "run": 1,
        "max_attempts": 5,
        "created_at": args["created_at"],
    }


async def test_failed_insert_leaves_no_queue_entry(aconn: AConn) -> None:
    """The second half (the job row) fails: the queue entry is not written either."""
    with pytest.raises(ConstraintViolation):
        await create(aconn, NewJob(kind="orders", owner_id="a", params={}, max_attempts=0))
    await create(aconn, NewJob(kind="orders", owner_id="a", params={}, idempotency_key="k"))
    with pytest.raises(IdempotencyConflict):
        await create(aconn, NewJob(kind="orders", owner_id="a", params={}, idempotency_key="k"))
    counts = await (
        await aconn.execute(
            "SELECT (SELECT count(*) FROM procrastinate_jobs), (SELECT count(*) FROM exportd.jobs)"
        )
    ).fetchone()
    assert counts == (1, 1)


async def test_failed_defer_leaves_no_job_row(aconn: AConn) -> None:
    """The queue half fails (a trigger refuses it): no job row either."""
    await aconn.execute(
        """
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'queue is closed'; END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON procrastinate_jobs
            FOR EACH ROW EXECUTE FUNCTION refuse();
        """
    )
    with pytest.raises(psycopg.errors.RaiseException, match="queue is closed"):
        await create(aconn, NewJob(kind="orders", owner_id="a", params={}))
    row = await (await aconn.execute("SELECT count(*) FROM exportd.jobs")).fetchone()
    assert row == (0,)


async def test_request_hash_is_stored_with_the_job(aconn: AConn) -> None:
    new = NewJob(kind="orders", owner_id="alice", params={}, idempotency_key="h")
    job = await job_store.create_job(
        aconn, new, queue="exports", task="run_export", request_hash="ab" * 32
    )
    stored = await job_store.find_stored_request(aconn, "alice", "h")
    assert stored == job_store.StoredRequest(job, "ab" * 32)
    assert await job_store.find_stored_request(aconn, "bob", "h") is None


async def test_jobs_by_id_prefix(aconn: AConn) -> None:
    jobs = [await create(aconn, NewJob(kind="orders", owner_id="a", params={})) for _ in range(3)]
    ids = ["abcd0000-0000-4000-8000-000000000001", "abcd0000-0000-4000-8000-000000000002"]
    for job, new_id in zip(jobs, ids, strict=False):
        await aconn.execute(
            "UPDATE exportd.jobs SET job_id = %s WHERE job_id = %s", (new_id, job.job_id)
        )
    both = await job_store.find_by_id_prefix(aconn, "ABCD")
    assert [str(j.job_id) for j in both] == ids
    one = await job_store.find_by_id_prefix(aconn, "abcd0000-0000-4000-8000-00000000000")
    assert len(one) == 2
    assert [str(j.job_id) for j in await job_store.find_by_id_prefix(aconn, ids[1])] == ids[1:]
    third = jobs[2].job_id  # random: its first 12 hex digits are its own
    assert [j.job_id for j in await job_store.find_by_id_prefix(aconn, str(third)[:13])] == [third]
    await aconn.execute(
        "UPDATE exportd.jobs SET job_id = %s WHERE job_id = %s",
        ("12345678-0000-4000-8000-000000000003", third),
    )
    assert await job_store.find_by_id_prefix(aconn, "ffff") == []  # no job starts so
    for bad in ("abc", "xyz1", "", "abcd" * 9):
        assert job_store.id_prefix_bounds(bad) is None
        with pytest.raises(ValueError, match="hex digits"):
            await job_store.find_by_id_prefix(aconn, bad)


async def test_a_value_beyond_the_servers_limits_is_not_an_outage(db_url: str) -> None:
    """An owner too long for the btree index is ProgramLimitExceeded, an
    OperationalError subclass: it must not read as DatabaseUnavailable (a 503
    telling the client to retry the same input)."""
    owner = secrets.token_urlsafe(3000)  # random: TOAST cannot compress it below the limit
    with pytest.raises(ConstraintViolation, match="too large"):
        async with aconnect(db_url) as conn:  # the seam: driver errors translated on the way out
            await create(conn, NewJob(kind="orders", owner_id=owner, params={}))
    async with aconnect(db_url) as conn:
        cur = await conn.execute("SELECT count(*) FROM exportd.jobs")
        assert await cur.fetchone() == (0,)
