"""API keys (`exk_…`) against the real app and database: a key acts as its
owner everywhere, is refused when revoked, expired or one character off
(through one constant-time comparison of hashes), is stored only as a hash,
writes `last_used_at` rarely, and has its own rate limit when given one.

The admin endpoints are in tests/integration/web/test_admin_keys.py; the
CLI and a real `exportd web` process in tests/e2e/test_keys_cli.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from daemon import api_keys
from daemon.config_values import RateLimit
from daemon.db import downloads
from daemon.db import keys as key_store
from daemon.db.connect import Connection
from daemon.db.pools import Database
from tests.api_helpers import api_client, api_settings, bearer, live_app
from tests.helpers import create, poll_until, running_worker
from web import key_auth
from web.errors import ApiError

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]
KINDS = "/api/v1/kinds"  # needs a principal, and no database but the key's row


def as_bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def as_header(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def new_key(conn: AConn, owner: str = "svc", **options: Any) -> str:
    return (await api_keys.create_key(conn, owner_id=owner, **options)).key


async def stored_key(
    conn: AConn, *, expires_at: datetime | None = None, created_at: datetime | None = None
) -> str:
    """A key inserted with chosen timestamps (create_key takes a number of days)."""
    key = api_keys.generate_key()
    prefix = api_keys.key_prefix(key)
    assert prefix is not None
    await key_store.insert_key(
        conn,
        prefix=prefix,
        key_sha256=api_keys.key_digest(key),
        owner_id="svc",
        name="",
        admin=False,
        rate_limit=None,
        expires_at=expires_at,
        now=created_at,
    )
    return key


def refused(response: httpx.Response, reason: str) -> bool:
    body = response.json()
    return (
        response.status_code == 401
        and body["code"] == "UNAUTHORIZED"
        and reason in body["message"]
        and response.headers["www-authenticate"].startswith("Bearer")
    )


def one_off(key: str, position: int) -> str:
    """`key` with the character at `position` replaced by another base32 one."""
    other = "a" if key[position] != "a" else "b"
    return key[:position] + other + key[position + 1 :]


async def sse_statuses(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> list[str]:
    statuses = []
    async with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        event = None
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "status":
                statuses.append(json.loads(line.split(":", 1)[1])["status"])
    return statuses


# -- a key acts as its owner ------------------------------------------------------


async def test_a_key_creates_follows_lists_and_downloads_as_its_owner(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    key = await new_key(aconn, "svc-billing")
    settings = api_settings(tmp_path)
    async with (
        live_app(settings, db_url) as (base, app),
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        created = await client.post(
            "/api/v1/jobs",
            json={"kind": "three-steps", "params": {"pause": 0.2}},
            headers=as_header(key),
        )
        assert created.status_code == 202, created.text
        job = created.json()["data"]
        assert job["owner_id"] == "svc-billing"
        url = f"/api/v1/jobs/{job['job_id']}"
        stream = asyncio.create_task(sse_statuses(client, f"{url}/events", as_bearer(key)))
        await poll_until(app.state.events.listening.is_set, "the events listener")
        async with running_worker(settings, db_url):
            statuses = await asyncio.wait_for(stream, timeout=30)
        listed = await client.get("/api/v1/jobs", headers=as_bearer(key))
        one = await client.get(url, headers=as_header(key))
        download = await client.get(f"{url}/download", headers=as_bearer(key))
    assert statuses[0] == "pending" and statuses[-1] == "completed", statuses
    assert listed.status_code == 200
    assert [j["job_id"] for j in listed.json()["data"]] == [job["job_id"]]
    assert one.status_code == 200 and one.json()["data"]["status"] == "completed"
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == one.json()["data"]["package"]["sha256"]
    (row,) = await downloads.downloads_of_job(aconn, job["job_id"])
    assert row.subject == "svc-billing"


async def test_another_owners_jobs_are_forbidden_to_a_key(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    key = await new_key(aconn, "alice")
    admin_key = await new_key(aconn, "ops", admin=True)
    bobs = await create(aconn, "noop", owner="bob")
    url = f"/api/v1/jobs/{bobs.job_id}"
    async with api_client(api_settings(tmp_path), db_url) as client:
        get = await client.get(url, headers=as_header(key))
        events = await client.get(f"{url}/events", headers=as_header(key))
        cancel = await client.post(f"{url}/cancel", headers=as_bearer(key))
        download = await client.get(f"{url}/download", headers=as_bearer(key))
        others = await client.get("/api/v1/jobs?owner=bob", headers=as_header(key))
        mine = await client.get("/api/v1/jobs", headers=as_header(key))
        admin = await client.get(url, headers=as_header(admin_key))
        everyone = await client.get("/api/v1/jobs", headers=as_bearer(admin_key))
    for response in (get, events, cancel, others):
        assert response.status_code == 403 and response.json()["code"] == "FORBIDDEN"
    assert download.status_code == 403 and download.json()["code"] == "DOWNLOAD_UNAUTHORIZED"
    assert mine.status_code == 200 and mine.json()["data"] == []
    assert admin.status_code == 200 and admin.json()["data"]["status"] == "pending"
    assert [j["owner_id"] for j in everyone.json()["data"]] == ["bob"]


# -- revoked and expired keys ------------------------------------------------------


async def test_revoked_key_is_refused_at_once_by_the_process_that_revoked_it(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    key = await new_key(aconn)
    prefix = api_keys.key_prefix(key)
    async with api_client(api_settings(tmp_path), db_url) as client:
        assert (await client.get(KINDS, headers=as_header(key))).status_code == 200
        revoked = await client.post(
            f"/api/v1/admin/keys/{prefix}/revoke", headers=bearer("root", admin=True)
        )
        assert revoked.status_code == 200, revoked.text
        after = await client.get(KINDS, headers=as_header(key))
    assert refused(after, "revoked")


@dataclass
class FakeClock:
    """The verifier's clock, moved by the test."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_key_revoked_elsewhere_is_refused_once_its_cached_row_is_stale(
    aconn: AConn, db_url: str
) -> None:
    """Revoked by the CLI or another API process: a process reads the row
    again after CACHE_SECONDS, and no sooner (no read per request)."""
    key = await new_key(aconn)
    clock = FakeClock()
    database = Database(db_url, role="test", max_size=2)
    await database.open()
    try:
        verifier = key_auth.KeyVerifier(database, clock=clock)
        assert (await verifier.verify(key)).subject == "svc"
        await api_keys.revoke_key(aconn, str(api_keys.key_prefix(key)))
        clock.now += key_auth.CACHE_SECONDS - 0.01
        assert (await verifier.verify(key)).subject == "svc"  # the cached row
        clock.now += 0.01
        with pytest.raises(ApiError) as refusal:
            await verifier.verify(key)
    finally:
        await database.close()
    assert refusal.value.status == 401 and "revoked" in refusal.value.message
    assert key_auth.CACHE_SECONDS <= 5  # DESIGN §17: refused within seconds


