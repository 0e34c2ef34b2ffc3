"""Constraints and the state machine, enforced by the database itself.

These tests write SQL directly (not through the store) because the point is
that the database refuses bad rows whoever writes them.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import errors

from tests.helpers import PATH_TO

Conn = psycopg.Connection[tuple[Any, ...]]

STATUSES = [
    "pending",
    "in_progress",
    "cancelling",
    "completed",
    "failed",
    "rolled_back",
    "cancelled",
]

# DESIGN §3: every allowed transition (from, to).
ALLOWED = {
    ("pending", "in_progress"),
    ("pending", "cancelled"),
    ("in_progress", "completed"),
    ("in_progress", "failed"),
    ("in_progress", "pending"),
    ("in_progress", "cancelling"),
    ("cancelling", "cancelled"),
    ("failed", "rolled_back"),
    ("failed", "pending"),
    ("rolled_back", "pending"),
    ("cancelled", "pending"),
    ("completed", "pending"),  # only once the package is deleted
}


def new_job(conn: Conn, **columns: Any) -> str:
    columns = {"kind": "orders", "owner_id": "alice", **columns}
    names = ", ".join(columns)
    marks = ", ".join(["%s"] * len(columns))
    row = conn.execute(
        f"INSERT INTO exportd.jobs ({names}) VALUES ({marks}) RETURNING job_id",
        list(columns.values()),
    ).fetchone()
    assert row is not None
    return str(row[0])


def move(conn: Conn, job_id: str, *statuses: str) -> None:
    for status in statuses:
        conn.execute("UPDATE exportd.jobs SET status = %s WHERE job_id = %s", (status, job_id))


def job_at(conn: Conn, status: str, *, package: bool = False) -> str:
    job_id = new_job(conn)
    move(conn, job_id, *PATH_TO[status])
    if package:
        conn.execute(
            "UPDATE exportd.jobs SET package_path = 'a/b.tar.gz' WHERE job_id = %s", (job_id,)
        )
    return job_id


# -- CHECK constraints -------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "bad", "good"),
    [
        ("progress_percentage", 101, 100),
        ("progress_percentage", -1, 0),
        ("attempts", -1, 0),
        ("max_attempts", 0, 1),
        ("package_size_bytes", -1, 0),
        ("package_path", "/etc/passwd", "ab/c.tar.gz"),
        ("package_path", "../../etc/passwd", "x..y.tar.gz"),
        ("package_sha256", "XYZ", "a" * 64),
        ("params", '["not", "an", "object"]', '{"a": 1}'),
    ],
)
def test_check_constraints(conn: Conn, column: str, bad: Any, good: Any) -> None:
    job_id = new_job(conn)
    query = f"UPDATE exportd.jobs SET {column} = %s WHERE job_id = %s"
    with pytest.raises(errors.CheckViolation):
        conn.execute(query, (bad, job_id))
    conn.execute(query, (good, job_id))


def test_steps_completed_cannot_exceed_steps_total(conn: Conn) -> None:
    job_id = new_job(conn)
    with pytest.raises(errors.CheckViolation, match="jobs_steps_completed_le_total"):
        conn.execute(
            "UPDATE exportd.jobs SET steps_total = 2, steps_completed = 3 WHERE job_id = %s",
            (job_id,),
        )
    conn.execute(
        "UPDATE exportd.jobs SET steps_total = 3, steps_completed = 3 WHERE job_id = %s", (job_id,)
    )


def test_enum_rejects_unknown_status(conn: Conn) -> None:
    job_id = new_job(conn)
    with pytest.raises(errors.InvalidTextRepresentation):
        conn.execute("UPDATE exportd.jobs SET status = 'exploded' WHERE job_id = %s", (job_id,))
    labels = conn.execute("SELECT enum_range(NULL::exportd.job_status)::text[]").fetchone()
    assert labels == (STATUSES,)


def test_idempotency_key_is_unique_per_owner(conn: Conn) -> None:
    new_job(conn, owner_id="alice", idempotency_key="k1")
    new_job(conn, owner_id="bob", idempotency_key="k1")  # other owner: fine
    new_job(conn, owner_id="alice", idempotency_key=None)
    new_job(conn, owner_id="alice", idempotency_key=None)  # no key: never a conflict
    with pytest.raises(errors.UniqueViolation, match="jobs_owner_idempotency_key"):
        new_job(conn, owner_id="alice", idempotency_key="k1")


def test_deleting_a_job_cascades_to_attempts_and_downloads(conn: Conn) -> None:
    job_id = new_job(conn)
    other = new_job(conn)
    for jid in (job_id, other):
        conn.execute(
            "INSERT INTO exportd.job_attempts (job_id, run, attempt, worker) "
            "VALUES (%s, 1, 1, 'w')",
            (jid,),
        )
        conn.execute(
            "INSERT INTO exportd.downloads (job_id, subject, status_code) "
            "VALUES (%s, 'alice', 200)",
            (jid,),
        )
    conn.execute("DELETE FROM exportd.jobs WHERE job_id = %s", (job_id,))
    for table in ("job_attempts", "downloads"):
        counts = conn.execute(
            f"SELECT job_id::text, count(*) FROM exportd.{table} GROUP BY 1"
        ).fetchall()
        assert counts == [(other, 1)]


def test_attempt_outcome_and_finished_at_go_together(conn: Conn) -> None:
    job_id = new_job(conn)
    with pytest.raises(errors.CheckViolation, match="job_attempts_finished_has_outcome"):
        conn.execute(
            "INSERT INTO exportd.job_attempts (job_id, run, attempt, finished_at) "
            "VALUES (%s, 1, 1, now())",
            (job_id,),
        )
    with pytest.raises(errors.InvalidTextRepresentation):
        conn.execute(
            "INSERT INTO exportd.job_attempts (job_id, run, attempt, finished_at, outcome) "
            "VALUES (%s, 1, 1, now(), 'vanished')",
            (job_id,),
        )


def test_download_status_code_is_200_or_206(conn: Conn) -> None:
    job_id = new_job(conn)
    with pytest.raises(errors.CheckViolation):
        conn.execute(
            "INSERT INTO exportd.downloads (job_id, status_code) VALUES (%s, 404)", (job_id,)
        )


def test_updated_at_is_maintained_by_the_database(conn: Conn) -> None:
    job_id = new_job(conn)
    conn.execute(
        "UPDATE exportd.jobs SET created_at = now() - interval '1 day', "
        "updated_at = now() - interval '1 day' WHERE job_id = %s",
        (job_id,),
    )
    conn.execute("UPDATE exportd.jobs SET priority = 5 WHERE job_id = %s", (job_id,))
    row = conn.execute(
        "SELECT updated_at > now() - interval '1 minute' FROM exportd.jobs WHERE job_id = %s",
        (job_id,),
    ).fetchone()
    assert row == (True,)


# -- state machine -----------------------------------------------------------


@pytest.mark.parametrize(("old", "new"), sorted(ALLOWED))
def test_allowed_transitions_succeed(conn: Conn, old: str, new: str) -> None:
    job_id = job_at(conn, old)
    move(conn, job_id, new)
    row = conn.execute("SELECT status::text FROM exportd.jobs WHERE job_id = %s", (job_id,))
    assert row.fetchone() == (new,)


@pytest.mark.parametrize(
    ("old", "new"),
    sorted((a, b) for a in STATUSES for b in STATUSES if a != b and (a, b) not in ALLOWED),
)
def test_every_other_transition_is_refused(conn: Conn, old: str, new: str) -> None:
    job_id = job_at(conn, old)
    with pytest.raises(errors.CheckViolation, match=f"cannot go from {old} to {new}") as info:
        move(conn, job_id, new)
    assert info.value.diag.constraint_name == "job_status_transition"


def test_completed_to_pending_is_refused_while_the_package_exists(conn: Conn) -> None:
    job_id = job_at(conn, "completed", package=True)
    with pytest.raises(errors.CheckViolation, match="cannot go from completed to pending"):
        move(conn, job_id, "pending")
    # clearing the path in the same statement does not sneak past the check
    with pytest.raises(errors.CheckViolation):
        conn.execute(
            "UPDATE exportd.jobs SET status = 'pending', package_path = NULL WHERE job_id = %s",
            (job_id,),
        )
    conn.execute(
        "UPDATE exportd.jobs SET package_path = NULL, package_deleted_at = now() WHERE job_id = %s",
        (job_id,),
    )
    move(conn, job_id, "pending")  # re-export once the package is gone


def test_new_jobs_must_start_pending(conn: Conn) -> None:
    with pytest.raises(errors.CheckViolation, match="must start as pending"):
        new_job(conn, status="completed")


def test_same_status_updates_are_not_transitions(conn: Conn) -> None:
    job_id = job_at(conn, "in_progress")
    conn.execute(
        "UPDATE exportd.jobs SET status = 'in_progress', steps_total = 4, steps_completed = 1 "
        "WHERE job_id = %s",
        (job_id,),
    )


def test_transition_function_is_what_docs_describe(conn: Conn) -> None:
    """The SQL function agrees with the table above for every pair."""
    for old in STATUSES:
        for new in STATUSES:
            if old == new:
                continue
            row = conn.execute(
                "SELECT exportd.job_status_transition_allowed(%s, %s, false)", (old, new)
            ).fetchone()
            assert row == ((old, new) in ALLOWED,), (old, new)
