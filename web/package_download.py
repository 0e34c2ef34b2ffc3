"""GET/HEAD /api/v1/jobs/{id}/download: authorise, then serve the package
from whichever storage backend holds it.

- Local directory: the file is opened *before* the answer is chosen (inside
  the storage root, no symlink on the way, a regular file), and that open
  descriptor is what gets streamed (`web.package_response`) — so a package
  deleted by expiry after the check is either answered 410 (not opened yet)
  or streamed to the end (already open: on POSIX an unlinked file lives on
  while it is open). Never a 500. With `EXPORTD_ACCEL_REDIRECT` the same
  checks run, then nginx streams the file (docs/operations.md).
- S3: a 302 to a presigned URL, or the object streamed through
  (`web.package_s3`).
- whatever is answered 410 can be re-exported at once: a package found
  missing under a live row is recorded on the row (deleted as of now) before
  the 410, and the retry statement lets go of an expired package the cleanup
  has not deleted yet (daemon/db/jobs.py). A package that exists but cannot
  be read, a storage root that is not there, or a bucket that does not
  answer is a 503, not "gone".
- each 200/206 response is a row in `exportd.downloads` (`web.download_tracking`).

`serve()` is shared with the signed links of `web.links`, which authorise
by their token instead of a header.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from datetime import UTC, datetime
from typing import BinaryIO
from urllib.parse import quote

import anyio
from starlette.requests import Request
from starlette.responses import Response

from daemon.db import jobs as job_store
from daemon.models import Job, JobStatus
from daemon.storage.local import LocalStorage, UnsafePath
from web.access import check_visible, parse_job_id
from web.context import ApiContext, api_context
from web.download_tracking import DownloadTracker
from web.errors import ApiError
from web.job_json import iso
from web.package_response import MEDIA_TYPE, PackageResponse
from web.ranges import MalformedRange, RangeNotSatisfiable, parse_range

log = logging.getLogger(__name__)

CACHE_CONTROL = "private, max-age=3600"
# With EXPORTD_ACCEL_REDIRECT nginx applies ranges itself; the downloads row
# counts up to this many as a ranged (206) request, as exportd always has
# (the default `max_ranges` of Starlette's FileResponse).
ACCEL_MAX_RANGES = 100


def human_size(size: int) -> str:
    """`12.5 MB`: decimal units, one decimal from kB on (X-Package-Size)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def download_filename(job: Job) -> str:
    day = (job.completed_at or job.created_at).astimezone(UTC).date().isoformat()
    return f"export-{job.kind}-{day}.tar.gz"


def package_headers(job: Job, size: int) -> dict[str, str]:
    assert job.package_sha256 is not None
    return {
        "ETag": f'"{job.package_sha256}"',
        "Cache-Control": CACHE_CONTROL,
        "X-Package-Size": human_size(size),
    }


def gone(job: Job, now: datetime) -> ApiError:
    """410 PACKAGE_EXPIRED. `expired_at` is when the package stopped being
    downloadable — its expiry, or its deletion if that came first (a file
    found missing is deleted as of that moment) — and never in the future.
    A job answered 410 can always be re-exported at once (POST …/retry)."""
    moments = [t for t in (job.package_expires_at, job.package_deleted_at) if t is not None]
    expired = min([*moments, now])
    return ApiError(
        410, "PACKAGE_EXPIRED", "the package has expired and was deleted", expired_at=iso(expired)
    )


def downloadable(job: Job, now: datetime) -> None:
    """Refuse a job whose package cannot be served (404 not ready, 410 gone)."""
    if job.status is not JobStatus.COMPLETED:
        raise ApiError(404, "PACKAGE_NOT_READY", f"the export is {job.status.value}, not completed")
    expired = job.package_expires_at is not None and job.package_expires_at <= now
    if job.package_path is None or job.package_deleted_at is not None or expired:
        raise gone(job, now)


class PackageMissing(Exception):
    """No usable package file where the row says: gone (restored from a
    backup without it, removed by hand), or something that is not ours to
    serve (a path leaving the root, a symlink, a directory)."""


def storage_unavailable() -> ApiError:
    return ApiError(
        503,
        "STORAGE_UNAVAILABLE",
        "the package storage cannot be read right now; try again later",
        headers={"Retry-After": "30"},
    )


