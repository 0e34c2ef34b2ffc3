"""Serving a package kept in S3 (DESIGN §10), after the caller authorised it.

- redirect (default): `302 Found` to a presigned GET valid
  `EXPORTD_S3_URL_TTL` seconds that makes the store answer with the same
  file name and content type. The client fetches the bytes, Range and resume
  included, from the store. One HEAD first, so a package missing from the
  bucket is a 410 (recorded on the row) instead of the store's XML 404. The
  `exportd.downloads` row says 302 with no byte count; a redirect without a
  Range header counts as a completed download (exportd cannot see the bytes).
- proxy (`EXPORTD_S3_DOWNLOAD=proxy`): the object streamed through this
  process with the client's Range passed through (one range, as S3 serves;
  several are answered with the whole file, as RFC 9110 allows), `If-Range`
  checked here against the package's ETag, and tracked like a local download.

Errors of the store never reach the client as they are: a missing object is
410, an unsatisfiable range 416, anything else 503 with `Retry-After`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC
from email.utils import format_datetime
from typing import TYPE_CHECKING

import anyio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from daemon.models import Job
from daemon.storage.backend import UnsafeLocation
from daemon.storage.s3_errors import ObjectMissing, RangeNotSatisfiable, S3Error
from web.context import ApiContext
from web.download_tracking import DownloadTracker
from web.errors import error_response
from web.package_download import (
    PackageMissing,
    download_filename,
    package_headers,
    storage_unavailable,
)
from web.package_response import MEDIA_TYPE
from web.ranges import if_range_allows

if TYPE_CHECKING:
    from daemon.storage.s3 import ObjectReader
    from daemon.storage.s3_backend import S3PackageStorage

log = logging.getLogger("web.package_download")

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


async def serve(
    ctx: ApiContext,
    storage: S3PackageStorage,
    request: Request,
    job: Job,
    tracker: DownloadTracker,
) -> Response:
    """The redirect or the proxied stream; PackageMissing for a 410."""
    if ctx.settings.s3_download == "proxy":
        return await _proxy(storage, request, job, tracker)
    return await _redirect(ctx, storage, request, job, tracker)


@contextmanager
def _store_errors(job: Job) -> Iterator[None]:
    """A key exportd never writes or a missing object → PackageMissing (410,
    recorded); an unsatisfiable range passes; any other failure → 503."""
    extra = {"job_id": str(job.job_id), "action": "download"}
    try:
        yield
    except UnsafeLocation:
        log.warning("refusing an unsafe package key", extra=extra)
        raise PackageMissing from None
    except ObjectMissing:
        raise PackageMissing from None
    except RangeNotSatisfiable:
        raise
    except S3Error as exc:
        log.warning("object storage failed during a download: %s", exc, extra=extra)
        raise storage_unavailable() from None


async def _stored_size(storage: S3PackageStorage, job: Job) -> int:
    """The object's size (one HEAD); PackageMissing when it is not there."""
    assert job.package_path is not None
    with _store_errors(job):
        size = await anyio.to_thread.run_sync(storage.size, job.package_path)
    if size is None:
        raise PackageMissing
    return size


async def _redirect(
    ctx: ApiContext,
    storage: S3PackageStorage,
    request: Request,
    job: Job,
    tracker: DownloadTracker,
) -> Response:
    size = await _stored_size(storage, job)
    assert job.package_path is not None
    with _store_errors(job):
        url = storage.presigned_url(
            job.package_path, filename=download_filename(job), ttl_seconds=ctx.settings.s3_url_ttl
        )
    if request.method == "GET":
        await tracker.redirected(request.headers.get("range"))
    headers = package_headers(job, size)
    # The URL expires: neither the browser nor a proxy may keep the redirect.
    headers["Cache-Control"] = "private, no-store"
    return RedirectResponse(url, status_code=302, headers=headers)


def _last_modified(job: Job) -> str:
    moment = job.completed_at or job.created_at
    return format_datetime(moment.astimezone(UTC), usegmt=True)


async def _proxy(
    storage: S3PackageStorage, request: Request, job: Job, tracker: DownloadTracker
) -> Response:
    assert job.package_path is not None and job.package_size_bytes is not None
    relative = job.package_path
    headers = {
        **package_headers(job, job.package_size_bytes),
        "Accept-Ranges": "bytes",
        "Last-Modified": _last_modified(job),
        "Content-Disposition": f'attachment; filename="{download_filename(job)}"',
    }
    if request.method == "HEAD":
        headers["Content-Length"] = str(await _stored_size(storage, job))
        return Response(b"", media_type=MEDIA_TYPE, headers=headers)
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if (
        range_header is not None
        and if_range is not None
        and not if_range_allows(
            if_range, etag=headers["ETag"], last_modified=headers["Last-Modified"]
        )
    ):
        range_header = None
    try:
        with _store_errors(job):
            reader = await anyio.to_thread.run_sync(storage.open_object, relative, range_header)
    except RangeNotSatisfiable:
        size = job.package_size_bytes
        return error_response(
            416,
            "RANGE_NOT_SATISFIABLE",
            f"the requested range is outside the package ({size} bytes)",
            headers={"Content-Range": f"bytes */{size}"},
        )
    headers["Content-Length"] = str(reader.content_length)
    if reader.status == 206 and reader.content_range:
        headers["Content-Range"] = reader.content_range
    return ProxiedPackage(reader, headers, tracker, range_header)


class ProxiedPackage(StreamingResponse):
    """The object's bytes as they come from the store, one chunk read in a
    worker thread at a time (memory: one chunk per response), tracked like
    a local download; the store's connection is closed whatever happens."""

    def __init__(
        self,
        reader: ObjectReader,
        headers: dict[str, str],
        tracker: DownloadTracker,
        range_header: str | None,
    ) -> None:
        self.reader = reader
        self.tracker = tracker
        self.range_header = range_header
        self.sent = 0
        super().__init__(
            self._chunks(), status_code=reader.status, headers=headers, media_type=MEDIA_TYPE
        )

    async def _chunks(self) -> AsyncIterator[bytes]:
        chunks = iter(self.reader)
        while True:
            chunk = await anyio.to_thread.run_sync(next, chunks, None)
            if chunk is None:
                return
            yield chunk

    def _reaches_end(self) -> bool:
        if self.status_code == 200:
            return True
        match = _CONTENT_RANGE.fullmatch(self.reader.content_range or "")
        return match is not None and int(match[2]) + 1 >= int(match[3])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        done = False

        async def tracking_send(message: Message) -> None:
            nonlocal done
            if message["type"] == "http.response.start":
                await self.tracker.start(message["status"], self.range_header)
            await send(message)
            if message["type"] == "http.response.body":
                self.sent += len(message.get("body", b""))
                done = not message.get("more_body", False)

        try:
            await super().__call__(scope, receive, tracking_send)
        finally:
            await anyio.to_thread.run_sync(self.reader.close)
            with anyio.CancelScope(shield=True):
                try:
                    await self.tracker.finish(self.sent, done and self._reaches_end())
                except Exception:
                    log.exception(
                        "could not record the end of a download",
                        extra={"job_id": str(self.tracker.job.job_id), "action": "download"},
                    )