class CountingDatabase(Database):
    """The real pool, counting the connections taken from it (round trips)."""

    def __init__(self, url: str) -> None:
        super().__init__(url, role="test", max_size=2)
        self.taken = 0

    @asynccontextmanager
    async def connection(self, *, wait_seconds: float | None = None) -> AsyncIterator[Connection]:
        self.taken += 1
        async with super().connection(wait_seconds=wait_seconds) as conn:
            yield conn


async def test_most_uses_of_a_key_need_no_database(aconn: AConn, db_url: str) -> None:
    """Within CACHE_SECONDS a key's row is not read again, and its use is
    recorded at most once per TOUCH_INTERVAL_SECONDS: no statement per request."""
    key = await new_key(aconn)
    clock = FakeClock()
    database = CountingDatabase(db_url)
    await database.open()
    try:
        verifier = key_auth.KeyVerifier(database, clock=clock)
        for _ in range(100):
            await verifier.verify(key)
        assert database.taken == 2  # one read, one use recorded
        clock.now += key_auth.CACHE_SECONDS
        for _ in range(100):
            await verifier.verify(key)
        assert database.taken == 3  # read again; the use was recorded a moment ago
        clock.now += key_store.TOUCH_INTERVAL_SECONDS
        await verifier.verify(key)
        assert database.taken == 5  # read again, and a use recorded
    finally:
        await database.close()


