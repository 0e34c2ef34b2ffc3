"""The inspection views return what docs/sql.md says, and its examples run."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import psycopg

Conn = psycopg.Connection[tuple[Any, ...]]
DOCS = Path(__file__).resolve().parents[3] / "docs" / "sql.md"


def add_job(conn: Conn, owner: str, kind: str = "orders") -> str:
    row = conn.execute(
        "INSERT INTO exportd.jobs (kind, owner_id) VALUES (%s, %s) RETURNING job_id::text",
        (kind, owner),
    ).fetchone()
    assert row is not None
    return str(row[0])


def set_status(conn: Conn, job_id: str, *statuses: str) -> None:
    for status in statuses:
        conn.execute("UPDATE exportd.jobs SET status = %s WHERE job_id = %s", (status, job_id))


def test_job_overview_joins_queue_entry_and_worker(conn: Conn) -> None:
    job_id = add_job(conn, "alice")
    worker = conn.execute(
        "INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id"
    ).fetchone()
    assert worker is not None
    queue = conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, status, worker_id) "
        "VALUES ('exports', 'run_export', 'doing', %s) RETURNING id",
        (worker[0],),
    ).fetchone()
    assert queue is not None
    conn.execute("UPDATE exportd.jobs SET queue_job_id = %s WHERE job_id = %s", (queue[0], job_id))
    set_status(conn, job_id, "in_progress")
    row = conn.execute(
        "SELECT status::text, queue_status::text, worker_id, "
        "worker_heartbeat_age < interval '1 minute' FROM exportd.job_overview WHERE job_id = %s",
        (job_id,),
    ).fetchone()
    assert row == ("in_progress", "doing", worker[0], True)
    health = conn.execute(
        "SELECT running_jobs, job_ids::text[] FROM exportd.worker_health WHERE worker_id = %s",
        (worker[0],),
    ).fetchone()
    assert health == (1, [job_id])
    # fresh heartbeat: not stalled; an old one: stalled
    assert conn.execute("SELECT count(*) FROM exportd.stalled_jobs").fetchone() == (0,)
    conn.execute(
        "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '5 minutes' "
        "WHERE id = %s",
        (worker[0],),
    )
    stalled = conn.execute("SELECT job_id::text FROM exportd.stalled_jobs").fetchall()
    assert stalled == [(job_id,)]


def test_running_job_without_a_worker_is_stalled(conn: Conn) -> None:
    job_id = add_job(conn, "alice")
    set_status(conn, job_id, "in_progress")
    done = add_job(conn, "alice")
    set_status(conn, done, "in_progress", "completed")
    stalled = conn.execute("SELECT job_id::text FROM exportd.stalled_jobs").fetchall()
    assert stalled == [(job_id,)]


def test_queue_health_counts_per_kind_and_status(conn: Conn) -> None:
    for _ in range(3):
        add_job(conn, "a", "orders")
    cancelled = add_job(conn, "a", "orders")
    set_status(conn, cancelled, "cancelled")
    later = add_job(conn, "b", "uploads")
    conn.execute(
        "UPDATE exportd.jobs SET scheduled_at = now() + interval '1 hour' WHERE job_id = %s",
        (later,),
    )
    rows = conn.execute(
        "SELECT kind, status::text, jobs, scheduled_later, oldest_due_pending_age IS NOT NULL "
        "FROM exportd.queue_health ORDER BY 1, 2"
    ).fetchall()
    assert rows == [
        ("orders", "cancelled", 1, 0, False),
        ("orders", "pending", 3, 0, True),
        ("uploads", "pending", 1, 1, False),
    ]


def test_package_usage_sums_live_packages_per_owner(conn: Conn) -> None:
    for owner, size, live in [("a", 100, True), ("a", 50, True), ("a", 999, False), ("b", 7, True)]:
        job_id = add_job(conn, owner)
        set_status(conn, job_id, "in_progress", "completed")
        conn.execute(
            "UPDATE exportd.jobs SET package_path = %s, package_size_bytes = %s, "
            "package_expires_at = now() + interval '1 day' WHERE job_id = %s",
            (f"{job_id}.tar.gz" if live else None, size, job_id),
        )
    rows = conn.execute(
        "SELECT owner_id, live_packages, total_bytes FROM exportd.package_usage ORDER BY 1"
    ).fetchall()
    assert rows == [("a", 2, 150), ("b", 1, 7)]


def test_every_example_in_docs_sql_runs(conn: Conn) -> None:
    blocks = re.findall(r"```sql\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 6
    add_job(conn, "alice")
    for block in blocks:
        for statement in filter(str.strip, block.split(";")):
            text = statement.replace("'…'", f"'{uuid.uuid4()}'")
            conn.execute(text.encode())
