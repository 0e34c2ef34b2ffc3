"""/api/v1/jobs against the real app and database: every status code and error."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest

from daemon.config_values import RateLimit
from daemon.models import JobStatus
from tests.api_helpers import api_client, api_settings, bearer
from tests.helpers import running_worker, wait_for

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]
ALICE = bearer("alice")
BOB = bearer("bob")
ADMIN = bearer("root", admin=True)


async def make(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await client.post("/api/v1/jobs", json=body, headers={**ALICE, **headers})


async def counts(conn: AConn) -> tuple[int, int]:
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM exportd.jobs), (SELECT count(*) FROM procrastinate_jobs)"
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def test_create_returns_202_location_and_the_job(db_url: str, tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        response = await make(
            client, {"kind": "three-steps", "params": {"pause": 0.1}, "priority": 3}
        )
    assert response.status_code == 202
    job = response.json()["data"]
    assert response.headers["location"] == f"/api/v1/jobs/{job['job_id']}"
    assert job["status"] == "pending" and job["owner_id"] == "alice"
    assert job["params"] == {"pause": 0.1} and job["priority"] == 3
    assert job["progress"] == {
        "steps_completed": 0,
        "steps_total": 0,
        "current_step": None,
        "percentage": 0,
    }
    assert job["package"] is None and job["max_attempts"] == 3
    assert set(job) == {
        "job_id",
        "kind",
        "status",
        "owner_id",
        "params",
        "priority",
        "attempts",
        "max_attempts",
        "progress",
        "result",
        "error_message",
        "package",
        "scheduled_at",
        "created_at",
        "updated_at",
        "started_at",
        "completed_at",
        "notify_url",
        "paused",
    }


async def test_idempotency_replay_and_conflict(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        first = await make(client, {"kind": "noop"}, **{"Idempotency-Key": "k-1"})
        replay = await make(client, {"kind": "noop"}, **{"Idempotency-Key": "k-1"})
        conflict = await make(client, {"kind": "flaky"}, **{"Idempotency-Key": "k-1"})
        other_user = await client.post(
            "/api/v1/jobs", json={"kind": "noop"}, headers={**BOB, "Idempotency-Key": "k-1"}
        )
    assert first.status_code == 202 and replay.status_code == 200
    assert replay.json()["data"]["job_id"] == first.json()["data"]["job_id"]
    assert conflict.status_code == 409 and conflict.json()["code"] == "IDEMPOTENCY_CONFLICT"
    assert other_user.status_code == 202
    assert await counts(aconn) == (2, 2)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "nope"}, "kind"),
        ({}, "kind"),
        ({"kind": "flaky", "params": {"fail_times": "two"}}, "params.fail_times"),
        ({"kind": "flaky", "params": {"owner_id": "bob"}}, "params.owner_id"),
        ({"kind": "noop", "params": []}, "params"),
        ({"kind": "noop", "extra": 1}, "extra"),
        ({"kind": "noop", "priority": "high"}, "priority"),
        ({"kind": "noop", "delay_seconds": -1}, "delay_seconds"),
        ({"kind": "noop", "max_attempts": 0}, "max_attempts"),
        ({"kind": "three-steps", "params": {"pause": "\u0000"}}, "params.pause"),
    ],
)
async def test_invalid_bodies_are_400_and_write_nothing(
    aconn: AConn, db_url: str, tmp_path: Path, body: dict[str, Any], field: str
) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        response = await make(client, body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "VALIDATION_ERROR"
    assert response.json()["field"] == field
    # The message names the field the same way, first.
    assert response.json()["message"].startswith(f"{field}: ") or field in (
        "kind",
        "extra",
        "params",
    )
    assert await counts(aconn) == (0, 0)


# One year of 365 days: what the code accepts, what GET /openapi.json and
# docs/api.md say (a leap year's 31 622 400 was accepted while they said 31 536 000).
MAX_DELAY = 31_536_000


@pytest.mark.parametrize(
    ("delay", "status"),
    [(MAX_DELAY, 202), (MAX_DELAY + 0.5, 400), (MAX_DELAY + 1, 400), (31_622_400, 400)],
)
async def test_delay_seconds_bound_is_365_days_as_documented(
    aconn: AConn, db_url: str, tmp_path: Path, delay: float, status: int
) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        response = await make(client, {"kind": "noop", "delay_seconds": delay})
        schema = (await client.get("/openapi.json")).json()["components"]["schemas"]
    assert response.status_code == status, response.text
    if status == 400:
        assert response.json()["field"] == "delay_seconds"
        assert "31536000" in response.json()["message"]
        assert await counts(aconn) == (0, 0)
    assert schema["CreateJob"]["properties"]["delay_seconds"]["maximum"] == MAX_DELAY
    docs = (Path(__file__).parents[3] / "docs" / "api.md").read_text()
    assert "| `delay_seconds` | number 0…31 536 000 (365 days)" in docs


@pytest.mark.parametrize(
    "raw", [b"{", b"[1, 2]", b"\xff\xfe", b'"just a string"', b"[" * 5000 + b"]" * 5000]
)
async def test_bad_json_is_400(aconn: AConn, db_url: str, tmp_path: Path, raw: bytes) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        response = await client.post(
            "/api/v1/jobs", content=raw, headers={**ALICE, "Content-Type": "application/json"}
        )
    assert response.status_code == 400
    assert response.json()["code"] == "VALIDATION_ERROR"
    assert await counts(aconn) == (0, 0)


async def test_body_too_large_is_413(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    big = {"kind": "noop", "params": {"x": "a" * 200_000}}
    async with api_client(api_settings(tmp_path), db_url) as client:
        response = await make(client, big)
    assert response.status_code == 413 and response.json()["code"] == "PAYLOAD_TOO_LARGE"
    assert await counts(aconn) == (0, 0)


async def test_bad_idempotency_key_is_400(db_url: str, tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        response = await make(client, {"kind": "noop"}, **{"Idempotency-Key": "x" * 300})
    assert response.status_code == 400


async def test_get_visibility_and_errors(db_url: str, tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        job_id = (await make(client, {"kind": "noop"})).json()["data"]["job_id"]
        mine = await client.get(f"/api/v1/jobs/{job_id}", headers=ALICE)
        theirs = await client.get(f"/api/v1/jobs/{job_id}", headers=BOB)
        admin = await client.get(f"/api/v1/jobs/{job_id}", headers=ADMIN)
        invalid = await client.get("/api/v1/jobs/not-a-uuid", headers=ALICE)
        missing = await client.get(
            "/api/v1/jobs/00000000-0000-0000-0000-000000000000", headers=ALICE
        )
        for verb in ("retry", "cancel"):
            other = await client.post(f"/api/v1/jobs/{job_id}/{verb}", headers=BOB)
            assert other.status_code == 403 and other.json()["code"] == "FORBIDDEN"
    assert mine.status_code == 200 and admin.status_code == 200
    assert theirs.status_code == 403 and theirs.json()["code"] == "FORBIDDEN"
    assert job_id not in theirs.text
    assert invalid.status_code == 400 and invalid.json()["code"] == "INVALID_JOB_ID"
    assert missing.status_code == 404 and missing.json()["code"] == "JOB_NOT_FOUND"


async def test_list_is_paged_newest_first_without_gaps_while_jobs_arrive(
    db_url: str, tmp_path: Path
) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        created = [
            (await make(client, {"kind": "noop"})).json()["data"]["job_id"] for _ in range(7)
        ]
        await client.post("/api/v1/jobs", json={"kind": "noop"}, headers=BOB)
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/api/v1/jobs", params=params, headers=ALICE)).json()
            seen += [j["job_id"] for j in page["data"]]
            # new jobs arriving meanwhile land before the cursor: never in later pages
            await make(client, {"kind": "noop"})
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(created))
        everyone = (await client.get("/api/v1/jobs", params={"limit": "200"}, headers=ADMIN)).json()
        assert {j["owner_id"] for j in everyone["data"]} == {"alice", "bob"}
        only_bob = await client.get("/api/v1/jobs", params={"owner": "bob"}, headers=ADMIN)
        assert {j["owner_id"] for j in only_bob.json()["data"]} == {"bob"}
        forbidden = await client.get("/api/v1/jobs", params={"owner": "bob"}, headers=ALICE)
        assert forbidden.status_code == 403
        by_kind = await client.get("/api/v1/jobs", params={"kind": "flaky"}, headers=ALICE)
        assert by_kind.json() == {"data": [], "next_cursor": None}


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "201"},
        {"limit": "ten"},
        {"status": "exploded"},
        {"cursor": "forged"},
        {"cursor": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
        {"unknown": "1"},
    ],
)
async def test_bad_list_parameters_are_400(
    db_url: str, tmp_path: Path, params: dict[str, str]
) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        response = await client.get("/api/v1/jobs", params=params, headers=ALICE)
    assert response.status_code == 400
    assert response.json()["code"] == "VALIDATION_ERROR"


async def test_cancel_and_retry_rules(db_url: str, tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        job_id = (await make(client, {"kind": "noop", "delay_seconds": 60})).json()["data"][
            "job_id"
        ]
        not_yet = await client.post(f"/api/v1/jobs/{job_id}/retry", headers=ALICE)
        assert not_yet.status_code == 409 and not_yet.json()["code"] == "JOB_NOT_RETRYABLE"
        cancelled = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=ALICE)
        assert cancelled.status_code == 202
        assert cancelled.json()["data"]["status"] == "cancelled"
        again = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=ALICE)
        assert again.status_code == 409 and again.json()["code"] == "JOB_NOT_CANCELLABLE"
        results = await asyncio.gather(
            *(client.post(f"/api/v1/jobs/{job_id}/retry", headers=ALICE) for _ in range(5))
        )
        codes = sorted(r.status_code for r in results)
        assert codes == [200, 409, 409, 409, 409]  # exactly one new run
        winner = next(r for r in results if r.status_code == 200).json()["data"]
        assert winner["status"] == "pending" and winner["attempts"] == 0


async def test_running_job_is_cancelled_through_the_api(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    settings = api_settings(tmp_path)
    async with running_worker(settings, db_url), api_client(settings, db_url) as client:
        job = (await make(client, {"kind": "slow", "params": {"seconds": 30}})).json()["data"]
        await wait_for(aconn, UUID(job["job_id"]), {JobStatus.IN_PROGRESS})
        response = await client.post(f"/api/v1/jobs/{job['job_id']}/cancel", headers=ALICE)
        assert response.status_code == 202
        assert response.json()["data"]["status"] == "cancelling"
        done = await wait_for(aconn, UUID(job["job_id"]), {JobStatus.CANCELLED})
        assert done.status is JobStatus.CANCELLED
        final = await client.get(f"/api/v1/jobs/{job['job_id']}", headers=ALICE)
        assert final.json()["data"]["status"] == "cancelled"


async def test_rate_limit_is_per_subject(db_url: str, tmp_path: Path) -> None:
    settings = api_settings(tmp_path, rate_limit=RateLimit(3, 60.0))
    async with api_client(settings, db_url) as client:
        codes = [(await client.get("/api/v1/jobs", headers=ALICE)).status_code for _ in range(4)]
        limited = await client.get("/api/v1/jobs", headers=ALICE)
        other = await client.get("/api/v1/jobs", headers=BOB)
    assert codes == [200, 200, 200, 429]
    assert limited.json()["code"] == "RATE_LIMITED"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert other.status_code == 200


async def test_unknown_routes_and_methods_use_the_error_body(db_url: str, tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        missing = await client.get("/api/v1/nothing", headers=ALICE)
        wrong = await client.delete("/api/v1/jobs", headers=ALICE)
    assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
    assert wrong.status_code == 405 and wrong.json()["code"] == "METHOD_NOT_ALLOWED"


async def test_database_down_is_503_not_500(tmp_path: Path) -> None:
    dead = "postgresql://exportd@127.0.0.1:9/exportd"
    async with api_client(api_settings(tmp_path), dead) as client:
        response = await client.get("/api/v1/jobs", headers=ALICE)
        ready = await client.get("/readyz")
        alive = await client.get("/healthz")
    assert response.status_code == 503 and response.json()["code"] == "DATABASE_UNAVAILABLE"
    assert ready.status_code == 503
    assert alive.status_code == 200


# -- idempotency compares the request as sent -----------------------------------


async def post_raw(client: httpx.AsyncClient, body: bytes, key: str) -> httpx.Response:
    """The body byte for byte (so `1e23` reaches the server as written)."""
    headers = {**ALICE, "Content-Type": "application/json", "Idempotency-Key": key}
    return await client.post("/api/v1/jobs", content=body, headers=headers)


async def test_replaying_a_float_param_is_the_same_request(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    """jsonb gives 1e23 back as 100000000000000000000000 (another number in
    Python): comparing the stored params called this replay a conflict."""
    body = b'{"kind": "typed", "params": {"text": "a", "float": 1e23}}'
    async with api_client(api_settings(tmp_path), db_url) as client:
        first = await post_raw(client, body, "float-1")
        replay = await post_raw(client, body, "float-1")
    assert first.status_code == 202, first.text
    assert replay.status_code == 200, replay.text
    assert replay.json()["data"]["job_id"] == first.json()["data"]["job_id"]
    assert await counts(aconn) == (1, 1)


async def test_replay_with_the_same_body_and_defaults_spelled_out_is_200(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        first = await make(client, {"kind": "noop"}, **{"Idempotency-Key": "same"})
        spelled = await make(
            client,
            {"kind": "noop", "params": {}, "priority": 0, "delay_seconds": 0},
            **{"Idempotency-Key": "same"},
        )
    assert (first.status_code, spelled.status_code) == (202, 200)
    assert spelled.json()["data"]["job_id"] == first.json()["data"]["job_id"]
    assert await counts(aconn) == (1, 1)


@pytest.mark.parametrize(
    "changed",
    [
        {"delay_seconds": 60},
        {"priority": 5},
        {"max_attempts": 1},
        {"params": {"text": "b"}},
    ],
    ids=["delay_seconds", "priority", "max_attempts", "params"],
)
async def test_a_changed_field_under_the_same_key_is_409(
    aconn: AConn, db_url: str, tmp_path: Path, changed: dict[str, Any]
) -> None:
    base: dict[str, Any] = {"kind": "typed", "params": {"text": "a"}, "delay_seconds": 30}
    async with api_client(api_settings(tmp_path), db_url) as client:
        first = await make(client, base, **{"Idempotency-Key": "changed"})
        other = await make(client, {**base, **changed}, **{"Idempotency-Key": "changed"})
    assert first.status_code == 202
    assert other.status_code == 409, other.text
    assert other.json()["code"] == "IDEMPOTENCY_CONFLICT"
    assert await counts(aconn) == (1, 1)


async def test_jobs_from_before_the_request_hash_compare_stored_values(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    """Rows written before migration 0005 have no request_hash: a replay is
    judged as before, on kind, params, priority and max_attempts."""
    async with api_client(api_settings(tmp_path), db_url) as client:
        first = await make(client, {"kind": "noop", "priority": 2}, **{"Idempotency-Key": "old"})
        await aconn.execute("UPDATE exportd.jobs SET request_hash = NULL")
        replay = await make(client, {"kind": "noop", "priority": 2}, **{"Idempotency-Key": "old"})
        conflict = await make(client, {"kind": "noop", "priority": 3}, **{"Idempotency-Key": "old"})
    assert (first.status_code, replay.status_code, conflict.status_code) == (202, 200, 409)
    assert replay.json()["data"]["job_id"] == first.json()["data"]["job_id"]
