"""Signed download links (DESIGN §11): made by the owner or an admin, followed
without any header, refused when tampered with, foreign, expired, or made
for a package that is no longer the job's."""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import httpx
import psycopg
import pytest

from daemon import links
from daemon.config import Settings
from daemon.tokens import load_link_secret
from tests.api_helpers import api_client, api_settings, bearer
from tests.helpers import completed_job, create

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]
OTHER_SECRET = "another-link-secret-of-forty-or-more-random-characters-xyz123"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return api_settings(tmp_path, public_url="https://exports.example.com")


async def make_link(client: httpx.AsyncClient, job_id: UUID, **body: Any) -> httpx.Response:
    return await client.post(f"/api/v1/jobs/{job_id}/links", json=body or None, headers=bearer())


def path_of(url: str) -> str:
    return urlsplit(url).path


async def test_the_owner_makes_a_link_that_works_without_a_header(
    aconn: AConn, db_url: str, settings: Settings
) -> None:
    job, data = await completed_job(aconn, settings)
    async with api_client(settings, db_url) as client:
        before = time.time()
        made = await make_link(client, job.job_id)
        assert made.status_code == 201, made.text
        assert made.headers["cache-control"] == "no-store"
        link = made.json()["data"]
        assert link["url"].startswith("https://exports.example.com/api/v1/links/")
        expires = datetime.fromisoformat(link["expires_at"].replace("Z", "+00:00"))
        assert before + 3600 - 2 <= expires.timestamp() <= time.time() + 3600
        got = await client.get(path_of(link["url"]))
        assert got.status_code == 200 and got.content == data
        assert got.headers["content-type"] == "application/gzip"
        assert "attachment; filename=" in got.headers["content-disposition"]
        part = await client.get(path_of(link["url"]), headers={"Range": "bytes=5-9"})
        assert part.status_code == 206 and part.content == data[5:10]
        head = await client.head(path_of(link["url"]))
        assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
    cur = await aconn.execute(
        "SELECT subject, status_code FROM exportd.downloads WHERE job_id = %s ORDER BY download_id",
        (job.job_id,),
    )
    assert await cur.fetchall() == [("alice", 200), ("alice", 206)]


async def test_an_admin_may_make_one_and_is_its_subject(
    aconn: AConn, db_url: str, settings: Settings
) -> None:
    job, _ = await completed_job(aconn, settings)
    async with api_client(settings, db_url) as client:
        made = await client.post(
            f"/api/v1/jobs/{job.job_id}/links", headers=bearer("root", admin=True)
        )
        assert made.status_code == 201
        assert (await client.get(path_of(made.json()["data"]["url"]))).status_code == 200
    cur = await aconn.execute(
        "SELECT subject FROM exportd.downloads WHERE job_id = %s", (job.job_id,)
    )
    assert await cur.fetchall() == [("root",)]


async def test_someone_else_cannot_make_one(aconn: AConn, db_url: str, settings: Settings) -> None:
    job, _ = await completed_job(aconn, settings)
    async with api_client(settings, db_url) as client:
        made = await client.post(f"/api/v1/jobs/{job.job_id}/links", headers=bearer("mallory"))
        assert made.status_code == 403 and made.json()["code"] == "FORBIDDEN"
        anonymous = await client.post(f"/api/v1/jobs/{job.job_id}/links")
        assert anonymous.status_code == 401


async def test_no_link_before_the_package_exists(
    aconn: AConn, db_url: str, settings: Settings
) -> None:
    job = await create(aconn, "noop")
    async with api_client(settings, db_url) as client:
        made = await make_link(client, job.job_id)
        assert made.status_code == 404 and made.json()["code"] == "PACKAGE_NOT_READY"
        unknown = await make_link(client, UUID(int=7))
        assert unknown.status_code == 404 and unknown.json()["code"] == "JOB_NOT_FOUND"
        bad = await client.post("/api/v1/jobs/not-a-uuid/links", headers=bearer())
        assert bad.status_code == 400 and bad.json()["code"] == "INVALID_JOB_ID"


