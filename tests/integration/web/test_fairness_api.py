"""The API side of fairness and limits (DESIGN §13): the per-owner waiting cap
(429 TOO_MANY_EXPORTS), pausing and resuming kinds (admins), `paused` in the
kind and job JSON, and where an operator sees a pause (queue_health,
/metrics)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.api_helpers import api_client, api_settings, bearer
from tests.helpers import create
from tests.integration.web.test_metrics import scrape
from tests.integration.web.test_openapi import check

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]
PAUSE = "/api/v1/admin/kinds/{kind}/pause"
RESUME = "/api/v1/admin/kinds/{kind}/resume"


async def counts(conn: AConn) -> tuple[int, int]:
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM exportd.jobs), (SELECT count(*) FROM procrastinate_jobs)"
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def test_the_101st_waiting_export_is_refused(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        keyed = await client.post(
            "/api/v1/jobs",
            json={"kind": "noop"},
            headers={**bearer("alice"), "Idempotency-Key": "first"},
        )
        assert keyed.status_code == 202
        first = keyed.json()["data"]["job_id"]
        for _ in range(99):
            await create(aconn, "noop", owner="alice")
        before = await counts(aconn)
        refused = await client.post("/api/v1/jobs", json={"kind": "noop"}, headers=bearer("alice"))
        assert refused.status_code == 429, refused.text
        body = refused.json()
        assert body["code"] == "TOO_MANY_EXPORTS"
        assert "at most 100 exports may wait" in body["message"]
        assert int(refused.headers["Retry-After"]) > 0
        check(refused, "/api/v1/jobs", "post")
        assert await counts(aconn) == before  # nothing written, queue entry included
        # A replay of an accepted request is still answered; another owner is not affected.
        replay = await client.post(
            "/api/v1/jobs",
            json={"kind": "noop"},
            headers={**bearer("alice"), "Idempotency-Key": "first"},
        )
        assert replay.status_code == 200 and replay.json()["data"]["job_id"] == first
        # The same key with another body: still the conflict, not the cap.
        changed = await client.post(
            "/api/v1/jobs",
            json={"kind": "noop", "priority": 5},
            headers={**bearer("alice"), "Idempotency-Key": "first"},
        )
        assert changed.status_code == 409 and changed.json()["code"] == "IDEMPOTENCY_CONFLICT"
        bob = await client.post("/api/v1/jobs", json={"kind": "noop"}, headers=bearer("bob"))
        assert bob.status_code == 202
        # Once one of alice's starts, she may queue one more.
        await aconn.execute(
            "UPDATE exportd.jobs SET status = 'in_progress' WHERE job_id = %s", (first,)
        )
        again = await client.post("/api/v1/jobs", json={"kind": "noop"}, headers=bearer("alice"))
        assert again.status_code == 202


async def test_the_waiting_cap_is_a_setting(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    for _ in range(3):
        await create(aconn, "noop", owner="alice")
    async with api_client(api_settings(tmp_path, owner_max_pending=3), db_url) as client:
        refused = await client.post("/api/v1/jobs", json={"kind": "noop"}, headers=bearer())
        assert refused.status_code == 429
    async with api_client(api_settings(tmp_path, owner_max_pending=0), db_url) as client:
        unlimited = await client.post("/api/v1/jobs", json={"kind": "noop"}, headers=bearer())
        assert unlimited.status_code == 202


async def pause(client: httpx.AsyncClient, kind: str, action: str = "pause") -> httpx.Response:
    path = PAUSE if action == "pause" else RESUME
    response = await client.post(path.format(kind=kind), headers=bearer("ops", admin=True))
    check(response, path, "post")
    return response


async def test_pausing_a_kind_shows_everywhere(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    running = await create(aconn, "three-steps", owner="alice")
    await aconn.execute(
        "UPDATE exportd.jobs SET status = 'in_progress' WHERE job_id = %s", (running.job_id,)
    )
    async with api_client(api_settings(tmp_path), db_url) as client:
        paused = await pause(client, "noop")
        assert paused.status_code == 200, paused.text
        assert paused.json()["data"]["kind"] == "noop" and paused.json()["data"]["paused"]
        assert (await pause(client, "noop")).status_code == 200  # again: unchanged
        await pause(client, "three-steps")

        kinds = await client.get("/api/v1/kinds", headers=bearer("anyone"))
        check(kinds, "/api/v1/kinds", "get")
        shown = {k["kind"]: k["paused"] for k in kinds.json()["data"]}
        assert shown["noop"] is True and shown["three-steps"] is True
        assert shown["typed"] is False

        # Creating still works, and the job says it waits on the pause.
        created = await client.post("/api/v1/jobs", json={"kind": "noop"}, headers=bearer())
        assert created.status_code == 202
        assert created.json()["data"]["paused"] is True
        check(created, "/api/v1/jobs", "post")
        job_url = created.headers["Location"]
        got = await client.get(job_url, headers=bearer())
        assert got.json()["data"]["paused"] is True
        check(got, "/api/v1/jobs/{job_id}", "get")
        listed = await client.get("/api/v1/jobs", headers=bearer())
        flags = {j["job_id"]: j["paused"] for j in listed.json()["data"]}
        assert flags[created.json()["data"]["job_id"]] is True
        assert flags[str(running.job_id)] is False  # running: it finishes
        other = await client.post(
            "/api/v1/jobs", json={"kind": "typed", "params": {"text": "x"}}, headers=bearer()
        )
        assert other.json()["data"]["paused"] is False

        # queue_health and /metrics show it to the operator.
        cur = await aconn.execute(
            "SELECT kind, status::text, jobs, paused FROM exportd.queue_health ORDER BY 1, 2"
        )
        health = await cur.fetchall()
        assert ("noop", "pending", 1, True) in health
        assert ("three-steps", "in_progress", 1, True) in health
        assert ("typed", "pending", 1, False) in health
        metrics = await scrape(client)
        assert metrics[("exportd_kind_paused", (("kind", "noop"),))] == 1
        assert metrics[("exportd_kind_paused", (("kind", "typed"),))] == 0

        resumed = await pause(client, "noop", "resume")
        assert resumed.status_code == 200 and resumed.json()["data"]["paused"] is False
        assert (await pause(client, "noop", "resume")).status_code == 200
        got = await client.get(job_url, headers=bearer())
        assert got.json()["data"]["paused"] is False
        metrics = await scrape(client)
        assert metrics[("exportd_kind_paused", (("kind", "noop"),))] == 0


async def test_a_paused_kind_without_jobs_is_in_queue_health(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        await pause(client, "typed")
    cur = await aconn.execute(
        "SELECT kind, status, jobs, paused, paused_at IS NOT NULL FROM exportd.queue_health"
    )
    assert await cur.fetchall() == [("typed", None, 0, True, True)]


async def test_only_admins_pause_known_kinds(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        for path in (PAUSE, RESUME):
            url = path.format(kind="noop")
            denied = await client.post(url, headers=bearer("alice"))
            assert denied.status_code == 403 and denied.json()["code"] == "FORBIDDEN"
            check(denied, path, "post")
            anonymous = await client.post(url)
            assert anonymous.status_code == 401
            check(anonymous, path, "post")
            for kind in ("nope", "x" * 5000, "%00", "NOOP"):
                unknown = await client.post(
                    path.format(kind=kind), headers=bearer("ops", admin=True)
                )
                assert unknown.status_code == 404, (kind, unknown.text)
                body = unknown.json()
                assert body["code"] == "KIND_NOT_FOUND" and "noop" in body["message"]
                assert len(body["message"]) < 2000
                check(unknown, path, "post")
            wrong_method = await client.get(url, headers=bearer("ops", admin=True))
            assert wrong_method.status_code == 405
    cur = await aconn.execute("SELECT count(*) FROM exportd.paused_kinds")
    assert await cur.fetchone() == (0,)
