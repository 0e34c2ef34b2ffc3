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

Thousands of clients may follow one job (a dashboard, a CI fleet). When it
changes, every stream needs the job re-read — one query each would queue
thousands of requests on the process's ten pooled connections for seconds
(past the pool's wait: 503s and "database unavailable"). So the hub shares
reads (`EventHub.read`): a stream that needs a job joins a read of it
already in flight, and the `status` event is encoded once per read. A read
in flight when a notification of its job arrives may predate the change, so
the notification detaches it: whoever asks after the notification gets a
read that started after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from daemon.db import jobs as job_store
from daemon.db.listen import JobEventListener
from daemon.errors import DatabaseUnavailable
from daemon.kinds.pauses import waiting_on_pause
from daemon.models import Job
from web.access import check_visible, parse_job_id
from web.context import ApiContext, api_context
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
# Put on a stream's queue when its client has gone: "end the stream".
CLOSED: dict[str, Any] = {"closed": True}


class Inbox:
    """The events waiting for one stream: a list and at most one waiter.

    Not an asyncio.Queue: that holds three deques and an Event (about 3 KB)
    per stream, and a process may hold thousands of streams. One reader
    (the stream), one writer (the hub), both on the event loop.
    """

    __slots__ = ("_waiter", "events")

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._waiter: asyncio.Future[None] | None = None

    def offer(self, event: dict[str, Any]) -> None:
        if event is CLOSED:
            self.events.clear()  # nothing before it matters any more
        elif len(self.events) >= QUEUE_SIZE:
            # Behind by QUEUE_SIZE events: drop them, re-read the job instead.
            self.events.clear()
            event = RESYNC
        self.events.append(event)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> dict[str, Any]:
        while not self.events:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.events.pop(0)


@dataclass
class Snapshot:
    """A job as one read saw it, shared by every stream that asked for it."""

    job: Job
    paused: Collection[str]  # paused kinds, for the job JSON's `paused`
    _status: bytes | None = field(default=None, repr=False)

    def status_event(self) -> bytes:
        """The `status` event of this job, encoded once for all its streams."""
        if self._status is None:
            self._status = sse("status", job_json(self.job, self.paused))
        return self._status


class EventHub:
    """One listening connection per process, fanned out to per-stream queues."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.subscribers: dict[UUID, set[Inbox]] = {}
        self.connections = 0  # successful (re)connects, for tests and logs
        self.listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: JobEventListener | None = None
        # The read of each job in flight (see the module docstring).
        self._reads: dict[UUID, asyncio.Future[Snapshot]] = {}
        self.reads = 0  # reads started, for tests

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

    def subscribe(self, job_id: UUID) -> Inbox:
        queue = Inbox()
        self.subscribers.setdefault(job_id, set()).add(queue)
        return queue

    def unsubscribe(self, job_id: UUID, queue: Inbox) -> None:
        queues = self.subscribers.get(job_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self.subscribers[job_id]

    @property
    def streams(self) -> int:
        return sum(len(q) for q in self.subscribers.values())

    async def read(self, job_id: UUID, load: Callable[[], Awaitable[Snapshot]]) -> Snapshot:
        """The job, from the read of it in flight or else from `load()`.

        One caller going away (its client disconnected) does not cancel the
        read for the others. Its errors (no such job, database unavailable)
        reach every caller that joined it.
        """
        pending = self._reads.get(job_id)
        if pending is None:
            self.reads += 1
            pending = asyncio.ensure_future(load())
            self._reads[job_id] = pending
            pending.add_done_callback(lambda done: self._forget_read(job_id, done))
        return await asyncio.shield(pending)

    def _forget_read(self, job_id: UUID, done: asyncio.Future[Snapshot]) -> None:
        if self._reads.get(job_id) is done:
            del self._reads[job_id]

    def _dispatch(self, payload: str) -> None:
        try:
            event = json.loads(payload)
            job_id = UUID(event["job_id"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed job event", extra={"action": "events.malformed"})
            return
        # A read in flight may predate this change: later readers start anew.
        self._reads.pop(job_id, None)
        for queue in self.subscribers.get(job_id, ()):
            queue.offer(event)

    def _broadcast_resync(self) -> None:
        self._reads.clear()
        for queues in self.subscribers.values():
            for queue in queues:
                queue.offer(RESYNC)


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
    """The events of one job for one client, from its queue and the hub's reads."""

    def __init__(
        self,
        request: Request,
        hub: EventHub,
        snapshot: Snapshot,
        queue: Inbox,
        keepalive: float,
    ) -> None:
        self.ctx = api_context(request)
        self.hub = hub
        self.snapshot = snapshot
        self.queue = queue
        self.keepalive = keepalive
        self.progress = _progress(snapshot.job)

    @property
    def job(self) -> Job:
        return self.snapshot.job

    async def _reread(self) -> AsyncIterator[bytes]:
        snapshot = await self.hub.read(self.job.job_id, lambda: load(self.ctx, self.job.job_id))
        job = snapshot.job
        if job.status is not self.job.status:
            yield snapshot.status_event()
        elif _progress(job) != self.progress:
            yield sse("progress", _progress(job))
        self.snapshot, self.progress = snapshot, _progress(job)

    async def events(self) -> AsyncGenerator[bytes, None]:
        yield b"retry: 2000\n\n"
        yield self.snapshot.status_event()
        stale = False  # a re-read failed (database away): retry it until it works
        while stale or not self.job.is_finished:
            try:
                # asyncio.timeout, not wait_for: no task per wait (memory per stream).
                async with asyncio.timeout(self.keepalive):
                    event = await self.queue.get()
            except TimeoutError:
                if not stale:
                    yield b": keep-alive\n\n"
                    continue
                event = RESYNC
            if event is CLOSED:
                return
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


async def load(ctx: ApiContext, job_id: UUID) -> Snapshot:
    """One read of a job and of whether its kind is paused (`EventHub.read`)."""
    async with ctx.connection() as conn:
        job = await job_store.get_job(conn, job_id)
        paused = await waiting_on_pause(conn, [job])
    return Snapshot(job, paused)


class EventStreamResponse(StreamingResponse):
    """The response of one stream: its events as they come, until the job is
    finished or the client goes.

    Starlette's StreamingResponse runs each response in an anyio task group
    (a task, a cancel scope, an event: some KB per open stream). Here the
    response task sends the events itself and one small task waits for the
    client's disconnect, which ends the stream through its inbox.
    """

    def __init__(self, stream: JobStream, on_close: Callable[[], None]) -> None:
        self.events = stream.events()
        self.stream = stream
        self.on_close = on_close
        super().__init__(
            self.events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = asyncio.create_task(self._disconnect(receive))
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            async for chunk in self.events:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            self.on_close()
            await self.events.aclose()

    async def _disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.stream.queue.offer(CLOSED)


async def job_events(request: Request) -> StreamingResponse:
    ctx = api_context(request)
    principal = ctx.principal(request)
    job_id = parse_job_id(request)
    hub: EventHub = request.app.state.events
    queue = hub.subscribe(job_id)  # before reading: no change can slip between
    try:
        snapshot = await hub.read(job_id, lambda: load(ctx, job_id))
        check_visible(snapshot.job, principal)
    except BaseException:
        hub.unsubscribe(job_id, queue)
        raise
    stream = JobStream(request, hub, snapshot, queue, ctx.keepalive_seconds)
    return EventStreamResponse(stream, lambda: hub.unsubscribe(job_id, queue))
