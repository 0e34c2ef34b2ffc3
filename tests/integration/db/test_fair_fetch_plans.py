"""The statements of the fair fetch and of the waiting cap (migration 0009)
use small indexes on a large table: they run on every fetch and every create.

They live inside plpgsql functions; the statements below are theirs, with
the values bound as the functions bind them. The table is the one of
test_query_plans (conftest.py's `big_db`: 200 000 jobs over 2 000 owners,
a few hundred running and pending)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.integration.db.test_query_plans import nodes, plan_of
from tests.integration.db.waiting_exports import queue_waiting_exports

RUNNING = "status IN ('in_progress', 'cancelling')"
CASES: dict[str, tuple[str, dict[str, Any], set[str]]] = {
    "owners at their cap": (
        f"SELECT owner_id FROM exportd.jobs WHERE {RUNNING} AND owner_id IS NOT NULL"
        " GROUP BY owner_id HAVING count(*) >= %(cap)s",
        {"cap": 2},
        {"jobs_running_idx", "jobs_status_created_idx"},
    ),
    "one owner's running jobs": (
        f"SELECT count(*) FROM exportd.jobs WHERE owner_id = %(owner)s AND {RUNNING}",
        {"owner": "owner-1"},
        {"jobs_running_idx"},
    ),
    "one kind's running jobs": (
        f"SELECT count(*) FROM exportd.jobs WHERE kind = %(kind)s AND {RUNNING}",
        {"kind": "orders"},
        {"jobs_running_idx", "jobs_status_created_idx"},
    ),
    "one owner's waiting jobs": (
        "SELECT count(*) FROM (SELECT 1 FROM exportd.jobs"
        " WHERE owner_id = %(owner)s AND status = 'pending' LIMIT %(cap)s) AS waiting",
        {"owner": "owner-1", "cap": 100},
        {"jobs_pending_owner_idx"},
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_fairness_statement_uses_a_small_index(big_db: str, case: str) -> None:
    query, params, indexes = CASES[case]
    plan = plan_of(big_db, query, params)
    scans = [n for n in nodes(plan) if n.get("Relation Name") == "jobs"]
    assert scans, plan
    assert all(n["Node Type"] != "Seq Scan" for n in scans), plan
    assert indexes & {n.get("Index Name") for n in nodes(plan)}, plan


QUEUED = 5000


def reads(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Rows each table has handed to sequential scans so far."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    rows = conn.execute(
        "SELECT relname, seq_tup_read FROM pg_stat_user_tables"
        " WHERE relname IN ('procrastinate_jobs', 'jobs')"
    ).fetchall()
    return {str(name): int(n) for name, n in rows}


@pytest.mark.slow
def test_the_fetch_walks_the_queue_by_its_index(db_url: str) -> None:
    """With thousands of waiting jobs a fetch reads a few index entries: no
    scan or sort of the whole queue (the plans are generic, planned once per
    connection; see migration 0009)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        queue_waiting_exports(conn, QUEUED, owners=50)
        conn.execute("ANALYZE procrastinate_jobs")
        conn.execute("ANALYZE exportd.jobs")
        row = conn.execute("SELECT worker_id FROM procrastinate_register_worker_v1()").fetchone()
        assert row is not None
        before = reads(conn)
        conn.autocommit = False
        for _ in range(10):  # past the first executions, whatever the plan cache does
            fetched = conn.execute(
                "SELECT id FROM exportd.fetch_job(NULL, %s, 2, %s)", (row[0], Jsonb({"k": 5}))
            ).fetchone()
            assert fetched is not None and fetched[0] is not None
            conn.rollback()
        conn.autocommit = True
        after = reads(conn)
    scanned = {name: after[name] - before[name] for name in after}
    assert all(n < QUEUED for n in scanned.values()), scanned
