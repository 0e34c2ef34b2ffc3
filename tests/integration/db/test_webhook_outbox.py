"""The webhook outbox of migration 0010: exactly one event per end of a run or
expiry, written by the statement that changes the job, with one queued
delivery per endpoint — and nothing at all for a change that is rolled back."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from daemon.tasks import WEBHOOK_QUEUE, WEBHOOK_TASK
from daemon.webhooks.endpoints import EVENT_TYPES

Conn = psycopg.Connection[tuple[Any, ...]]
HOOK = "https://hooks.example.com/exportd"
SHA = "ab" * 32


def add_job(conn: Conn, notify_url: str | None = None) -> str:
    row = conn.execute(
        "INSERT INTO exportd.jobs (kind, owner_id, notify_url) VALUES ('noop', 'alice', %s) "
        "RETURNING job_id::text",
        (notify_url,),
    ).fetchone()
    assert row is not None
    return str(row[0])


def update(conn: Conn, job_id: str, assignments: str, *params: Any) -> None:
    conn.execute(f"UPDATE exportd.jobs SET {assignments} WHERE job_id = %s", (*params, job_id))


def start(conn: Conn, job_id: str) -> None:
    update(conn, job_id, "status = 'in_progress', started_at = now(), attempts = attempts + 1")


def complete(conn: Conn, job_id: str) -> None:
    start(conn, job_id)
    update(
        conn,
        job_id,
        "status = 'completed', completed_at = now(), package_path = %s, package_sha256 = %s,"
        " package_size_bytes = 10, package_expires_at = now() + interval '1 day'",
        f"{job_id}/p.tar.gz",
        SHA,
    )


def events(conn: Conn, job_id: str) -> list[str]:
    rows = conn.execute(
        "SELECT type FROM exportd.webhook_events WHERE job_id = %s ORDER BY created_at, type",
        (job_id,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def deliveries_queued(conn: Conn) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT e.type, q.args->>'url' FROM procrastinate_jobs q "
        "JOIN exportd.webhook_events e ON e.event_id = (q.args->>'event_id')::uuid "
        "WHERE q.task_name = %s AND q.queue_name = %s ORDER BY q.id",
        (WEBHOOK_TASK, WEBHOOK_QUEUE),
    ).fetchall()
    return [(str(t), str(u)) for t, u in rows]


def configure(conn: Conn, url: str, *event_types: str) -> None:
    conn.execute(
        "INSERT INTO exportd.webhook_endpoints (url, events) VALUES (%s, %s)",
        (url, list(event_types)),
    )


@pytest.fixture
def endpoint(conn: Conn) -> str:
    """An endpoint that wants every event (without one, no event is written)."""
    configure(conn, HOOK, *EVENT_TYPES)
    return HOOK


def test_completion_and_expiry_each_record_one_event(conn: Conn, endpoint: str) -> None:
    job = add_job(conn)
    complete(conn, job)
    update(conn, job, "download_count = download_count + 1")  # no event
    assert events(conn, job) == ["export.completed"]
    update(conn, job, "package_path = NULL, package_deleted_at = now()")
    assert events(conn, job) == ["export.completed", "export.expired"]
    payload = conn.execute(
        "SELECT payload FROM exportd.webhook_events WHERE job_id = %s AND type = 'export.expired'",
        (job,),
    ).fetchone()
    assert payload is not None
    assert payload[0]["status"] == "completed" and payload[0]["package_deleted_at"] is not None


def test_final_failure_has_one_event_once_its_rollback_ended(conn: Conn, endpoint: str) -> None:
    rolled_back, failed = add_job(conn), add_job(conn)
    for job, final in ((rolled_back, "rolled_back"), (failed, "failed")):
        start(conn, job)
        update(conn, job, "status = 'failed', error_message = 'broke'")
        assert events(conn, job) == []  # `failed` while the rollback runs: not final yet
        update(conn, job, "status = %s, completed_at = now()", final)
        assert events(conn, job) == ["export.failed"]


def test_cancel_records_one_event(conn: Conn, endpoint: str) -> None:
    pending = add_job(conn)
    update(conn, pending, "status = 'cancelled', completed_at = now()")
    running = add_job(conn)
    start(conn, running)
    update(conn, running, "status = 'cancelling'")
    assert events(conn, running) == []
    update(conn, running, "status = 'cancelled', completed_at = now()")
    assert events(conn, pending) == events(conn, running) == ["export.cancelled"]


def test_a_new_run_ends_with_a_new_event(conn: Conn, endpoint: str) -> None:
    job = add_job(conn)
    start(conn, job)
    update(conn, job, "status = 'failed', completed_at = now()")
    update(conn, job, "status = 'pending', completed_at = NULL, run = run + 1, attempts = 0")
    complete(conn, job)
    assert events(conn, job) == ["export.failed", "export.completed"]


def test_a_rolled_back_change_leaves_no_event_and_no_delivery(conn: Conn) -> None:
    job = add_job(conn, notify_url=HOOK)
    start(conn, job)
    with conn.transaction(force_rollback=True):
        update(conn, job, "status = 'completed', completed_at = now()")
        # Inside the transaction the outbox row and its delivery exist …
        assert events(conn, job) == ["export.completed"]
        assert deliveries_queued(conn) == [("export.completed", HOOK)]
    # … and they go with it.
    assert events(conn, job) == []
    assert deliveries_queued(conn) == []


def test_deliveries_are_queued_per_endpoint_that_wants_the_event(conn: Conn) -> None:
    quiet = add_job(conn)
    complete(conn, quiet)
    assert events(conn, quiet) == []  # nobody to send it to: not even written
    assert deliveries_queued(conn) == []

    configure(conn, "https://all.example.com/", "export.completed", "export.failed")
    configure(conn, "https://failures.example.com/", "export.failed")
    job = add_job(conn, notify_url="https://all.example.com/")  # also configured: once
    complete(conn, job)
    other = add_job(conn, notify_url=HOOK)
    start(conn, other)
    update(conn, other, "status = 'failed', completed_at = now()")
    assert deliveries_queued(conn) == [
        ("export.completed", "https://all.example.com/"),
        ("export.failed", "https://all.example.com/"),
        ("export.failed", "https://failures.example.com/"),
        ("export.failed", HOOK),
    ]


def test_notify_url_must_be_http(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        add_job(conn, notify_url="file:///etc/passwd")


def test_health_counts_per_endpoint(conn: Conn) -> None:
    configure(conn, "https://a.example.com/", "export.completed")
    delivered, failing, waiting = add_job(conn), add_job(conn), add_job(conn)
    for job in (delivered, failing, waiting):
        complete(conn, job)
    attempts = [
        (delivered, "rejected", None, "HTTP 500"),
        (delivered, "delivered", "now()", None),
        (failing, "timeout", None, "no answer within 10 s"),
    ]
    for number, (job, outcome, when, error) in enumerate(attempts, 1):
        conn.execute(
            "INSERT INTO exportd.webhook_deliveries (event_id, job_id, url, attempt, outcome,"
            " duration_ms, error, attempted_at, delivered_at)"
            " SELECT event_id, job_id, 'https://a.example.com/', 1, %s, 5, %s,"
            f" now() + make_interval(secs => %s), {when or 'NULL'}"
            " FROM exportd.webhook_events WHERE job_id = %s",
            (outcome, error, number, job),
        )
    conn.execute(
        "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE args->>'event_id' IN "
        "(SELECT event_id::text FROM exportd.webhook_events WHERE job_id = %s)",
        (delivered,),
    )
    row = conn.execute(
        "SELECT configured, pending, delivered, failing, last_error, "
        "oldest_undelivered_age IS NOT NULL FROM exportd.webhook_health WHERE url = %s",
        ("https://a.example.com/",),
    ).fetchone()
    # pending: the failing and the waiting events' deliveries are still queued.
    assert row == (True, 2, 1, 1, "no answer within 10 s", True)
