"""GET/HEAD /api/v1/jobs/{id}/download: the package, resumable with Range.

`PackageResponse` is a Starlette `FileResponse` (its public constructor makes
the headers) whose ASGI call is exportd's own: single and multiple ranges,
suffix ranges, `If-Range` and 416 as parsed by `web.ranges`, the file never
read whole into memory, and no private Starlette member used. Around it:

- the file is opened *before* the answer is chosen (inside the storage root,
  no symlink on the way, a regular file), and that open descriptor is what
  gets streamed — so a package deleted by expiry after the check is either
  answered 410 (not opened yet) or streamed to the end (already open: on
  POSIX an unlinked file lives on while it is open). Never a 500.
- whatever is answered 410 can be re-exported at once: a file found missing
  under a live row is recorded on the row (deleted as of now) before the
  410, and the retry statement lets go of an expired package the cleanup
  has not deleted yet (daemon/db/jobs.py). A file that exists but cannot be
  read, or a storage root that is not there, is a 503, not "gone".
- a Range header with more than `MAX_RANGES` ranges is ignored and the whole
  file is sent (200), which RFC 9110 allows; parsing stays bounded.
- an unsatisfiable range is a 416 in exportd's JSON error shape with
  `Content-Range: bytes */size`; a malformed Range header is ignored (RFC
  9110 §14.2), so a client always gets the file rather than a parse error.
- each 200/206 response is a row in `exportd.downloads`, closed when the
  response ends (finished, client gone, or failed) with the bytes really
  sent; the job's `download_count` grows only when the response delivered
  the file's last byte.

With `EXPORTD_ACCEL_REDIRECT` the same checks run, then the answer carries
`X-Accel-Redirect` and nginx streams the file itself (docs/operations.md).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from secrets import token_hex
from typing import Any, BinaryIO
from urllib.parse import quote

import anyio
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.types import Message, Receive, Scope, Send

from daemon.db import downloads
from daemon.db import jobs as job_store
from daemon.models import Job, JobStatus
from daemon.storage.local import UnsafePath
from web.access import check_visible, parse_job_id
from web.auth import Principal
from web.context import ApiContext, api_context
from web.errors import ApiError, error_response
from web.job_json import iso
from web.metrics import DOWNLOAD_BYTES
from web.ranges import (
    ByteRange,
    MalformedRange,
    Multipart,
    RangeNotSatisfiable,
    if_range_allows,
    parse_range,
)

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/gzip"
CACHE_CONTROL = "private, max-age=3600"
# More ranges than this in one request are ignored (whole file, 200): a
# legitimate client asks for a handful; thousands would only burn CPU.
MAX_RANGES = 16
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


def open_package(ctx: ApiContext, job: Job) -> tuple[BinaryIO, os.stat_result]:
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
        path = ctx.storage.resolve(job.package_path)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except UnsafePath:
        log.warning("refusing an unsafe package path", extra=extra)
        raise PackageMissing from None
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR) and not ctx.storage.root.is_dir():
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


class DownloadTracker:
    """Writes the `exportd.downloads` row of one response."""

    def __init__(self, ctx: ApiContext, job: Job, principal: Principal) -> None:
        self.ctx = ctx
        self.job = job
        self.subject = principal.subject
        self.download_id: int | None = None

    async def start(self, status: int, range_header: str | None) -> None:
        async with self.ctx.connection() as conn:
            self.download_id = await downloads.start_download(
                conn,
                self.job.job_id,
                subject=self.subject,
                range_header=range_header,
                status_code=status,
            )

    async def finish(self, bytes_sent: int, completed: bool) -> None:
        if self.download_id is None:
            return
        DOWNLOAD_BYTES.inc(bytes_sent)
        async with self.ctx.connection() as conn:
            await downloads.finish_download(
                conn, self.download_id, bytes_sent=bytes_sent, completed=completed
            )


class PackageResponse(FileResponse):
    """The package over its already open file, with Range support and tracking.

    `FileResponse`'s public constructor builds the headers (Content-Length,
    Last-Modified, Content-Disposition, Accept-Ranges); the ASGI call is
    exportd's own, so the bytes always come from the descriptor the handler
    opened and ranges follow `web.ranges`.
    """

    # Starlette reads 64 KiB at a time; 1 MiB reads take a download from
    # ~0.2x to ~1x nginx sendfile on loopback (docs/benchmarks.md), at one
    # buffer per response in flight.
    chunk_size = 1024 * 1024

    def __init__(
        self,
        file: BinaryIO,
        info: os.stat_result,
        *,
        filename: str,
        headers: dict[str, str],
        tracker: DownloadTracker,
    ) -> None:
        super().__init__(
            f"/dev/fd/{file.fileno()}",  # never opened by path: __call__ streams `file`
            headers=headers,
            media_type=MEDIA_TYPE,
            filename=filename,
            stat_result=info,
        )
        self.file = file
        self.package_size = info.st_size
        self.tracker = tracker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._respond(scope, receive, send)
        finally:
            self.file.close()

    def _range_plan(self, scope: Scope) -> tuple[list[ByteRange] | None, str | None]:
        """The ranges to send (None: the whole file) and the Range header to record.

        Raises RangeNotSatisfiable for a 416. A malformed header is ignored
        (and not recorded) rather than answered 400; one with more than
        MAX_RANGES ranges or a stale If-Range gets the whole file.
        """
        headers = Headers(scope=scope)
        http_range = headers.get("range")
        if_range = headers.get("if-range")
        if http_range is None or scope["method"].upper() not in ("GET", "HEAD"):
            return None, http_range
        if if_range is not None and not if_range_allows(
            if_range, etag=self.headers["etag"], last_modified=self.headers["last-modified"]
        ):
            return None, http_range
        try:
            ranges = parse_range(http_range, self.package_size, max_ranges=MAX_RANGES)
        except MalformedRange:
            return None, None
        return ranges, http_range

    async def _respond(self, scope: Scope, receive: Receive, send: Send) -> None:
        size = self.package_size
        head = scope["method"].upper() == "HEAD"
        try:
            ranges, range_header = self._range_plan(scope)
        except RangeNotSatisfiable:
            response = error_response(
                416,
                "RANGE_NOT_SATISFIABLE",
                f"the requested range is outside the package ({size} bytes)",
                headers={"Content-Range": f"bytes */{size}"},
            )
            await response(scope, receive, send)
            return
        reaches_end = ranges is None or max(end for _, end in ranges) >= size
        state: dict[str, Any] = {"status": None, "sent": 0, "done": False}

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                if not head and message["status"] in (200, 206):
                    await self.tracker.start(message["status"], range_header)
                await send(message)
                return
            await send(message)
            if message["type"] == "http.response.body":
                state["sent"] += len(message.get("body", b""))
                if not message.get("more_body", False):
                    state["done"] = True

        try:
            await self._send_until_disconnect(scope, receive, tracking_send, ranges, head)
        finally:
            completed = bool(state["done"]) and (
                (state["status"] == 206 and reaches_end) or state["status"] == 200
            )
            with anyio.CancelScope(shield=True):
                try:
                    await self.tracker.finish(int(state["sent"]), completed)
                except Exception:
                    log.exception(
                        "could not record the end of a download",
                        extra={"job_id": str(self.tracker.job.job_id), "action": "download"},
                    )

    async def _send_until_disconnect(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        ranges: list[ByteRange] | None,
        head: bool,
    ) -> None:
        """Send the answer; stop when the client disconnects (as FileResponse does).

        Before ASGI spec 2.4 a server may swallow sends to a closed connection
        (uvicorn says 2.3), so `http.disconnect` is awaited alongside the
        transfer and cancels it; a header-only answer needs no watch.
        """
        spec = str(scope.get("asgi", {}).get("spec_version", "2.0"))
        if head or tuple(int(n) for n in spec.split(".")) >= (2, 4):
            await self._send(send, ranges, head)
            return
        with _single_exception():
            async with anyio.create_task_group() as group:

                async def transfer() -> None:
                    await self._send(send, ranges, head)
                    group.cancel_scope.cancel()

                group.start_soon(transfer)
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

    async def _send(self, send: Send, ranges: list[ByteRange] | None, head: bool) -> None:
        if ranges is None:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            await self._send_bytes(send, 0, self.package_size, head=head, last=True)
            return
        headers = MutableHeaders(raw=list(self.raw_headers))
        if len(ranges) == 1:
            ((start, end),) = ranges
            headers["content-range"] = f"bytes {start}-{end - 1}/{self.package_size}"
            headers["content-length"] = str(end - start)
            await send({"type": "http.response.start", "status": 206, "headers": headers.raw})
            await self._send_bytes(send, start, end, head=head, last=True)
            return
        # Browsers use boundaries with 95-96 bits of entropy; 13 bytes is 104.
        multipart = Multipart(token_hex(13), self.headers["content-type"], self.package_size)
        headers["content-type"] = multipart.media_type
        headers["content-length"] = str(multipart.content_length(ranges))
        await send({"type": "http.response.start", "status": 206, "headers": headers.raw})
        if head:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        for start, end in ranges:
            await send(
                {
                    "type": "http.response.body",
                    "body": multipart.part_head(start, end),
                    "more_body": True,
                }
            )
            await self._send_bytes(send, start, end, head=False, last=False)
            await send(
                {"type": "http.response.body", "body": multipart.part_tail, "more_body": True}
            )
        await send({"type": "http.response.body", "body": multipart.closing(), "more_body": False})

    async def _send_bytes(
        self, send: Send, start: int, end: int, *, head: bool, last: bool
    ) -> None:
        """Bytes start .. end - 1 of the open file, `chunk_size` at a time.

        `last`: the final chunk ends the response body. A file shorter than
        its stat said is an error, never a short body under a long
        Content-Length.
        """
        if head or start == end:
            if last:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        file = anyio.wrap_file(self.file)
        await file.seek(start)
        while start < end:
            chunk = await file.read(min(self.chunk_size, end - start))
            if not chunk:
                raise RuntimeError("the package file is shorter than expected")
            start += len(chunk)
            await send(
                {"type": "http.response.body", "body": chunk, "more_body": not last or start < end}
            )


@contextmanager
def _single_exception() -> Iterator[None]:
    """Raise the one exception of a task group as itself, not as a group."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        exc = group.exceptions[0]
        raise exc from exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


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
    now = datetime.now(UTC)
    downloadable(job, now)
    try:
        file, info = await anyio.to_thread.run_sync(open_package, ctx, job)
    except PackageMissing:
        raise await record_missing(ctx, job, now) from None
    tracker = DownloadTracker(ctx, job, principal)
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
