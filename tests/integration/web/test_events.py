"""GET /api/v1/jobs/{id}/events: Server-Sent Events through a real uvicorn,
fed by a real worker's NOTIFY, one LISTEN connection per process."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest

from daemon.actions import cancel_export
from tests.api_helpers import api_client, api_settings, bearer, live_app
from tests.helpers import create, poll_until, running_worker

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]
ALICE = bearer("alice")


async def events(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    """(event name, parsed data) pairs; comments come as ("comment", text)."""
    name, data = None, []
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data.append(line.split(":", 1)[1].strip())
        elif line == "" and name is not None:
            yield name, json.loads("\n".join(data))
            name, data = None, []


async def collect(
    client: httpx.AsyncClient, url: str, into: list[tuple[str, Any]] | None = None
) -> list[tuple[str, Any]]:
    """Every event of one stream, until the server ends it (callers bound the wait).

    `into` receives each event as it arrives, for callers that watch the
    stream while it runs."""
    received = [] if into is None else into
    async with client.stream("GET", url, headers=ALICE) as response:
        assert response.status_code == 200
        async for event in events(response):
            received.append(event)
    return received


async def listeners(conn: AConn) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'exportd-web-events%%'"
        " AND datname = current_database()"
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_stream_reports_progress_and_ends(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    async with (
        live_app(settings, db_url) as (base, app),
        httpx.AsyncClient(base_url=base) as client,
    ):
        created = await client.post(
            "/api/v1/jobs", json={"kind": "three-steps", "params": {"pause": 0.4}}, headers=ALICE
        )
        job_id = created.json()["data"]["job_id"]
        so_far: list[tuple[str, Any]] = []
        stream = asyncio.create_task(collect(client, f"/api/v1/jobs/{job_id}/events", so_far))
        # The worker starts only once the stream has sent the pending job (it
        # subscribes before reading) and the process listens for notifications.
        await poll_until(
            lambda: bool(so_far) and app.state.events.listening.is_set(),
            "the stream's first event, with the listener connected",
        )
        async with running_worker(settings, db_url):
            received = await asyncio.wait_for(stream, timeout=30)
        response_headers = await client.get(f"/api/v1/jobs/{job_id}", headers=ALICE)
    assert response_headers.status_code == 200
    names = [name for name, _ in received]
    assert names[0] == "status" and received[0][1]["status"] == "pending"
    assert names[-1] == "status" and received[-1][1]["status"] == "completed"
    assert received[-1][1]["package"]["download_url"].endswith("/download")
    statuses = [d["status"] for n, d in received if n == "status"]
    assert statuses == ["pending", "in_progress", "completed"]
    progress = [d["steps_completed"] for n, d in received if n == "progress"]
    assert progress == sorted(progress) and progress, received
    assert all(d["job_id"] == job_id for n, d in received if n == "progress")


async def test_finished_job_sends_one_event_and_ends(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    job = await create(aconn, "noop", owner="alice")
    await cancel_export(aconn, job.job_id)
    async with api_client(api_settings(tmp_path), db_url) as client:
        response = await client.get(f"/api/v1/jobs/{job.job_id}/events", headers=ALICE)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    received = [e async for e in events(response)]
    assert [(n, d["status"]) for n, d in received] == [("status", "cancelled")]


async def test_errors_are_json(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    job = await create(aconn, "noop", owner="alice")
    async with api_client(api_settings(tmp_path), db_url) as client:
        anonymous = await client.get(f"/api/v1/jobs/{job.job_id}/events")
        bob = await client.get(f"/api/v1/jobs/{job.job_id}/events", headers=bearer("bob"))
        bad = await client.get("/api/v1/jobs/nope/events", headers=ALICE)
        unknown = await client.get(f"/api/v1/jobs/{uuid4()}/events", headers=ALICE)
        hub = client._transport.app.state.events  # type: ignore[attr-defined]
    assert (anonymous.status_code, anonymous.json()["code"]) == (401, "UNAUTHORIZED")
    assert (bob.status_code, bob.json()["code"]) == (403, "FORBIDDEN")
    assert (bad.status_code, bad.json()["code"]) == (400, "INVALID_JOB_ID")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "JOB_NOT_FOUND")
    assert hub.streams == 0  # refused requests leave no subscription behind


async def wait_until(predicate: Any, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_keepalive_and_many_streams_share_one_listen(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    job = await create(aconn, "noop", owner="alice")
    url = f"/api/v1/jobs/{job.job_id}/events"
    async with live_app(api_settings(tmp_path), db_url) as (base, app):
        app.state.ctx.keepalive_seconds = 0.2
        hub = app.state.events
        async with httpx.AsyncClient(base_url=base) as client:
            so_far: list[list[tuple[str, Any]]] = [[] for _ in range(5)]
            streams = [asyncio.create_task(collect(client, url, into)) for into in so_far]

            async def all_subscribed() -> bool:
                return bool(hub.streams == 5)

            await wait_until(all_subscribed)
            await poll_until(
                lambda: all(("comment", "keep-alive") in into for into in so_far),
                "a keep-alive on every stream",
            )
            assert await listeners(aconn) == 1
            await cancel_export(aconn, job.job_id)
            results = await asyncio.wait_for(asyncio.gather(*streams), timeout=10)
        assert hub.streams == 0 and hub.subscribers == {}
    for received in results:
        assert ("comment", "keep-alive") in received
        final = [d["status"] for n, d in received if n == "status"]
        assert final == ["pending", "cancelled"]


async def test_lost_listen_connection_still_delivers_the_end(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    job = await create(aconn, "noop", owner="alice")
    async with live_app(api_settings(tmp_path), db_url) as (base, app):
        hub = app.state.events
        async with httpx.AsyncClient(base_url=base) as client:
            stream = asyncio.create_task(collect(client, f"/api/v1/jobs/{job.job_id}/events"))

            async def subscribed() -> bool:
                return bool(hub.streams == 1 and hub.listening.is_set())

            await wait_until(subscribed)
            await aconn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name LIKE 'exportd-web-events%%'"
                " AND datname = current_database()"
            )
            # Cancelled while nobody listens: the notification is lost, the
            # re-read after reconnecting is what delivers the end.
            await cancel_export(aconn, job.job_id)
            received = await asyncio.wait_for(stream, timeout=15)
        assert hub.connections >= 2
    assert [d["status"] for n, d in received if n == "status"] == ["pending", "cancelled"]


async def test_client_disconnect_unsubscribes(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    job = await create(aconn, "noop", owner="alice")
    async with live_app(api_settings(tmp_path), db_url) as (base, app):
        hub = app.state.events
        async with (
            httpx.AsyncClient(base_url=base) as client,
            client.stream("GET", f"/api/v1/jobs/{job.job_id}/events", headers=ALICE) as response,
        ):
            first = await anext(events(response))
            assert first[0] == "status"
            assert hub.streams == 1

        async def gone() -> bool:
            return bool(hub.streams == 0)

        await wait_until(gone)
    assert UUID(first[1]["job_id"]) == job.job_id


async def test_streams_of_one_job_share_each_read(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    """A change of a job followed by many clients is one read, not one per client."""
    job = await create(aconn, "noop", owner="alice")
    url = f"/api/v1/jobs/{job.job_id}/events"
    async with live_app(api_settings(tmp_path), db_url) as (base, app):
        hub = app.state.events
        async with httpx.AsyncClient(base_url=base) as client:
            so_far: list[list[tuple[str, Any]]] = [[] for _ in range(20)]
            streams = [asyncio.create_task(collect(client, url, into)) for into in so_far]
            await poll_until(
                lambda: hub.streams == 20 and all(so_far) and hub.listening.is_set(),
                "every stream's first event",
            )
            reads = hub.reads
            await cancel_export(aconn, job.job_id)
            results = await asyncio.wait_for(asyncio.gather(*streams), timeout=10)
        assert hub.reads == reads + 1
    for received in results:
        assert [d["status"] for n, d in received if n == "status"] == ["pending", "cancelled"]
