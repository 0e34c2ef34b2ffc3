"""The event hub's shared reads and per-stream inboxes (web/events.py)."""

from __future__ import annotations

import asyncio
import json
from typing import cast
from uuid import uuid4

import pytest

from daemon.models import Job
from web.events import CLOSED, QUEUE_SIZE, RESYNC, EventHub, Inbox, Snapshot

pytestmark = pytest.mark.anyio


def snapshot(name: str) -> Snapshot:
    return Snapshot(cast(Job, name), ())


def label(read: Snapshot) -> object:
    return read.job


async def test_a_notification_detaches_the_read_in_flight() -> None:
    """A read that started before a change may have missed it: whoever asks
    after the change's notification gets a read of their own."""
    hub = EventHub("postgresql://unused")
    job_id = uuid4()
    release = asyncio.Event()

    async def before() -> Snapshot:
        await release.wait()
        return snapshot("before the change")

    async def after() -> Snapshot:
        return snapshot("after the change")

    first = asyncio.create_task(hub.read(job_id, before))
    joined = asyncio.create_task(hub.read(job_id, after))  # joins the read in flight
    await asyncio.sleep(0)
    hub._dispatch(json.dumps({"job_id": str(job_id), "status": "cancelled"}))
    fresh = await hub.read(job_id, after)
    release.set()
    assert label(fresh) == "after the change"
    assert label(await first) == label(await joined) == "before the change"
    assert hub.reads == 2


async def test_a_caller_going_away_does_not_cancel_the_shared_read() -> None:
    hub = EventHub("postgresql://unused")
    job_id = uuid4()
    release = asyncio.Event()

    async def load() -> Snapshot:
        await release.wait()
        return snapshot("read")

    leaving = asyncio.create_task(hub.read(job_id, load))
    staying = asyncio.create_task(hub.read(job_id, load))
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.sleep(0)
    release.set()
    assert label(await staying) == "read"
    assert leaving.cancelled()
    assert hub.reads == 1


async def test_an_inbox_that_falls_behind_keeps_one_resync() -> None:
    inbox = Inbox()
    for n in range(QUEUE_SIZE):
        inbox.offer({"n": n})
    assert await inbox.get() == {"n": 0}
    inbox.offer({"n": QUEUE_SIZE})
    inbox.offer({"n": QUEUE_SIZE + 1})  # one too many: the backlog goes
    assert inbox.events == [RESYNC]
    assert await inbox.get() is RESYNC


async def test_an_inbox_wakes_its_reader() -> None:
    inbox = Inbox()
    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not reader.done()
    inbox.offer({"status": "completed"})
    assert await asyncio.wait_for(reader, timeout=5) == {"status": "completed"}


async def test_a_closed_client_ends_even_a_stream_that_fell_behind() -> None:
    inbox = Inbox()
    for n in range(QUEUE_SIZE):
        inbox.offer({"n": n})
    inbox.offer(CLOSED)
    assert await inbox.get() is CLOSED
