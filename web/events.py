"""GET /api/v1/jobs/{id}/events: live status and progress as Server-Sent Events.

The worker announces every status or progress change of a job on a
PostgreSQL channel (a trigger, migration 0003). Each API process holds ONE
listening connection (`daemon.db.listen`, owned by `EventHub`) and fans the
notifications out to the streams open in that process, keyed by job id — a
thousand clients following jobs cost one database connection, not a
thousand.

A stream sends the job as a `status` event first, then `status` events (the
whole job, re-read) and `progress` events (the progress fields of the
notification) as they happen, a `: keep-alive` comment when nothing happened
for `keepalive_seconds`, and ends after a final status. The subscription is
made before the job is read, so no change between the read and the first
notification is lost. When the listening connection drops, the hub reconnects
with backoff and tells every stream to re-read its job, so a client never
misses the final status even if the notification itself was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Collection
from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import StreamingResponse

from daemon.db import jobs as job_store
from daemon.db.listen import JobEventListener
from daemon.errors import DatabaseUnavailable
from daemon.kinds.pauses import waiting_on_pause
from daemon.models import Job
from web.access import check_visible, parse_job_id
from web.context import api_context
from web.job_json import job_json

log = logging.getLogger(__name__)

# A stream that falls this far behind (a client reading slowly while a job
# reports progress) drops its backlog and re-reads the job instead.
QUEUE_SIZE = 64
RECONNECT_MIN_SECONDS = 0.2
RECONNECT_MAX_SECONDS = 5.0
PROGRESS_FIELDS = ("job_id", "steps_completed", "steps_total", "current_step", "percentage")

# Put on a stream's queue instead of a notification: "re-read the job".
RESYNC: dict[str, Any] = {"resync": True}


class EventHub:
    """One listening connection per process, fanned out to per-stream queues."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.subscribers: dict[UUID, set[asyncio.Queue[dict[str, Any]]]] = {}
        self.connections = 0  # successful (re)connects, for tests and logs
        self.listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: JobEventListener | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="exportd-event-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._listener is not None:
            await self._listener.close()

    async def _run(self) -> None:
        delay = RECONNECT_MIN_SECONDS
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.listening.clear()
                log.warning(
                    "event listener lost its connection (%s); reconnecting in %.1f s",
                    type(exc).__name__,
                    delay,
                    extra={"action": "events.reconnect"},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
            else:
                delay = RECONNECT_MIN_SECONDS

    async def _listen(self) -> None:
        listener = await JobEventListener.connect(self.database_url, role="web-events")
        self._listener = listener
        try:
            self.connections += 1
            self.listening.set()
            # Anything announced while there was no connection is lost:
            # every stream re-reads its job.
            self._broadcast_resync()
            async for payload in listener.payloads():
                self._dispatch(payload)
        finally:
            self.listening.clear()
            self._listener = None
            with contextlib.suppress(Exception):
                await listener.close()

    # -- fan-out ----------------------------------------------------------------

    def subscribe(self, job_id: UUID) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self.subscribers.setdefault(job_id, set()).add(queue)
        return queue

    def unsubscribe(self, job_id: UUID, queue: asyncio.Queue[dict[str, Any]]) -> None:
        queues = self.subscribers.get(job_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self.subscribers[job_id]

    @property
    def streams(self) -> int:
        return sum(len(q) for q in self.subscribers.values())

    def _dispatch(self, payload: str) -> None:
        try:
            event = json.loads(payload)
            job_id = UUID(event["job_id"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed job event", extra={"action": "events.malformed"})
            return
        for queue in self.subscribers.get(job_id, ()):
            _offer(queue, event)

    def _broadcast_resync(self) -> None:
        for queues in self.subscribers.values():
            for queue in queues:
                _offer(queue, RESYNC)


def _offer(queue: asyncio.Queue[dict[str, Any]], event: dict[str, Any]) -> None:
    try:
        queue.put_nowait(event)
    except asyncio.QueueFull:
        # Behind by QUEUE_SIZE events: drop them, re-read the job instead.
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(RESYNC)


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _progress(job: Job) -> dict[str, Any]:
    return {
        "job_id": str(job.job_id),
        "steps_completed": job.steps_completed,
        "steps_total": job.steps_total,
        "current_step": job.current_step,
        "percentage": job.progress_percentage,
    }


class JobStream:
    """The events of one job for one client, from its queue and the database."""

    def __init__(
        self,
        request: Request,
        job: Job,
        queue: asyncio.Queue[dict[str, Any]],
        keepalive: float,
        paused: Collection[str] = (),
    ) -> None:
        self.ctx = api_context(request)
        self.job = job
        self.paused = paused  # paused kinds, for the job JSON's `paused`
        self.queue = queue
        self.keepalive = keepalive
        self.progress = _progress(job)

    async def _reread(self) -> AsyncIterator[bytes]:
        async with self.ctx.connection() as conn:
            job = await job_store.get_job(conn, self.job.job_id)
            self.paused = await waiting_on_pause(conn, [job])
        if job.status is not self.job.status:
            yield sse("status", job_json(job, self.paused))
        elif _progress(job) != self.progress:
            yield sse("progress", _progress(job))
        self.job, self.progress = job, _progress(job)

    async def events(self) -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        yield sse("status", job_json(self.job, self.paused))
        stale = False  # a re-read failed (database away): retry it until it works
        while stale or not self.job.is_finished:
            try:
                event = await asyncio.wait_for(self.queue.get(), timeout=self.keepalive)
            except TimeoutError:
                if not stale:
                    yield b": keep-alive\n\n"
                    continue
                event = RESYNC
            if event is RESYNC or event.get("status") != self.job.status.value:
                try:
                    async for chunk in self._reread():
                        yield chunk
                    stale = False
                except DatabaseUnavailable:
                    # Keep the client; the hub's reconnect (or the next
                    # keep-alive) triggers another re-read.
                    stale = True
                    yield b": database unavailable, waiting\n\n"
                continue
            progress = {name: event.get(name) for name in PROGRESS_FIELDS}
            if progress != self.progress:
                self.progress = progress
                yield sse("progress", progress)


async def job_events(request: Request) -> StreamingResponse:
    ctx = api_context(request)
    principal = ctx.principal(request)
    job_id = parse_job_id(request)
    hub: EventHub = request.app.state.events
    queue = hub.subscribe(job_id)  # before reading: no change can slip between
    try:
        async with ctx.connection() as conn:
            job = await job_store.get_job(conn, job_id)
            check_visible(job, principal)
            paused = await waiting_on_pause(conn, [job])
    except BaseException:
        hub.unsubscribe(job_id, queue)
        raise
    stream = JobStream(request, job, queue, ctx.keepalive_seconds, paused)

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in stream.events():
                yield chunk
        finally:
            hub.unsubscribe(job_id, queue)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