async def test_expired_key_is_401(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    expired = await stored_key(
        aconn, created_at=now - timedelta(days=31), expires_at=now - timedelta(seconds=1)
    )
    fresh = await stored_key(aconn, expires_at=now + timedelta(days=1))
    async with api_client(api_settings(tmp_path), db_url) as client:
        old = await client.get(KINDS, headers=as_header(expired))
        new = await client.get(KINDS, headers=as_bearer(fresh))
    assert refused(old, "expired")
    assert new.status_code == 200


async def test_expiry_is_compared_on_every_use_even_from_the_cache(
    aconn: AConn, db_url: str
) -> None:
    key = await stored_key(aconn, expires_at=datetime.now(UTC) + timedelta(seconds=1))
    database = Database(db_url, role="test", max_size=2)
    await database.open()
    try:
        # The row stays cached for the whole test: only the expiry can refuse it.
        verifier = key_auth.KeyVerifier(database, cache_seconds=3600)
        assert (await verifier.verify(key)).subject == "svc"

        async def expired() -> bool:
            try:
                await verifier.verify(key)
            except ApiError as exc:
                return exc.status == 401 and "expired" in exc.message
            return False

        await poll_until(expired, "the cached key refused once expired", timeout=5)
    finally:
        await database.close()


# -- one character off: one constant-time comparison of hashes ----------------------


async def test_a_key_one_character_off_is_refused_through_compare_digest_of_hashes(
    aconn: AConn, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However many leading characters match (none past `exk_`, the prefix,
    all but the last), the key is refused by the same path: one
    `hmac.compare_digest` of two SHA-256 digests, never a comparison of text
    that could stop at the first difference."""
    key = await new_key(aconn)
    real_hash = api_keys.key_digest(key)
    calls: list[tuple[object, object, bool]] = []
    real_compare = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        result = real_compare(a, b)
        calls.append((a, b, result))
        return result

    monkeypatch.setattr(hmac, "compare_digest", spy)
    near_misses = {
        "the first character of the prefix": one_off(key, 4),
        "the last character of the prefix": one_off(key, 4 + api_keys.PREFIX_LENGTH - 1),
        "the first character after the prefix": one_off(key, 4 + api_keys.PREFIX_LENGTH),
        "a character in the middle": one_off(key, 30),
        "the last character": one_off(key, len(key) - 1),
    }
    async with api_client(api_settings(tmp_path), db_url) as client:
        assert (await client.get(KINDS, headers=as_header(key))).status_code == 200
        assert calls == [(real_hash, real_hash, True)]
        for where, wrong in near_misses.items():
            calls.clear()
            response = await client.get(KINDS, headers=as_header(wrong))
            assert refused(response, "invalid API key"), where
            ((presented, stored, result),) = calls  # exactly one comparison
            assert presented == api_keys.key_digest(wrong), where
            assert isinstance(stored, bytes) and len(stored) == 32, where
            assert result is False
            same_prefix = api_keys.key_prefix(wrong) == api_keys.key_prefix(key)
            assert (stored == real_hash) is same_prefix, where


# -- what the database holds ----------------------------------------------------------


async def test_the_database_never_holds_the_key(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    admin = bearer("root", admin=True)
    async with api_client(api_settings(tmp_path), db_url) as client:
        made = await client.post(
            "/api/v1/admin/keys", json={"owner_id": "svc", "name": "billing"}, headers=admin
        )
        from_api = made.json()["data"]["key"]
        from_code = await new_key(aconn, "svc", rate_limit="10/second", expires_in_days=3)
        revoked = await new_key(aconn, "other")
        for key in (from_api, from_code, revoked):  # used: last_used_at written
            assert (await client.get(KINDS, headers=as_header(key))).status_code == 200
        await client.post(f"/api/v1/admin/keys/{revoked[4:14]}/revoke", headers=admin)
    rows = await (await aconn.execute("SELECT t::text FROM exportd.api_keys AS t")).fetchall()
    text = "\n".join(str(row[0]) for row in rows).lower()
    assert len(rows) == 3  # each row as text: every column
    for key in (from_api, from_code, revoked):
        secret = key[4 + api_keys.PREFIX_LENGTH :]
        raw = base64.b32decode(key[4:].upper() + "====")
        for needle in (
            key,
            key[4:],
            secret,
            secret[:16],
            raw.hex(),
            base64.b64encode(raw).decode(),
        ):
            assert needle.lower() not in text
        assert api_keys.key_digest(key).hex() in text  # what is there: the hash
    stored = await (
        await aconn.execute("SELECT last_used_at IS NOT NULL FROM exportd.api_keys")
    ).fetchall()
    assert stored == [(True,)] * 3


async def test_a_thousand_requests_write_last_used_at_at_most_twice(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    key = await new_key(aconn)
    # Count every row written to exportd.api_keys from here on.
    await aconn.execute("CREATE TABLE public.key_writes (at timestamptz DEFAULT clock_timestamp())")
    await aconn.execute(
        "CREATE FUNCTION public.count_key_write() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN INSERT INTO public.key_writes DEFAULT VALUES; RETURN NEW; END $$"
    )
    await aconn.execute(
        "CREATE TRIGGER count_key_writes AFTER UPDATE ON exportd.api_keys"
        " FOR EACH ROW EXECUTE FUNCTION public.count_key_write()"
    )
    answered: list[int] = []
    async with api_client(api_settings(tmp_path), db_url) as client:
        for _ in range(50):  # 50 rounds of 20 concurrent requests
            batch = [client.get(KINDS, headers=as_header(key)) for _ in range(20)]
            answered += [r.status_code for r in await asyncio.gather(*batch)]
    assert answered == [200] * 1000
    writes = await (await aconn.execute("SELECT count(*) FROM public.key_writes")).fetchone()
    assert writes is not None and 1 <= writes[0] <= 2
    used = await (await aconn.execute("SELECT last_used_at FROM exportd.api_keys")).fetchone()
    assert used is not None and used[0] is not None


async def test_last_used_at_is_written_at_most_once_a_minute_whoever_writes(
    aconn: AConn,
) -> None:
    """The statement itself skips the write within the interval: several API
    processes (each with its own memory of when it last wrote) write once."""
    key = await new_key(aconn)
    prefix = str(api_keys.key_prefix(key))
    t0 = datetime.now(UTC)
    interval = key_store.TOUCH_INTERVAL_SECONDS

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    assert await key_store.touch_key(aconn, prefix, now=at(0)) is True
    assert await key_store.touch_key(aconn, prefix, now=at(1)) is False
    assert await key_store.touch_key(aconn, prefix, now=at(interval - 1)) is False
    assert await key_store.touch_key(aconn, prefix, now=at(interval + 1)) is True
    (listed,) = await key_store.list_keys(aconn)
    assert listed.last_used_at == at(interval + 1)


# -- rate limits ------------------------------------------------------------------------


async def test_a_key_shares_its_owners_budget_unless_it_has_its_own(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    shared = await new_key(aconn, "alice")
    own = await new_key(aconn, "alice", rate_limit="2/minute")
    unlimited = await new_key(aconn, "alice", rate_limit="off")
    settings = api_settings(tmp_path, rate_limit=RateLimit(3, 60.0))
    alice = bearer("alice")

    async def statuses(headers: dict[str, str], count: int) -> list[int]:
        return [(await client.get(KINDS, headers=headers)).status_code for _ in range(count)]

    async with api_client(settings, db_url) as client:
        # alice's token and her key without a limit of its own: one budget of 3.
        assert await statuses(alice, 2) == [200, 200]
        assert await statuses(as_header(shared), 2) == [200, 429]
        limited = await client.get(KINDS, headers=alice)
        # A key with its own limit counts on its own budget.
        assert await statuses(as_header(own), 3) == [200, 200, 429]
        over = await client.get(KINDS, headers=as_bearer(own))
        assert await statuses(as_header(unlimited), 10) == [200] * 10
    assert limited.status_code == 429 and "per subject" in limited.json()["message"]
    assert over.status_code == 429 and over.json()["code"] == "RATE_LIMITED"
    assert "2/minute for this API key" in over.json()["message"]
    assert int(over.headers["retry-after"]) >= 1


# -- malformed credentials and an unreachable database ------------------------------------


WELL_FORMED_UNKNOWN = "exk_" + "a" * 52
MALFORMED: dict[str, tuple[dict[str, str | bytes], str]] = {
    "not a key": ({"X-API-Key": "nope"}, "malformed"),
    "empty": ({"X-API-Key": ""}, "malformed"),
    "one character short": ({"X-API-Key": "exk_" + "a" * 51}, "malformed"),
    "one character long": ({"X-API-Key": "exk_" + "a" * 53}, "malformed"),
    "upper case": ({"X-API-Key": "exk_" + "A" * 52}, "malformed"),
    "not base32": ({"Authorization": "Bearer exk_" + "1" * 52}, "malformed"),
    "latin-1": ({"X-API-Key": b"exk_" + b"\xe9" * 52}, "malformed"),
    "10 KB": ({"X-API-Key": "exk_" + "a" * 10_000}, "malformed"),
    "unknown": ({"Authorization": f"Bearer {WELL_FORMED_UNKNOWN}"}, "invalid API key"),
    "a key and a token": (
        {"X-API-Key": WELL_FORMED_UNKNOWN, **bearer("alice")},
        "not both",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_malformed_and_unknown_keys_are_401(case: str, db_url: str, tmp_path: Path) -> None:
    headers, reason = MALFORMED[case]
    raw = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in headers.items()}
    async with api_client(api_settings(tmp_path), db_url) as client:
        response = await client.get("/api/v1/jobs", headers=raw)
    assert refused(response, reason), response.text


async def test_a_key_is_503_not_500_while_the_database_is_down(tmp_path: Path) -> None:
    """The key's row cannot be read: 503 with Retry-After, like any request
    that needs the database, never a 500 or a 401."""
    unreachable = "postgresql://exportd@127.0.0.1:1/nowhere?connect_timeout=1"
    async with api_client(api_settings(tmp_path), unreachable) as client:
        response = await client.get(KINDS, headers=as_header(WELL_FORMED_UNKNOWN))
    assert response.status_code == 503 and response.json()["code"] == "DATABASE_UNAVAILABLE"
    assert response.headers["retry-after"] == "5"


async def test_a_prefix_already_taken_makes_another_key(
    aconn: AConn, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await new_key(aconn)
    clash = first[:14] + api_keys.generate_key()[14:]  # same prefix, other secret
    fresh = api_keys.generate_key()
    made = iter([clash, fresh])
    monkeypatch.setattr(api_keys, "generate_key", lambda: next(made))
    second = await new_key(aconn)
    assert second == fresh
    assert sorted(k.prefix for k in await key_store.list_keys(aconn)) == sorted(
        [first[4:14], fresh[4:14]]
    )
