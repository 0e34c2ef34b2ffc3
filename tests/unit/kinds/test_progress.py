"""Progress throttling: at most one write per interval, the latest value wins,
and a suppressed value is still written once the interval has passed."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.kinds.context import ExportContext, JobInfo
from daemon.kinds.registry import Kind
from daemon.models import JobStatus

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def context(
    tmp_path: Path,
    clock: Clock,
    writes: list[tuple[int, int, str | None, int]],
    status: JobStatus = JobStatus.IN_PROGRESS,
) -> ExportContext:
    kind = Kind("k")

    @kind.step("Only step")
    async def step(ctx: ExportContext) -> None:
        return None

    async def sink(
        job_id: uuid.UUID, done: int, total: int, current_step: str | None, percentage: int
    ) -> JobStatus:
        writes.append((done, total, current_step, percentage))
        return status

    info = JobInfo(uuid.uuid4(), "k", "alice", {}, 1, 1, datetime.now(UTC))
    return ExportContext(info, kind, tmp_path, sink, clock=clock, progress_interval=0.25)


async def test_bursts_are_throttled_and_the_latest_value_is_flushed(tmp_path: Path) -> None:
    clock = Clock()
    writes: list[tuple[int, int, str | None, int]] = []
    ctx = context(tmp_path, clock, writes)
    for done in range(100):  # within the first interval: nothing written yet
        await ctx.progress(done, 100, f"row {done}")
    assert writes == []
    clock.now = 0.3
    await ctx.progress(100, 100, "row 100")
    assert len(writes) == 1
    assert writes[0][3] == 50  # the step done of 1 step + packaging; 100 only when completed
    for done in range(10):
        await ctx.progress(done, 10, "again")
    assert len(writes) == 1  # throttled
    await asyncio.sleep(0.35)  # the delayed flush writes the latest value
    assert len(writes) == 2
    assert writes[-1][2] == "again"


async def test_a_cancelling_status_marks_the_context(tmp_path: Path) -> None:
    clock = Clock()
    writes: list[tuple[int, int, str | None, int]] = []
    ctx = context(tmp_path, clock, writes, JobStatus.CANCELLING)
    clock.now = 1.0
    await ctx.progress(1, 2)
    assert ctx.cancelled