@pytest.mark.parametrize(
    "body",
    [
        {"expires_in": 59},
        {"expires_in": 0},
        {"expires_in": -5},
        {"expires_in": "3600"},
        {"expires_in": True},
        {"expires_in": 1.5},
        {"expires_in": 10**30},
        {"expires_in": None},
        {"expiry": 3600},
    ],
)
async def test_a_bad_expiry_is_a_400(
    aconn: AConn, db_url: str, settings: Settings, body: dict[str, Any]
) -> None:
    job, _ = await completed_job(aconn, settings)
    async with api_client(settings, db_url) as client:
        made = await client.post(f"/api/v1/jobs/{job.job_id}/links", json=body, headers=bearer())
    assert made.status_code == 400 and made.json()["code"] == "VALIDATION_ERROR"


async def test_a_body_that_is_not_json_is_a_400(
    aconn: AConn, db_url: str, settings: Settings
) -> None:
    job, _ = await completed_job(aconn, settings)
    async with api_client(settings, db_url) as client:
        for raw in (b"{", b"[]", b"\xff\xfe", b'{"expires_in": 1e999}'):
            made = await client.post(
                f"/api/v1/jobs/{job.job_id}/links", content=raw, headers=bearer()
            )
            assert made.status_code == 400, raw
        huge = await client.post(
            f"/api/v1/jobs/{job.job_id}/links", content=b" " * 2_000_000, headers=bearer()
        )
        assert huge.status_code == 413


async def test_a_link_never_outlives_its_package(
    aconn: AConn, db_url: str, settings: Settings
) -> None:
    job, _ = await completed_job(aconn, settings, expires_in=timedelta(minutes=10))
    async with api_client(settings, db_url) as client:
        made = await make_link(client, job.job_id, expires_in=7 * 24 * 3600)
    expires = datetime.fromisoformat(made.json()["data"]["expires_at"].replace("Z", "+00:00"))
    assert expires <= datetime.now(UTC) + timedelta(minutes=10)


def flip(text: str, index: int) -> str:
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1 :]


async def test_a_tampered_token_is_refused(aconn: AConn, db_url: str, settings: Settings) -> None:
    job, _ = await completed_job(aconn, settings)
    async with api_client(settings, db_url) as client:
        url = path_of((await make_link(client, job.job_id)).json()["data"]["url"])
        token = url.rsplit("/", 1)[1]
        payload, mac = token.split(".")
        tampered = [
            f"{flip(payload, 0)}.{mac}",
            f"{flip(payload, len(payload) - 1)}.{mac}",  # the last character's spare bits
            f"{payload}.{flip(mac, 0)}",
            f"{payload}.{flip(mac, len(mac) - 1)}",
            f"{payload}.{mac}=",
            f"{payload}={mac}",
            f"{payload}",
            f"{payload}.{mac}.{mac}",
            "",
            ".",
            "x" * 10_000,
            f"{payload}.{mac}".upper(),
        ]
        for candidate in tampered:
            answer = await client.get(f"/api/v1/links/{candidate}")
            assert answer.status_code in (403, 404), candidate  # 404: an empty path segment
            if answer.status_code == 403:
                assert answer.json()["code"] == "LINK_INVALID", candidate
        for candidate in tampered[:4]:
            assert (await client.get(f"/api/v1/links/{candidate}")).status_code == 403
        assert (await client.get(url)).status_code == 200


async def test_a_token_signed_with_another_secret_is_refused(
    aconn: AConn, db_url: str, settings: Settings
) -> None:
    job, _ = await completed_job(aconn, settings)
    sha = await _sha(aconn, job.job_id)
    foreign = links.sign(OTHER_SECRET, links.Link(job.job_id, sha, int(time.time()) + 600, "alice"))
    async with api_client(settings, db_url) as client:
        answer = await client.get(f"/api/v1/links/{foreign}")
    assert answer.status_code == 403 and answer.json()["code"] == "LINK_INVALID"


async def _sha(conn: AConn, job_id: UUID) -> str:
    cur = await conn.execute("SELECT package_sha256 FROM exportd.jobs WHERE job_id = %s", (job_id,))
    row = await cur.fetchone()
    assert row is not None
    return str(row[0])


async def test_an_expired_link_is_410_link_expired(
    aconn: AConn, db_url: str, settings: Settings
) -> None:
    job, _ = await completed_job(aconn, settings)
    secret = load_link_secret(settings)
    past = int(time.time()) - 1
    token = links.sign(secret, links.Link(job.job_id, await _sha(aconn, job.job_id), past, "alice"))
    async with api_client(settings, db_url) as client:
        answer = await client.get(f"/api/v1/links/{token}")
    assert answer.status_code == 410
    assert answer.json()["code"] == "LINK_EXPIRED" and "expired_at" in answer.json()