def open_package(storage: LocalStorage, job: Job) -> tuple[BinaryIO, os.stat_result]:
    """Open the job's package read-only, confined to the storage root.

    A row whose path would leave the root, a symlink, a directory or a file
    that is not there raise PackageMissing (the caller records it and answers
    410), and the file system layout is never revealed. A file that exists
    but cannot be read (permissions, I/O error), or a storage root that is
    not there at all (an unmounted volume), is not "gone": 503, and the row
    is left alone — marking every package deleted because the volume is
    missing or the process runs as the wrong user would lose them all.
    """
    assert job.package_path is not None
    extra = {"job_id": str(job.job_id), "action": "download"}
    try:
        path = storage.resolve(job.package_path)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except UnsafePath:
        log.warning("refusing an unsafe package path", extra=extra)
        raise PackageMissing from None
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR) and not storage.root.is_dir():
            log.warning("the storage root is not there (unmounted?)", extra=extra)
            raise storage_unavailable() from None
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.EISDIR):
            raise PackageMissing from None
        log.warning("cannot open package: %s", exc.strerror, extra=extra)
        raise storage_unavailable() from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise PackageMissing
    return os.fdopen(fd, "rb"), info


async def record_missing(ctx: ApiContext, job: Job, now: datetime) -> ApiError:
    """The 410 for a package whose file is not there, after recording that on
    its row (package_path NULL, package_deleted_at = now), so the row tells
    the truth and a re-export is allowed at once."""
    assert job.package_path is not None
    async with ctx.connection() as conn:
        marked = await job_store.mark_package_missing(
            conn, job.job_id, package_path=job.package_path, now=now
        )
        if marked is None:  # the row changed meanwhile (expired, re-exported)
            latest = await job_store.get_job(conn, job.job_id)
            downloadable(latest, now)
            return gone(latest, now)
    log.warning(
        "package file missing from storage; recorded as deleted",
        extra={"job_id": str(job.job_id), "action": "download"},
    )
    return gone(marked, now)


def accel_response(ctx: ApiContext, job: Job, size: int) -> Response:
    """Hand the transfer to nginx: the same headers, an empty body."""
    assert ctx.settings.accel_redirect is not None and job.package_path is not None
    headers = package_headers(job, size)
    headers["X-Accel-Redirect"] = ctx.settings.accel_redirect + quote(job.package_path)
    headers["Content-Disposition"] = f'attachment; filename="{download_filename(job)}"'
    return Response(b"", media_type=MEDIA_TYPE, headers=headers)


async def download(request: Request) -> Response:
    ctx = api_context(request)
    principal = ctx.principal(request)
    job_id = parse_job_id(request)
    async with ctx.connection() as conn:
        job = await job_store.get_job(conn, job_id)
    check_visible(job, principal, code="DOWNLOAD_UNAUTHORIZED")
    return await serve(ctx, request, job, principal.subject)


async def serve(ctx: ApiContext, request: Request, job: Job, subject: str) -> Response:
    """The package of an authorised job, as `subject` (tracking)."""
    now = datetime.now(UTC)
    downloadable(job, now)
    tracker = DownloadTracker(ctx, job, subject)
    storage = ctx.storage
    if not isinstance(storage, LocalStorage):
        # Imported here: it loads boto3, which a local setup never needs.
        from daemon.storage.s3_backend import S3PackageStorage
        from web import package_s3

        assert isinstance(storage, S3PackageStorage)
        try:
            return await package_s3.serve(ctx, storage, request, job, tracker)
        except PackageMissing:
            raise await record_missing(ctx, job, now) from None
    try:
        file, info = await anyio.to_thread.run_sync(open_package, storage, job)
    except PackageMissing:
        raise await record_missing(ctx, job, now) from None
    if ctx.settings.accel_redirect is not None:
        file.close()
        return await _accel(ctx, request, job, info, tracker)
    return PackageResponse(
        file,
        info,
        filename=download_filename(job),
        headers=package_headers(job, info.st_size),
        tracker=tracker,
    )


async def _accel(
    ctx: ApiContext, request: Request, job: Job, info: os.stat_result, tracker: DownloadTracker
) -> Response:
    """Offloaded download: recorded as requested, since nginx sends the bytes.

    exportd cannot see how many bytes nginx delivered, so the row keeps
    bytes_sent = 0 and `completed` says whether the request asked for the
    file's last byte (no Range, or a range reaching the end).
    """
    size = info.st_size
    http_range = request.headers.get("range")
    status, reaches_end = 200, True
    if http_range is not None and request.method == "GET":
        try:
            ranges = parse_range(http_range, size, max_ranges=ACCEL_MAX_RANGES) or []
        except (MalformedRange, RangeNotSatisfiable):
            ranges = []
        if ranges:
            status, reaches_end = 206, max(end for _, end in ranges) >= size
    if request.method == "GET":
        await tracker.start(status, http_range)
        await tracker.finish(0, reaches_end)
    return accel_response(ctx, job, size)
