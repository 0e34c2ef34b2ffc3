"""GET/HEAD /api/v1/jobs/{id}/download against the real app and database.

Packages here are real files in a real storage root, registered on a real
job row (the worker's own packaging is covered end to end in
tests/e2e/test_download_http.py); every status code, header and Range case
of DESIGN §6, and the downloads tracking. Then packages that are gone:
whatever the download answers 410 must be re-exportable at once with
POST …/retry, and its `expired_at` is never in the future; and how packages
are laid out on disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest

from daemon.config import Settings
from daemon.db import downloads
from daemon.db import jobs as job_store
from daemon.maintenance.cleanup import Cleanup
from daemon.models import Job, JobStatus
from daemon.storage.local import LocalStorage
from tests.api_helpers import api_client, api_settings, bearer
from tests.helpers import completed_job, create, running_worker, wait_for
from web.package_download import human_size

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]
ALICE = bearer("alice")
BOB = bearer("bob")
ADMIN = bearer("root", admin=True)
SIZE = 300_000


def url(job_id: UUID | str, action: str = "download") -> str:
    return f"/api/v1/jobs/{job_id}/{action}"


async def job_row(conn: AConn, job_id: UUID) -> tuple[int, datetime | None]:
    cur = await conn.execute(
        "SELECT download_count, last_downloaded_at FROM exportd.jobs WHERE job_id = %s", (job_id,)
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), row[1]


async def test_full_download_headers_body_and_tracking(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    settings = api_settings(tmp_path)
    job, data = await completed_job(aconn, settings)
    async with api_client(settings, db_url) as client:
        response = await client.get(url(job.job_id), headers=ALICE)
    assert response.status_code == 200
    assert response.content == data
    h = response.headers
    assert h["content-type"] == "application/gzip"
    day = datetime.now(UTC).date().isoformat()
    assert h["content-disposition"] == f'attachment; filename="export-noop-{day}.tar.gz"'
    assert h["content-length"] == str(SIZE)
    assert h["accept-ranges"] == "bytes"
    assert h["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert h["cache-control"] == "private, max-age=3600"
    assert h["x-package-size"] == "300.0 kB"
    assert re.fullmatch(r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT", h["last-modified"])
    count, last = await job_row(aconn, job.job_id)
    assert count == 1 and last is not None
    (row,) = await downloads.downloads_of_job(aconn, job.job_id)
    assert (row.subject, row.status_code, row.bytes_sent, row.completed) == (
        "alice",
        200,
        SIZE,
        True,
    )
    assert row.range_header is None and row.finished_at is not None


def test_human_size() -> None:
    assert human_size(0) == "0 B"
    assert human_size(999) == "999 B"
    assert human_size(1000) == "1.0 kB"
    assert human_size(12_500_000) == "12.5 MB"
    assert human_size(1_073_741_824) == "1.1 GB"
    assert human_size(5 * 10**15) == "5000.0 TB"


async def test_single_range_then_resume_counts_once(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    settings = api_settings(tmp_path)
    job, data = await completed_job(aconn, settings)
    async with api_client(settings, db_url) as client:
        first = await client.get(url(job.job_id), headers={**ALICE, "Range": "bytes=0-99"})
        assert first.status_code == 206
        assert first.content == data[:100]
        assert first.headers["content-range"] == f"bytes 0-99/{SIZE}"
        assert first.headers["content-length"] == "100"
        assert await job_row(aconn, job.job_id) == (0, None)
        rest = await client.get(url(job.job_id), headers={**ALICE, "Range": "bytes=100-"})
    assert rest.status_code == 206
    assert first.content + rest.content == data
    assert (await job_row(aconn, job.job_id))[0] == 1
    rows = await downloads.downloads_of_job(aconn, job.job_id)
    assert [(r.status_code, r.range_header, r.bytes_sent, r.completed) for r in rows] == [
        (206, "bytes=0-99", 100, False),
        (206, "bytes=100-", SIZE - 100, True),
    ]


async def test_suffix_ranges(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    job, data = await completed_job(aconn, settings)
    async with api_client(settings, db_url) as client:
        tail = await client.get(url(job.job_id), headers={**ALICE, "Range": "bytes=-100"})
        whole = await client.get(url(job.job_id), headers={**ALICE, "Range": f"bytes=-{SIZE * 2}"})
    assert tail.status_code == 206 and tail.content == data[-100:]
    assert tail.headers["content-range"] == f"bytes {SIZE - 100}-{SIZE - 1}/{SIZE}"
    assert whole.content == data
    assert whole.headers["content-range"] == f"bytes 0-{SIZE - 1}/{SIZE}"
    # Both delivered the last byte, seconds apart: one download.
    assert (await job_row(aconn, job.job_id))[0] == 1
    rows = await downloads.downloads_of_job(aconn, job.job_id)
    assert [r.completed for r in rows] == [True, True]


@pytest.mark.parametrize("header", [f"bytes={SIZE}-", f"bytes={SIZE + 10}-{SIZE + 20}"])
async def test_unsatisfiable_range_is_416_json(
    aconn: AConn, db_url: str, tmp_path: Path, header: str
) -> None:
    settings = api_settings(tmp_path)
    job, _ = await completed_job(aconn, settings)
    async with api_client(settings, db_url) as client:
        response = await client.get(url(job.job_id), headers={**ALICE, "Range": header})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{SIZE}"
    assert response.json()["code"] == "RANGE_NOT_SATISFIABLE"
    assert await downloads.downloads_of_job(aconn, job.job_id) == []


async def test_two_ranges_are_multipart(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    job, data = await completed_job(aconn, settings)
    async with api_client(settings, db_url) as client:
        response = await client.get(
            url(job.job_id), headers={**ALICE, "Range": "bytes=0-9,1000-1019"}
        )
    assert response.status_code == 206
    content_type = response.headers["content-type"]
    assert content_type.startswith("multipart/byteranges; boundary=")
    boundary = content_type.split("boundary=")[1].encode()
    parts = [p for p in response.content.split(b"--" + boundary) if p.strip(b"-\r\n")]
    bodies = []
    for part in parts:
        head, _, body = part.partition(b"\r\n\r\n")
        assert b"Content-Type: application/gzip" in head
        bodies.append(body.removesuffix(b"\r\n"))
    assert bodies == [data[0:10], data[1000:1020]]
    assert (await job_row(aconn, job.job_id))[0] == 0  # did not reach the end
    (row,) = await downloads.downloads_of_job(aconn, job.job_id)
    assert row.bytes_sent == len(response.content) and row.completed is False


async def test_too_many_ranges_get_the_whole_file(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    settings = api_settings(tmp_path)
    job, data = await completed_job(aconn, settings)
    many = ",".join(f"{i * 10}-{i * 10 + 4}" for i in range(1000))
    seventeen = ",".join(f"{i * 10}-{i * 10 + 4}" for i in range(17))
    sixteen = ",".join(f"{i * 10}-{i * 10 + 4}" for i in range(16))
    async with api_client(settings, db_url) as client:
        for header in (many, seventeen):
            response = await client.get(
                url(job.job_id), headers={**ALICE, "Range": f"bytes={header}"}
            )
            assert response.status_code == 200 and response.content == data
        bounded = await client.get(url(job.job_id), headers={**ALICE, "Range": f"bytes={sixteen}"})
    assert bounded.status_code == 206
    assert bounded.headers["content-type"].startswith("multipart/byteranges")


@pytest.mark.parametrize("header", ["bytes=abc", "items=0-10", "bytes=", "bytes=5-1", "garbage"])
async def test_malformed_range_is_ignored(
    aconn: AConn, db_url: str, tmp_path: Path, header: str
) -> None:
    settings = api_settings(tmp_path)
    job, data = await completed_job(aconn, settings)
    async with api_client(settings, db_url) as client:
        response = await client.get(url(job.job_id), headers={**ALICE, "Range": header})
    assert response.status_code == 200 and response.content == data


async def test_if_range(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    job, data = await completed_job(aconn, settings)
    etag = f'"{hashlib.sha256(data).hexdigest()}"'
    async with api_client(settings, db_url) as client:
        match = await client.get(
            url(job.job_id), headers={**ALICE, "Range": "bytes=10-19", "If-Range": etag}
        )
        other = await client.get(
            url(job.job_id), headers={**ALICE, "Range": "bytes=10-19", "If-Range": '"0000"'}
        )
        # A stale validator wins over an unsatisfiable range: the whole file.
        stale = await client.get(
            url(job.job_id), headers={**ALICE, "Range": f"bytes={SIZE}-", "If-Range": '"x"'}
        )
    assert match.status_code == 206 and match.content == data[10:20]
    assert other.status_code == 200 and other.content == data
    assert stale.status_code == 200 and stale.content == data


async def test_head_has_headers_no_body_no_row(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    job, data = await completed_job(aconn, settings)
    async with api_client(settings, db_url) as client:
        head = await client.head(url(job.job_id), headers=ALICE)
        ranged = await client.head(url(job.job_id), headers={**ALICE, "Range": "bytes=0-9"})
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(SIZE)
    assert head.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert ranged.status_code == 206 and ranged.headers["content-range"] == f"bytes 0-9/{SIZE}"
    assert await downloads.downloads_of_job(aconn, job.job_id) == []


async def test_owner_admin_and_others(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    job, data = await completed_job(aconn, settings)
    async with api_client(settings, db_url) as client:
        bob = await client.get(url(job.job_id), headers=BOB)
        anonymous = await client.get(url(job.job_id))
        admin = await client.get(url(job.job_id), headers=ADMIN)
        bad_id = await client.get(url("not-a-uuid"), headers=ALICE)
        unknown = await client.get(url(uuid4()), headers=ALICE)
    assert bob.status_code == 403 and bob.json()["code"] == "DOWNLOAD_UNAUTHORIZED"
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "UNAUTHORIZED"
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert admin.status_code == 200 and admin.content == data
    assert bad_id.status_code == 400 and bad_id.json()["code"] == "INVALID_JOB_ID"
    assert unknown.status_code == 404 and unknown.json()["code"] == "JOB_NOT_FOUND"
    (row,) = await downloads.downloads_of_job(aconn, job.job_id)
    assert row.subject == "root"


async def test_not_ready_is_404(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    job = await create(aconn, "noop", owner="alice")
    async with api_client(api_settings(tmp_path), db_url) as client:
        response = await client.get(url(job.job_id), headers=ALICE)
    assert response.status_code == 404
    body = response.json()
    assert body["code"] == "PACKAGE_NOT_READY" and body["status"] == "error"


async def test_expired_and_deleted_are_410(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    expired, _ = await completed_job(aconn, settings, expires_in=timedelta(seconds=-5))
    deleted, _ = await completed_job(aconn, settings)
    await aconn.execute(
        "UPDATE exportd.jobs SET package_deleted_at = now(), package_path = NULL WHERE job_id = %s",
        (deleted.job_id,),
    )
    async with api_client(settings, db_url) as client:
        first = await client.get(url(expired.job_id), headers=ALICE)
        second = await client.get(url(deleted.job_id), headers=ALICE)
        head = await client.head(url(expired.job_id), headers=ALICE)
    for response in (first, second):
        assert response.status_code == 410
        body = response.json()
        assert body["code"] == "PACKAGE_EXPIRED"
        assert datetime.fromisoformat(body["expired_at"]) <= datetime.now(UTC)
    assert head.status_code == 410


async def test_file_gone_under_a_live_row_is_410(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    job, _ = await completed_job(aconn, settings)
    assert job is not None
    for path in settings.storage_dir.rglob("*.tar.gz"):
        path.unlink()
    async with api_client(settings, db_url) as client:
        response = await client.get(url(job.job_id), headers=ALICE)
    assert response.status_code == 410 and response.json()["code"] == "PACKAGE_EXPIRED"


async def test_file_deleted_while_streaming_completes(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    """Expiry unlinks a file a response already opened: the response finishes intact."""
    settings = api_settings(tmp_path)
    job, data = await completed_job(aconn, settings, os.urandom(3_000_000))
    async with api_client(settings, db_url) as client:
        async with client.stream("GET", url(job.job_id), headers=ALICE) as response:
            assert response.status_code == 200
            chunks: list[bytes] = []
            async for chunk in response.aiter_bytes():
                if not chunks:
                    for path in settings.storage_dir.rglob("*.tar.gz"):
                        path.unlink()
                    await aconn.execute(
                        "UPDATE exportd.jobs SET package_deleted_at = now(), package_path = NULL"
                        " WHERE job_id = %s",
                        (job.job_id,),
                    )
                chunks.append(chunk)
        after = await client.get(url(job.job_id), headers=ALICE)
    assert b"".join(chunks) == data
    assert after.status_code == 410


@pytest.mark.parametrize("kind", ["symlink-file", "symlink-dir", "directory", "absolute", "dotdot"])
async def test_unsafe_rows_never_serve_outside_the_root(
    aconn: AConn, db_url: str, tmp_path: Path, kind: str
) -> None:
    settings = api_settings(tmp_path)
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("not for download\n")
    root = settings.storage_dir
    (root / "ab").mkdir(parents=True)
    if kind == "symlink-file":
        (root / "ab" / "p.tar.gz").symlink_to(secret)
        path = "ab/p.tar.gz"
    elif kind == "symlink-dir":
        (root / "cd").symlink_to(secret.parent)
        path = "cd/secret.txt"
    elif kind == "directory":
        (root / "ab" / "dir.tar.gz").mkdir()
        path = "ab/dir.tar.gz"
    else:
        # The schema refuses such rows (CHECK); a damaged or hand-edited
        # database must still not serve them.
        await aconn.execute("ALTER TABLE exportd.jobs DROP CONSTRAINT jobs_package_path_relative")
        path = str(secret) if kind == "absolute" else "../outside/secret.txt"
    job, _ = await completed_job(aconn, settings, b"x", path=path)
    async with api_client(settings, db_url) as client:
        response = await client.get(url(job.job_id), headers=ALICE)
    assert response.status_code == 410
    assert b"not for download" not in response.content
    assert str(tmp_path) not in response.text


async def test_concurrent_pieces_count_once(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    """Eight connections, one piece each (what aria2c -x8 does): one download."""
    settings = api_settings(tmp_path)
    job, data = await completed_job(aconn, settings)
    step = SIZE // 8
    async with api_client(settings, db_url) as client:
        pieces = await asyncio.gather(
            *(
                client.get(
                    url(job.job_id),
                    headers={
                        **ALICE,
                        "Range": f"bytes={i * step}-{(i + 1) * step - 1 if i < 7 else ''}",
                    },
                )
                for i in range(8)
            )
        )
        whole = await asyncio.gather(
            *(client.get(url(job.job_id), headers=ALICE) for _ in range(5))
        )
    assert b"".join(p.content for p in pieces) == data
    assert all(w.content == data for w in whole)
    # Six responses reached the end at about the same time: exactly one
    # download, never two (the job's row lock orders the decisions).
    assert (await job_row(aconn, job.job_id))[0] == 1
    rows = await downloads.downloads_of_job(aconn, job.job_id)
    assert len(rows) == 13 and sum(r.completed for r in rows) == 6


async def test_a_later_download_counts_again(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    job, _ = await completed_job(aconn, settings)
    async with api_client(settings, db_url) as client:
        await client.get(url(job.job_id), headers=ALICE)
        await aconn.execute(
            "UPDATE exportd.jobs SET last_downloaded_at = last_downloaded_at - %s"
            " WHERE job_id = %s",
            (timedelta(seconds=downloads.SESSION_SECONDS + 1), job.job_id),
        )
        await client.get(url(job.job_id), headers=ALICE)
        assert (await job_row(aconn, job.job_id))[0] == 2
        await aconn.execute(
            "UPDATE exportd.jobs SET last_downloaded_at = last_downloaded_at - %s"
            " WHERE job_id = %s",
            (timedelta(seconds=downloads.SESSION_SECONDS - 5), job.job_id),
        )
        await client.get(url(job.job_id), headers=ALICE)
    assert (await job_row(aconn, job.job_id))[0] == 2


async def test_worker_package_downloads_with_matching_sha(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    settings = api_settings(tmp_path)
    job = await create(aconn, "blob", {"size": 200_000}, owner="alice")
    async with running_worker(settings, db_url):
        done = await wait_for(aconn, job.job_id)
    assert done.status is JobStatus.COMPLETED
    async with api_client(settings, db_url) as client:
        status = (await client.get(f"/api/v1/jobs/{job.job_id}", headers=ALICE)).json()["data"]
        response = await client.get(status["package"]["download_url"], headers=ALICE)
        again = (await client.get(f"/api/v1/jobs/{job.job_id}", headers=ALICE)).json()["data"]
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == status["package"]["sha256"]
    assert len(response.content) == status["package"]["size_bytes"]
    assert again["package"]["download_count"] == 1
    assert again["package"]["last_downloaded_at"] is not None
    assert LocalStorage(settings.storage_dir).root == settings.storage_dir.resolve()


# -- packages that are gone, and their directories ------------------------------


async def reexport_and_download(
    aconn: AConn, client: httpx.AsyncClient, settings: Settings, db_url: str, job_id: UUID
) -> bytes:
    """POST …/retry is accepted, the job runs again, its new package downloads."""
    retried = await client.post(url(job_id, "retry"), headers=ALICE)
    assert retried.status_code == 200, retried.text
    assert retried.json()["data"]["status"] == "pending"
    async with running_worker(settings, db_url):
        done = await wait_for(aconn, job_id)
    assert done.status is JobStatus.COMPLETED and done.run == 2
    assert done.package_path is not None and done.package_deleted_at is None
    response = await client.get(url(job_id), headers=ALICE)
    assert response.status_code == 200, response.text
    return response.content


def package_path(job: Job) -> str:
    assert job.package_path is not None
    return job.package_path


def expired_at(response: httpx.Response) -> datetime:
    assert response.status_code == 410, response.text
    body = response.json()
    assert body["code"] == "PACKAGE_EXPIRED"
    return datetime.fromisoformat(body["expired_at"])


async def test_expired_but_not_yet_swept_is_410_and_reexportable(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    """Past package_expires_at, before the cleanup tick: the download says
    410, so the retry must not say 409 "package still exists"."""
    settings = api_settings(tmp_path)
    job, _ = await completed_job(aconn, settings, expires_in=timedelta(minutes=-1))
    old_path = package_path(await job_store.get_job(aconn, job.job_id))
    async with api_client(settings, db_url) as client:
        gone = await client.get(url(job.job_id), headers=ALICE)
        assert expired_at(gone) <= datetime.now(UTC)
        package = await reexport_and_download(aconn, client, settings, db_url, job.job_id)
    assert package[:2] == b"\x1f\x8b"  # a gzip stream: the new run's package
    # The row let go of the old file; the orphan sweep removes it, not the new one.
    latest = await job_store.get_job(aconn, job.job_id)
    new_path = package_path(latest)
    assert new_path != old_path and (settings.storage_dir / old_path).exists()
    swept = await Cleanup(
        replace(settings, orphan_grace_seconds=0), LocalStorage(settings.storage_dir)
    ).run(aconn, now=datetime.now(UTC) + timedelta(seconds=5))
    assert swept.orphans_removed == 1
    assert not (settings.storage_dir / old_path).exists()
    assert (settings.storage_dir / new_path).exists()


@pytest.mark.parametrize("how", ["file removed", "directory in its place"])
async def test_package_missing_from_disk_is_410_now_and_reexportable(
    aconn: AConn, db_url: str, tmp_path: Path, how: str
) -> None:
    """A live row whose file is not there (restored from a backup without
    it): 410 with an `expired_at` that is not in the future (the moment it
    was found missing, not the expiry 30 days ahead), recorded on the row,
    and a retry is accepted."""
    settings = api_settings(tmp_path)
    job, _ = await completed_job(aconn, settings)
    path = settings.storage_dir / package_path(await job_store.get_job(aconn, job.job_id))
    path.unlink()
    if how == "directory in its place":
        path.mkdir()
    async with api_client(settings, db_url) as client:
        before = datetime.now(UTC)
        gone = await client.get(url(job.job_id), headers=ALICE)
        after = datetime.now(UTC)
        when = expired_at(gone)
        assert before <= when <= after
        row = await job_store.get_job(aconn, job.job_id)
        assert row.status is JobStatus.COMPLETED
        assert row.package_path is None and row.package_deleted_at == when
        view = (await client.get(f"/api/v1/jobs/{job.job_id}", headers=ALICE)).json()["data"]
        assert view["package"]["deleted_at"] is not None
        again = await client.get(url(job.job_id), headers=ALICE)
        assert expired_at(again) == when
        await reexport_and_download(aconn, client, settings, db_url, job.job_id)


async def test_a_missing_storage_root_is_503_and_leaves_the_row(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    """The whole storage directory absent (an unmounted volume) is not one
    package gone: 503, and the row keeps its path for when it is back."""
    settings = api_settings(tmp_path)
    job, data = await completed_job(aconn, settings)
    moved = tmp_path / "unmounted"
    settings.storage_dir.rename(moved)
    async with api_client(settings, db_url) as client:
        response = await client.get(url(job.job_id), headers=ALICE)
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "STORAGE_UNAVAILABLE"
        assert str(tmp_path) not in response.text
        assert (await job_store.get_job(aconn, job.job_id)).package_path is not None
        moved.rename(settings.storage_dir)
        back = await client.get(url(job.job_id), headers=ALICE)
    assert back.status_code == 200 and back.content == data


async def test_a_live_package_is_still_not_retryable(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    settings = api_settings(tmp_path)
    job, _ = await completed_job(aconn, settings)
    async with api_client(settings, db_url) as client:
        refused = await client.post(url(job.job_id, "retry"), headers=ALICE)
        assert refused.status_code == 409 and refused.json()["code"] == "JOB_NOT_RETRYABLE"
        assert (await client.get(url(job.job_id), headers=ALICE)).status_code == 200
    assert (await job_store.get_job(aconn, job.job_id)).package_deleted_at is None


# -- directory modes --------------------------------------------------------------------


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o000], ids=["umask022", "umask077", "umask000"])
async def test_package_directories_are_0750_whatever_the_umask(
    aconn: AConn, db_url: str, tmp_path: Path, mask: int
) -> None:
    """docs/operations.md: directories are created mode 0750 (nginx's group
    reads them, nobody else). `mkdir -p` semantics gave the shard directory
    0755 under umask 022."""
    settings = api_settings(tmp_path)
    shutil.rmtree(settings.storage_dir, ignore_errors=True)
    with umask(mask):
        job = await create(aconn, "blob", {"size": 1000})
        async with running_worker(settings, db_url):
            done = await wait_for(aconn, job.job_id)
    assert done.status is JobStatus.COMPLETED
    relative = package_path(done)
    job_dir = (settings.storage_dir / relative).parent
    shard_dir = job_dir.parent
    assert shard_dir.parent == settings.storage_dir
    modes = {
        name: stat.S_IMODE(os.stat(path).st_mode)
        for name, path in {
            "root": settings.storage_dir,
            "shard": shard_dir,
            "job": job_dir,
            ".tmp": settings.storage_dir / ".tmp",
        }.items()
    }
    assert modes == {"root": 0o750, "shard": 0o750, "job": 0o750, ".tmp": 0o750}
    async with api_client(settings, db_url) as client:
        assert (await client.get(url(job.job_id), headers=ALICE)).status_code == 200
