"""Throttled progress of one attempt: what `ctx.progress()` writes, and when.

At most one write per `interval` (4 per second by default) per job; the
latest value wins and is flushed by a delayed write, so a burst of calls
costs one statement and the last value is never lost. A job shorter than one
interval writes no progress at all. A write that finds the job no longer
`in_progress` (cancelling, rescued, finished elsewhere) marks it cancelled:
the next `check_cancelled()` stops the steps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol
from uuid import UUID

from daemon.models import JobStatus

PROGRESS_INTERVAL = 0.25  # seconds: at most 4 progress writes per second per job


class ProgressSink(Protocol):
    """Writes progress; returns the job's status (None: no longer running)."""

    async def __call__(
        self, job_id: UUID, done: int, total: int, current_step: str | None, percentage: int
    ) -> JobStatus | None: ...


class ProgressReporter:
    """Turns step positions into throttled writes to a `ProgressSink`."""

    def __init__(
        self,
        job_id: UUID,
        step_count: int,
        sink: ProgressSink,
        *,
        on_stopped: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        interval: float = PROGRESS_INTERVAL,
    ) -> None:
        self.job_id = job_id
        self.step_count = step_count
        self._sink = sink
        self._on_stopped = on_stopped
        self._clock = clock
        self._interval = interval
        self._last_write = clock()  # the first write waits one interval: short jobs write none
        self._pending: tuple[int, int, str | None, int] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self.step_index = 0
        self.step_title: str | None = None

    async def enter_step(self, index: int, title: str) -> None:
        """The pipeline starts step `index` (0-based; packaging is the last)."""
        self.step_index = index
        self.step_title = title
        await self.report(index, title, 0.0)

    async def report(self, index: int, title: str | None, fraction: float) -> None:
        percentage = min(99, int(100 * (index + fraction) / self.step_count))
        self._pending = (index, self.step_count, title, percentage)
        now = self._clock()
        if now - self._last_write >= self._interval:
            await self._flush()
        elif self._flusher is None:
            delay = self._interval - (now - self._last_write)
            self._flusher = asyncio.create_task(self._flush_later(delay))

    async def write_now(self) -> None:
        """Write the latest value at once, throttle or not: a resumed
        attempt shows its kept steps done from its start (DESIGN §14)."""
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        await self._flush()

    def stop(self) -> None:
        """Drop what is not written yet; no write happens after this."""
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        self._pending = None

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._flusher = None
        await self._flush()

    async def _flush(self) -> None:
        if self._pending is None:
            return
        done, total, title, percentage = self._pending
        self._pending = None
        self._last_write = self._clock()
        status = await self._sink(self.job_id, done, total, title, percentage)
        if status is not JobStatus.IN_PROGRESS:
            self._on_stopped()