async def test_a_link_dies_with_a_re_export(aconn: AConn, db_url: str, settings: Settings) -> None:
    job, _ = await completed_job(aconn, settings)
    async with api_client(settings, db_url) as client:
        url = path_of((await make_link(client, job.job_id)).json()["data"]["url"])
        # The package is replaced by another run's (a re-export): a new sha256.
        await aconn.execute(
            "UPDATE exportd.jobs SET package_sha256 = %s WHERE job_id = %s",
            (hashlib.sha256(b"another package").hexdigest(), job.job_id),
        )
        answer = await client.get(url)
    assert answer.status_code == 403 and answer.json()["code"] == "LINK_INVALID"


async def test_a_link_to_an_expired_package_is_410_package_expired(
    aconn: AConn, db_url: str, settings: Settings
) -> None:
    job, _ = await completed_job(aconn, settings)
    async with api_client(settings, db_url) as client:
        url = path_of((await make_link(client, job.job_id)).json()["data"]["url"])
        await aconn.execute(
            "UPDATE exportd.jobs SET package_expires_at = now() - interval '1 second' "
            "WHERE job_id = %s",
            (job.job_id,),
        )
        answer = await client.get(url)
        assert answer.status_code == 410 and answer.json()["code"] == "PACKAGE_EXPIRED"
        # The job row pruned entirely: still "gone", not a server error.
        await aconn.execute("DELETE FROM exportd.jobs WHERE job_id = %s", (job.job_id,))
        pruned = await client.get(url)
        assert pruned.status_code == 410 and pruned.json()["code"] == "PACKAGE_EXPIRED"


async def test_a_link_never_shows_where_the_package_is(
    aconn: AConn, db_url: str, settings: Settings
) -> None:
    job, _ = await completed_job(aconn, settings)
    async with api_client(settings, db_url) as client:
        made = await make_link(client, job.job_id)
    url = made.json()["data"]["url"]
    token = url.rsplit("/", 1)[1]
    decoded = b"".join(
        base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)) for part in token.split(".")
    )
    cur = await aconn.execute(
        "SELECT package_path FROM exportd.jobs WHERE job_id = %s", (job.job_id,)
    )
    row = await cur.fetchone()
    assert row is not None
    for secret in (row[0], str(settings.storage_dir), row[0].rsplit("/", 1)[1]):
        assert secret not in url and secret.encode() not in decoded
    assert load_link_secret(settings) not in made.text


async def test_links_are_rate_limited_per_subject(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    from daemon.config_values import RateLimit

    limited = api_settings(tmp_path, rate_limit=RateLimit(3, 60.0))
    job, _ = await completed_job(aconn, limited)
    async with api_client(limited, db_url) as client:
        url = path_of((await make_link(client, job.job_id)).json()["data"]["url"])
        codes = [(await client.head(url)).status_code for _ in range(4)]
    assert codes[:2] == [200, 200] and codes[-1] == 429


def test_signing_refuses_an_impossible_subject() -> None:
    with pytest.raises(ValueError, match="subject"):
        links.sign(OTHER_SECRET, links.Link(UUID(int=1), "0" * 64, 1, ""))
    with pytest.raises(ValueError, match="subject"):
        links.sign(OTHER_SECRET, links.Link(UUID(int=1), "0" * 64, 1, "x" * 2000))
    token = links.sign(OTHER_SECRET, links.Link(UUID(int=1), "ab" * 32, 99, "ünïcode sub"))
    assert links.verify(OTHER_SECRET, token) == links.Link(
        UUID(int=1), "ab" * 32, 99, "ünïcode sub"
    )
    with pytest.raises(links.LinkInvalid):
        links.verify(OTHER_SECRET + "x", token)


def test_without_a_link_secret_public_key_setups_refuse_to_start(tmp_path: Path) -> None:
    from daemon.errors import ConfigError

    keyed = replace(
        Settings(data_dir=tmp_path),
        jwt_public_key_file=tmp_path / "key.pem",
        jwt_algorithms=("RS256",),
    )
    with pytest.raises(ConfigError) as info:
        load_link_secret(keyed)
    assert info.value.variable == "EXPORTD_LINK_SECRET"
    assert load_link_secret(replace(keyed, link_secret=OTHER_SECRET)) == OTHER_SECRET
