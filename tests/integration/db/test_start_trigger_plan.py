"""The start of an attempt (the trigger inside every fetch, migrations 0003
and 0012) reads a few index entries, however many jobs wait and whatever the
statistics say.

The case that went wrong: the jobs table analyzed while nearly empty, then a
burst of jobs queued before autovacuum looked again. With the job found by
`queue_job_id AND status = 'pending'`, the planner combined the partial index
of the waiting jobs with the queue entry's, and every start read the whole
queue of waiting jobs: a drain quadratic in its length."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.integration.db.waiting_exports import queue_waiting_exports

QUEUED = 5000
FETCHES = 10


def index_reads(conn: psycopg.Connection[Any]) -> int:
    """Index entries read on exportd.jobs so far (every index)."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    row = conn.execute(
        "SELECT coalesce(sum(idx_tup_read), 0)::bigint FROM pg_stat_user_indexes"
        " WHERE schemaname = 'exportd' AND relname = 'jobs'"
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.slow
def test_a_start_reads_a_few_index_entries_with_stale_statistics(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE exportd.jobs")  # statistics of an empty table
        queue_waiting_exports(conn, QUEUED, owners=1)
        row = conn.execute("SELECT worker_id FROM procrastinate_register_worker_v1()").fetchone()
        assert row is not None
        before = index_reads(conn)
        conn.autocommit = False
        for _ in range(FETCHES):  # past the first executions, whatever the plan cache does
            fetched = conn.execute(
                "SELECT id FROM exportd.fetch_job(NULL, %s, 1000, %s)",
                (row[0], Jsonb({})),
            ).fetchone()
            assert fetched is not None and fetched[0] is not None
            started = conn.execute(
                "SELECT j.status, a.attempt FROM exportd.jobs j"
                " JOIN exportd.job_attempts a USING (job_id)"
                " WHERE j.queue_job_id = %s",
                (fetched[0],),
            ).fetchone()
            assert started == ("in_progress", 1)
            conn.rollback()
        conn.autocommit = True
        read = index_reads(conn) - before
    # A few entries per start (the queue entry's job, its primary key, the
    # running counts); reading the waiting jobs would be QUEUED per start.
    assert read < QUEUED, read
