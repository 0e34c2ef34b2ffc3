"""The package streamed from its open file: single and multiple ranges,
suffix ranges, `If-Range` and 416 as parsed by `web.ranges`, the file never
read whole into memory, and no private Starlette member used.

`PackageResponse` is a Starlette `FileResponse` (its public constructor makes
the headers) whose ASGI call is exportd's own. A Range header with more than
`MAX_RANGES` ranges is ignored and the whole file is sent (200), which RFC
9110 allows; parsing stays bounded. An unsatisfiable range is a 416 in
exportd's JSON error shape with `Content-Range: bytes */size`; a malformed
Range header is ignored (RFC 9110 §14.2).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from secrets import token_hex
from typing import Any, BinaryIO

import anyio
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import FileResponse
from starlette.types import Message, Receive, Scope, Send

from web.download_tracking import DownloadTracker
from web.errors import error_response
from web.ranges import (
    ByteRange,
    MalformedRange,
    Multipart,
    RangeNotSatisfiable,
    if_range_allows,
    parse_range,
)

log = logging.getLogger("web.package_download")

MEDIA_TYPE = "application/gzip"
# More ranges than this in one request are ignored (whole file, 200): a
# legitimate client asks for a handful; thousands would only burn CPU.
MAX_RANGES = 16


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
