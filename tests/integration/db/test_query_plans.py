"""The hot queries use their indexes on a realistically large table.

The plan is asserted, not the time: 200 000 jobs over 2 000 owners, mostly
finished, a few pending, half the packages expired (the `big_db` fixture of
conftest.py). The statements are the named queries the store runs, with
parameters bound client-side the way a custom plan sees them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from daemon.db.queries import named_queries
from tests.integration.db.conftest import ROWS

Q = named_queries("jobs")


def plan_of(url: str, query: str, params: dict[str, Any]) -> dict[str, Any]:
    with psycopg.connect(url) as conn, psycopg.ClientCursor(conn) as cur:
        cur.execute("EXPLAIN (FORMAT JSON) " + query, params)
        row = cur.fetchone()
        assert row is not None
        plan = row[0]
        return (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]  # type: ignore[no-any-return]


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def some_job_id(url: str) -> uuid.UUID:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT job_id FROM exportd.jobs OFFSET 777 LIMIT 1").fetchone()
        assert row is not None
        return uuid.UUID(str(row[0]))


def page_cursor(url: str, owner: str, offset: int) -> dict[str, Any]:
    """The keyset cursor a client holds after reading `offset` rows."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT created_at, job_id FROM exportd.jobs WHERE owner_id = %s "
            "ORDER BY created_at DESC, job_id DESC OFFSET %s LIMIT 1",
            (owner, offset - 1),
        ).fetchone()
        assert row is not None
        return {"after_created_at": row[0], "after_job_id": row[1]}


NO_FILTER = {"status": None, "kind": None, "after_created_at": None, "after_job_id": None}


def cases(url: str) -> dict[str, tuple[str, dict[str, Any], str]]:
    return {
        "get by id": (Q["get_job"], {"job_id": some_job_id(url)}, "jobs_pkey"),
        "owner history": (
            Q["list_owner_jobs"],
            {**NO_FILTER, "owner_id": "owner-42", "limit": 50},
            "jobs_owner_created_idx",
        ),
        "owner history, next page": (
            Q["list_owner_jobs"],
            {
                **NO_FILTER,
                "owner_id": "owner-42",
                **page_cursor(url, "owner-42", 50),
                "limit": 50,
            },
            "jobs_owner_created_idx",
        ),
        "status filter": (
            Q["list_all_jobs"],
            {**NO_FILTER, "status": "pending", "limit": 50},
            "jobs_status_created_idx",
        ),
        "expiry scan": (
            Q["packages_due_for_expiry"],
            {"now": None, "limit": 500},
            "jobs_package_expires_idx",
        ),
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    ["get by id", "owner history", "owner history, next page", "status filter", "expiry scan"],
)
def test_hot_query_uses_its_index(big_db: str, case: str) -> None:
    query, params, index = cases(big_db)[case]
    plan = plan_of(big_db, query, params)
    scans = [n for n in nodes(plan) if n.get("Relation Name") == "jobs"]
    assert scans, plan
    assert all(n["Node Type"] != "Seq Scan" for n in scans), plan
    assert index in {n.get("Index Name") for n in nodes(plan)}, plan


def test_table_is_as_large_as_claimed(big_db: str) -> None:
    with psycopg.connect(big_db) as conn:
        assert conn.execute("SELECT count(*) FROM exportd.jobs").fetchone() == (ROWS,)
