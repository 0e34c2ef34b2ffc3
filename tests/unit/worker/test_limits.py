"""daemon.worker.limits: an attempt's deadline, and its package's size cap."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from daemon.errors import DeadlineExceeded, PackageTooLarge, is_permanent
from daemon.worker.limits import SizeCappedWriter, attempt_deadline, duration

pytestmark = pytest.mark.anyio


async def test_the_deadline_cancels_the_body_and_says_so() -> None:
    cancelled = asyncio.Event()

    async def body() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()  # a step sees a cancellation, as with a user's cancel
            raise

    expected = r"^deadline exceeded: the attempt ran longer than its kind's timeout \(0\.05s\)$"
    with pytest.raises(DeadlineExceeded, match=expected):
        async with attempt_deadline(0.05):
            await body()
    assert cancelled.is_set()
    assert not is_permanent(DeadlineExceeded("x"))  # retried while attempts remain


async def test_a_timeout_of_the_body_itself_is_not_the_deadline() -> None:
    with pytest.raises(TimeoutError):
        async with attempt_deadline(10):
            raise TimeoutError("the step's own network timeout")


async def test_no_deadline_and_a_deadline_not_reached() -> None:
    async with attempt_deadline(None):
        await asyncio.sleep(0)
    async with attempt_deadline(10):
        await asyncio.sleep(0)


def test_durations_read_like_the_exports_file() -> None:
    assert [duration(s) for s in (2, 1.5, 60, 600, 7200, 90)] == [
        "2s",
        "1.5s",
        "1min",
        "10min",
        "2h",
        "90s",
    ]


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.published = self.discarded = False

    @property
    def relative(self) -> str:
        return "ab/some/r1-a1.tar.gz"

    def write(self, data: Any, /) -> int:
        self.data += data
        return len(data)

    def publish(self) -> None:
        self.published = True

    def discard(self) -> None:
        self.discarded = True


def test_the_writer_refuses_the_byte_past_the_cap() -> None:
    sink = Sink()
    writer = SizeCappedWriter(sink, 10)
    assert writer.relative == sink.relative
    assert writer.write(b"12345") == 5
    assert writer.write(memoryview(b"67890")) == 5  # exactly the cap
    with pytest.raises(PackageTooLarge, match=r"max_package_bytes \(10 bytes\)") as info:
        writer.write(b"x")
    assert is_permanent(info.value)
    assert bytes(sink.data) == b"1234567890"
    writer.discard()
    assert sink.discarded and not sink.published
