"""Exports on the S3 backend end to end, in this process, against the real
SeaweedFS of the session: the worker streams the package into the bucket, the
API redirects (or proxies) downloads, retention and the orphan sweep delete
objects, and a store that is down or refuses fails attempts cleanly."""

from __future__ import annotations

import hashlib
import io
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from daemon.db import connect as db_connect
from daemon.maintenance.cleanup import Cleanup
from daemon.models import JobStatus
from daemon.storage.select import open_storage
from tests.api_helpers import SECRET, bearer, live_app
from tests.helpers import create, running_worker, wait_for
from tests.s3_server import SeaweedServer
from tests.s3_settings import PREFIX, object_keys, pending_uploads, s3_settings

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]


@pytest.fixture
def settings(
    tmp_path: Path, s3_server: SeaweedServer, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> Any:
    return s3_settings(tmp_path, s3_server, s3_bucket, monkeypatch, jwt_secret=SECRET)


async def test_a_package_is_streamed_into_the_bucket_and_nowhere_else(
    aconn: AConn, db_url: str, settings: Any, s3_server: SeaweedServer, s3_bucket: str
) -> None:
    async with running_worker(settings, db_url):
        job = await create(aconn, "blob", {"size": 12 * 1024 * 1024})
        done = await wait_for(aconn, job.job_id)
    assert done.status is JobStatus.COMPLETED and done.package_path is not None
    assert object_keys(s3_server, s3_bucket) == [f"{PREFIX}/{done.package_path}"]
    body = s3_server.client.get_object(Bucket=s3_bucket, Key=f"{PREFIX}/{done.package_path}")
    data = body["Body"].read()
    assert len(data) == done.package_size_bytes
    assert hashlib.sha256(data).hexdigest() == done.package_sha256
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert any(name.endswith("/manifest.json") for name in tar.getnames())
    assert pending_uploads(s3_server, s3_bucket) == []
    # No package on this host's disk: only the (empty) work area.
    local = [p for p in settings.work_dir.rglob("*") if p.is_file()]
    assert local == [] and not settings.storage_dir.exists()


async def test_a_failed_attempt_leaves_no_object_and_no_upload(
    aconn: AConn, db_url: str, settings: Any, s3_server: SeaweedServer, s3_bucket: str
) -> None:
    async with running_worker(settings, db_url):
        job = await create(aconn, "flaky", {"fail_times": 9}, max_attempts=2)
        done = await wait_for(aconn, job.job_id)
    assert done.status is JobStatus.ROLLED_BACK
    assert object_keys(s3_server, s3_bucket) == []
    assert pending_uploads(s3_server, s3_bucket) == []


async def _completed(aconn: AConn, db_url: str, settings: Any, size: int = 300_000) -> Any:
    async with running_worker(settings, db_url):
        job = await create(aconn, "blob", {"size": size})
        return await wait_for(aconn, job.job_id)


async def test_download_redirects_to_a_presigned_url_that_serves_ranges(
    aconn: AConn, db_url: str, settings: Any, s3_server: SeaweedServer, s3_bucket: str
) -> None:
    done = await _completed(aconn, db_url, settings)
    async with live_app(settings, db_url) as (base, _app), httpx.AsyncClient() as client:
        answer = await client.get(f"{base}/api/v1/jobs/{done.job_id}/download", headers=bearer())
        assert answer.status_code == 302
        location = answer.headers["location"]
        assert location.startswith(s3_server.endpoint_url)
        assert "no-store" in answer.headers["cache-control"]
        whole = await client.get(location)
        assert whole.status_code == 200
        assert hashlib.sha256(whole.content).hexdigest() == done.package_sha256
        assert whole.headers["content-type"] == "application/gzip"
        day = done.created_at.astimezone(UTC).date().isoformat()
        assert f'filename="export-blob-{day}.tar.gz"' in whole.headers["content-disposition"]
        # A resumed download: the rest from byte 1000, from the store itself.
        rest = await client.get(location, headers={"Range": "bytes=1000-"})
        assert rest.status_code == 206 and rest.content == whole.content[1000:]
    cur = await aconn.execute(
        "SELECT status_code, bytes_sent, completed FROM exportd.downloads WHERE job_id = %s",
        (done.job_id,),
    )
    assert await cur.fetchall() == [(302, None, True)]
    cur = await aconn.execute(
        "SELECT download_count FROM exportd.jobs WHERE job_id = %s", (done.job_id,)
    )
    assert await cur.fetchone() == (1,)


async def test_a_redirect_follows_like_curl_dash_l(
    aconn: AConn, db_url: str, settings: Any
) -> None:
    done = await _completed(aconn, db_url, settings)
    async with (
        live_app(settings, db_url) as (base, _app),
        httpx.AsyncClient(follow_redirects=True) as client,
    ):
        answer = await client.get(f"{base}/api/v1/jobs/{done.job_id}/download", headers=bearer())
    assert answer.status_code == 200
    assert hashlib.sha256(answer.content).hexdigest() == done.package_sha256


async def test_a_presigned_url_expires(aconn: AConn, db_url: str, settings: Any) -> None:
    from dataclasses import replace

    short = replace(settings, s3_url_ttl=1)
    done = await _completed(aconn, db_url, short)
    async with live_app(short, db_url) as (base, _app), httpx.AsyncClient() as client:
        answer = await client.get(f"{base}/api/v1/jobs/{done.job_id}/download", headers=bearer())
        location = answer.headers["location"]
        deadline = datetime.now(UTC) + timedelta(seconds=15)
        status = 200
        while datetime.now(UTC) < deadline:  # poll: the store's clock decides
            status = (await client.get(location, headers={"Range": "bytes=0-0"})).status_code
            if status == 403:
                break
        assert status == 403


async def test_proxy_mode_streams_the_object_with_ranges(
    aconn: AConn, db_url: str, settings: Any
) -> None:
    from dataclasses import replace

    proxied = replace(settings, s3_download="proxy")
    done = await _completed(aconn, db_url, proxied)
    url = f"/api/v1/jobs/{done.job_id}/download"
    async with live_app(proxied, db_url) as (base, _app), httpx.AsyncClient() as client:
        whole = await client.get(base + url, headers=bearer())
        assert whole.status_code == 200
        assert hashlib.sha256(whole.content).hexdigest() == done.package_sha256
        assert whole.headers["etag"] == f'"{done.package_sha256}"'
        assert whole.headers["accept-ranges"] == "bytes"
        part = await client.get(base + url, headers={**bearer(), "Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == whole.content[10:20]
        assert part.headers["content-range"] == f"bytes 10-19/{done.package_size_bytes}"
        tail = await client.get(base + url, headers={**bearer(), "Range": "bytes=-5"})
        assert tail.status_code == 206 and tail.content == whole.content[-5:]
        size = done.package_size_bytes
        beyond = await client.get(base + url, headers={**bearer(), "Range": f"bytes={size}-"})
        assert beyond.status_code == 416
        assert beyond.headers["content-range"] == f"bytes */{size}"
        assert beyond.json()["code"] == "RANGE_NOT_SATISFIABLE"
        stale = await client.get(
            base + url, headers={**bearer(), "Range": "bytes=0-9", "If-Range": '"other"'}
        )
        assert stale.status_code == 200 and len(stale.content) == size
        head = await client.head(base + url, headers=bearer())
        assert head.status_code == 200 and head.headers["content-length"] == str(size)
    cur = await aconn.execute(
        "SELECT status_code, completed FROM exportd.downloads WHERE job_id = %s "
        "ORDER BY download_id",
        (done.job_id,),
    )
    assert await cur.fetchall() == [(200, True), (206, False), (206, True), (200, True)]


async def test_an_object_gone_from_the_bucket_is_410_and_recorded(
    aconn: AConn, db_url: str, settings: Any, s3_server: SeaweedServer, s3_bucket: str
) -> None:
    done = await _completed(aconn, db_url, settings)
    s3_server.client.delete_object(Bucket=s3_bucket, Key=f"{PREFIX}/{done.package_path}")
    async with live_app(settings, db_url) as (base, _app), httpx.AsyncClient() as client:
        answer = await client.get(f"{base}/api/v1/jobs/{done.job_id}/download", headers=bearer())
    assert answer.status_code == 410 and answer.json()["code"] == "PACKAGE_EXPIRED"
    assert PREFIX not in answer.text and s3_bucket not in answer.text
    cur = await aconn.execute(
        "SELECT package_path, package_deleted_at IS NOT NULL FROM exportd.jobs WHERE job_id = %s",
        (done.job_id,),
    )
    assert await cur.fetchone() == (None, True)


async def test_retention_deletes_the_object(
    aconn: AConn, db_url: str, settings: Any, s3_server: SeaweedServer, s3_bucket: str
) -> None:
    await _completed(aconn, db_url, settings)
    assert object_keys(s3_server, s3_bucket) != []
    later = datetime.now(UTC) + timedelta(days=settings.package_retention_days + 1)
    async with db_connect.aconnect(db_url) as conn:
        report = await Cleanup(settings, open_storage(settings)).run(conn, now=later)
    assert report.packages_deleted == 1 and report.failures == 0
    assert object_keys(s3_server, s3_bucket) == []


async def test_the_sweep_removes_orphan_objects_and_stale_uploads(
    aconn: AConn, db_url: str, settings: Any, s3_server: SeaweedServer, s3_bucket: str
) -> None:
    done = await _completed(aconn, db_url, settings)
    live = f"{PREFIX}/{done.package_path}"
    orphan = f"{PREFIX}/ab/abababab-abab-abab-abab-abababababab/r1-a1-00000000.tar.gz"
    s3_server.client.put_object(Bucket=s3_bucket, Key=orphan, Body=b"left behind")
    stale = s3_server.client.create_multipart_upload(
        Bucket=s3_bucket, Key=f"{PREFIX}/cd/cdcdcdcd-cdcd-cdcd-cdcd-cdcdcdcdcdcd/r1-a1-1.tar.gz"
    )
    outside = "someone-else/file.txt"  # not under the prefix: never touched
    s3_server.client.put_object(Bucket=s3_bucket, Key=outside, Body=b"theirs")
    storage = open_storage(settings)
    async with db_connect.aconnect(db_url) as conn:
        young = await Cleanup(settings, storage).sweep_orphans(conn, _report(), now=None)
        assert young == []  # within the grace period: kept
        later = datetime.now(UTC) + timedelta(seconds=settings.orphan_grace_seconds + 60)
        report = _report()
        await Cleanup(settings, storage).sweep_orphans(conn, report, now=later)
    assert report.orphans_removed == 2 and report.failures == 0
    assert object_keys(s3_server, s3_bucket) == sorted([live, outside])
    assert [u["UploadId"] for u in pending_uploads(s3_server, s3_bucket)] == []
    assert stale["UploadId"]


def _report() -> Any:
    from daemon.maintenance.cleanup import CleanupReport

    return CleanupReport(dry_run=False)


async def test_export_output_copies_from_the_bucket(
    aconn: AConn, db_url: str, settings: Any, tmp_path: Path
) -> None:
    from daemon.cli.export import _copy_package

    done = await _completed(aconn, db_url, settings)
    target = tmp_path / "copy.tar.gz"
    digest = _copy_package(open_storage(settings), done.package_path, target)
    assert digest == done.package_sha256 == hashlib.sha256(target.read_bytes()).hexdigest()


async def test_a_signed_link_redirects_to_the_bucket_too(
    aconn: AConn, db_url: str, settings: Any
) -> None:
    done = await _completed(aconn, db_url, settings)
    async with live_app(settings, db_url) as (base, _app), httpx.AsyncClient() as client:
        made = await client.post(f"{base}/api/v1/jobs/{done.job_id}/links", headers=bearer())
        assert made.status_code == 201
        path = made.json()["data"]["url"].split("/api/v1/", 1)[1]
        answer = await client.get(f"{base}/api/v1/{path}")  # no Authorization header
        assert answer.status_code == 302
        assert PREFIX not in made.text and str(done.package_path) not in made.text
        fetched = await client.get(answer.headers["location"])
    assert hashlib.sha256(fetched.content).hexdigest() == done.package_sha256


async def test_the_sweep_leaves_keys_it_cannot_have_written_alone(
    aconn: AConn, db_url: str, settings: Any, s3_server: SeaweedServer, s3_bucket: str
) -> None:
    odd = f"{PREFIX}/notes/read me (by hand).txt"
    s3_server.client.put_object(Bucket=s3_bucket, Key=odd, Body=b"an operator's note")
    later = datetime.now(UTC) + timedelta(seconds=settings.orphan_grace_seconds + 60)
    report = _report()
    async with db_connect.aconnect(db_url) as conn:
        await Cleanup(settings, open_storage(settings)).sweep_orphans(conn, report, now=later)
    assert report.failures == 0 and object_keys(s3_server, s3_bucket) == [odd]
