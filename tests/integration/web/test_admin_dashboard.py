"""GET /api/v1/admin/dashboard: the figures of the admin page, for admins only."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from daemon.db import dashboard
from tests.api_helpers import api_client, api_settings, bearer
from tests.helpers import create
from tests.integration.web.test_openapi import check

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]
ADMIN = bearer("ops", admin=True)
PATH = "/api/v1/admin/dashboard"


async def set_status(aconn: AConn, job_id: object, *steps: str, **columns: Any) -> None:
    """Walk a job through the state machine (each step a transition it allows)."""
    for status in steps:
        await aconn.execute(
            "UPDATE exportd.jobs SET status = %s,"
            " started_at = CASE WHEN %s = 'in_progress' THEN now() ELSE started_at END,"
            " completed_at = CASE WHEN %s IN ('rolled_back', 'failed') THEN now() ELSE NULL END"
            " WHERE job_id = %s",
            (status, status, status, job_id),
        )
    for name, value in columns.items():
        await aconn.execute(
            f"UPDATE exportd.jobs SET {name} = %s WHERE job_id = %s",
            (value, job_id),
        )


async def test_figures_per_kind_running_stalled_and_failures(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    await create(aconn, "noop", owner="alice")
    await create(aconn, "noop", owner="bob", delay_seconds=3600)
    running = await create(aconn, "slow", owner="alice")
    await set_status(aconn, running.job_id, "in_progress", progress_percentage=40)
    recent = await create(aconn, "flaky", owner="bob")
    await set_status(
        aconn, recent.job_id, "in_progress", "failed", "rolled_back", error_message="it broke"
    )
    older = await create(aconn, "flaky", owner="alice")
    await set_status(
        aconn,
        older.job_id,
        "in_progress",
        "failed",
        "rolled_back",
        error_message="long ago",
        completed_at="2000-01-01T00:00:00Z",
    )
    await aconn.execute("INSERT INTO exportd.paused_kinds (kind, paused_by) VALUES ('blob', 'ops')")
    async with api_client(api_settings(tmp_path), db_url) as client:
        answer = await client.get(PATH, headers=ADMIN)
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    check(answer, PATH, "get")
    data = answer.json()["data"]
    kinds = {k["kind"]: k for k in data["kinds"]}
    assert kinds["noop"]["pending"] == 1 and kinds["noop"]["scheduled_later"] == 1
    assert kinds["noop"]["oldest_pending_seconds"] >= 0
    assert kinds["slow"]["running"] == 1
    assert kinds["flaky"]["failed_last_hour"] == 1  # not the one of 2000
    assert kinds["blob"]["paused"] is True and kinds["blob"]["paused_by"] == "ops"
    assert kinds["typed"] == {**kinds["typed"], "pending": 0, "running": 0, "paused": False}
    assert all(k["known"] for k in data["kinds"])
    assert kinds["typed"]["title"] == "Every param type (input validation tests)"
    (busy,) = data["running"]
    assert busy["job_id"] == str(running.job_id) and busy["progress_percentage"] == 40
    # No worker holds it: it is stalled too, its worker gone.
    (stalled,) = data["stalled"]
    assert stalled["job_id"] == str(running.job_id) and stalled["heartbeat_age_seconds"] is None
    assert [f["error_message"] for f in data["failures"]] == ["it broke", "long ago"]
    assert data["workers"] == []


async def test_a_kind_no_longer_configured_is_listed_while_it_has_jobs(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    job = await create(aconn, "noop", owner="alice")
    await aconn.execute("UPDATE exportd.jobs SET kind = 'retired' WHERE job_id = %s", (job.job_id,))
    async with api_client(api_settings(tmp_path), db_url) as client:
        data = (await client.get(PATH, headers=ADMIN)).json()["data"]
    retired = next(k for k in data["kinds"] if k["kind"] == "retired")
    assert retired["known"] is False and retired["pending"] == 1 and retired["title"] is None


async def test_only_admins_and_no_parameters(db_url: str, tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        owner = await client.get(PATH, headers=bearer("alice"))
        anonymous = await client.get(PATH)
        odd = await client.get(f"{PATH}?limit=5", headers=ADMIN)
    assert owner.status_code == 403 and owner.json()["code"] == "FORBIDDEN"
    assert "only admins" in owner.json()["message"]
    assert anonymous.status_code == 401
    assert odd.status_code == 400 and odd.json()["field"] == "limit"
    for answer in (owner, anonymous, odd):
        check(answer, PATH, "get")


async def test_a_locked_table_is_503_in_time_not_a_hang_or_500(
    aconn: AConn, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard, "STATEMENT_TIMEOUT", "300ms")
    async with api_client(api_settings(tmp_path), db_url) as client:
        async with aconn.transaction():
            # What a migration holds: nobody may read the table meanwhile.
            await aconn.execute("LOCK TABLE exportd.jobs IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            answer = await client.get(PATH, headers=ADMIN)
            waited = time.monotonic() - started
        after = await client.get(PATH, headers=ADMIN)
    assert answer.status_code == 503 and answer.json()["code"] == "DATABASE_UNAVAILABLE"
    assert waited < 5
    assert after.status_code == 200


async def test_failing_webhook_endpoints_without_their_query_string(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    hook = "https://hooks.example.com/exportd?token=s3cret#frag"
    healthy = "https://ok.example.com/hook"
    job = await create(aconn, "noop", owner="alice")
    await aconn.execute(
        "INSERT INTO exportd.webhook_events (job_id, type, payload)"
        " VALUES (%s, 'export.completed', '{}'), (%s, 'export.completed', '{}')",
        (job.job_id, job.job_id),
    )
    events = await (
        await aconn.execute(
            "SELECT event_id FROM exportd.webhook_events WHERE job_id = %s ORDER BY event_id",
            (job.job_id,),
        )
    ).fetchall()
    for (event_id,), (url, outcome, error, delivered) in zip(
        events,
        [(hook, "rejected", "HTTP 500", "NULL"), (healthy, "delivered", None, "now()")],
        strict=True,
    ):
        await aconn.execute(
            "INSERT INTO exportd.webhook_deliveries (event_id, job_id, url, attempt, outcome,"
            f" duration_ms, error, attempted_at, delivered_at) VALUES"
            f" (%s, %s, %s, 1, %s, 5, %s, now(), {delivered})",
            (event_id, job.job_id, url, outcome, error),
        )
    async with api_client(api_settings(tmp_path), db_url) as client:
        answer = await client.get(PATH, headers=ADMIN)
    check(answer, PATH, "get")
    (failing,) = answer.json()["data"]["webhooks"]  # the healthy endpoint is not listed
    assert failing["url"] == "https://hooks.example.com/exportd"
    assert "s3cret" not in answer.text
    assert failing["failing"] == 1 and failing["last_error"] == "HTTP 500"
    assert failing["configured"] is False and failing["oldest_undelivered_seconds"] >= 0
