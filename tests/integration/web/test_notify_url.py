"""`notify_url` in POST /api/v1/jobs (DESIGN §12): stored and shown when its
host is allowed; otherwise 400 VALIDATION_ERROR and nothing written."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.api_helpers import api_client, api_settings, bearer

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]
SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()


async def counts(conn: AConn) -> tuple[int, int]:
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM exportd.jobs), (SELECT count(*) FROM procrastinate_jobs)"
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def settings(tmp_path: Path, hosts: tuple[str, ...]) -> Any:
    return api_settings(tmp_path, webhook_secret=SECRET, webhook_allowed_hosts=hosts)


async def test_an_allowed_notify_url_is_stored_and_shown(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    url = "https://hooks.example.com/exportd?team=7"
    allowed = ("hooks.example.com", "*.apps.example.net")
    async with api_client(settings(tmp_path, allowed), db_url) as client:
        created = await client.post(
            "/api/v1/jobs", json={"kind": "noop", "notify_url": url}, headers=bearer()
        )
        assert created.status_code == 202, created.text
        job = created.json()["data"]
        shown = await client.get(f"/api/v1/jobs/{job['job_id']}", headers=bearer())
        plain = await client.post("/api/v1/jobs", json={"kind": "noop"}, headers=bearer())
        below = await client.post(
            "/api/v1/jobs",
            json={"kind": "noop", "notify_url": "http://a.apps.example.net:8080/h"},
            headers=bearer(),
        )
    assert job["notify_url"] == url and shown.json()["data"]["notify_url"] == url
    assert plain.json()["data"]["notify_url"] is None
    assert below.status_code == 202
    cur = await aconn.execute(
        "SELECT notify_url FROM exportd.jobs WHERE job_id = %s", (job["job_id"],)
    )
    assert await cur.fetchone() == (url,)


@pytest.mark.parametrize(
    ("notify_url", "reason"),
    [
        ("https://evil.example.org/hook", "not one this server may notify"),
        ("http://169.254.169.254/latest/meta-data/", "not one this server may notify"),
        ("http://localhost:9000/hook", "not one this server may notify"),
        ("file:///etc/passwd", "http:// or https://"),
        ("https://user:pass@hooks.example.com/hook", "credentials"),
        ("https://hooks.example.com@evil.example.org/", "credentials"),
        ("gopher://hooks.example.com/", "http:// or https://"),
        ("https:///no-host", "must name a host"),
        ("https://hooks.example.com/#frag", "fragment"),
        ("https://hooks.example.com/" + "a" * 2100, "at most 2048"),
        ("https://hooks.example.com:99999/", "not a valid URL"),
        ("https://hooks.example.com/ with space", "printable ASCII"),
        ("", "non-empty"),
        (42, "non-empty"),
        (["https://hooks.example.com/"], "non-empty"),
    ],
)
async def test_a_refused_notify_url_is_400_and_nothing_is_stored(
    aconn: AConn, db_url: str, tmp_path: Path, notify_url: Any, reason: str
) -> None:
    before = await counts(aconn)
    async with api_client(settings(tmp_path, ("hooks.example.com",)), db_url) as client:
        response = await client.post(
            "/api/v1/jobs", json={"kind": "noop", "notify_url": notify_url}, headers=bearer()
        )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "VALIDATION_ERROR" and body["field"] == "notify_url"
    assert reason in body["message"]
    assert "hooks.example.com" not in body["message"]  # the allowed list is not told
    assert await counts(aconn) == before


async def test_no_allowed_hosts_means_no_notify_url(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    before = await counts(aconn)
    async with api_client(api_settings(tmp_path), db_url) as client:
        response = await client.post(
            "/api/v1/jobs",
            json={"kind": "noop", "notify_url": "https://hooks.example.com/"},
            headers=bearer(),
        )
    assert response.status_code == 400
    assert "accepts no notify_url" in response.json()["message"]
    assert await counts(aconn) == before


async def test_a_metadata_address_is_refused_even_when_listed(db_url: str, tmp_path: Path) -> None:
    async with api_client(settings(tmp_path, ("169.254.169.254",)), db_url) as client:
        response = await client.post(
            "/api/v1/jobs",
            json={"kind": "noop", "notify_url": "http://169.254.169.254/"},
            headers=bearer(),
        )
    assert response.status_code == 400
    assert "metadata" in response.json()["message"]


async def test_idempotency_replay_compares_the_notify_url(db_url: str, tmp_path: Path) -> None:
    key = {"Idempotency-Key": "hook-1", **bearer()}
    body = {"kind": "noop", "notify_url": "https://hooks.example.com/a"}
    async with api_client(settings(tmp_path, ("hooks.example.com",)), db_url) as client:
        first = await client.post("/api/v1/jobs", json=body, headers=key)
        replay = await client.post("/api/v1/jobs", json=body, headers=key)
        other = await client.post(
            "/api/v1/jobs",
            json={**body, "notify_url": "https://hooks.example.com/b"},
            headers=key,
        )
    assert (first.status_code, replay.status_code, other.status_code) == (202, 200, 409)
