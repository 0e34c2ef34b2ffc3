"""Per-kind limits in the worker of this process (DESIGN §13): the deadline of
an attempt (cancelled, rolled back, retried, then rolled_back), a deadline
not reached, and a package over its size cap (one attempt, nothing kept)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from daemon.kinds.context import ExportContext
from daemon.kinds.params import Param
from daemon.kinds.registry import Kind, KindRegistry
from daemon.models import JobStatus
from tests import fairness_kinds
from tests.helpers import (
    attempt_rows,
    create,
    fast_settings,
    kinds_registry,
    running_worker,
    wait_for,
)

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]


def with_rollback(undone: list[int]) -> KindRegistry:
    """`late` with a finished first step whose rollback is recorded."""
    kind = Kind("late-rollback", params={"seconds": Param("float", default=10.0)}, timeout=0.5)

    @kind.step("Quick")
    async def quick(ctx: ExportContext) -> None:
        ctx.file("quick.txt").write_text("quick\n")

    @quick.rollback
    async def undo(ctx: ExportContext) -> None:
        undone.append(ctx.job.attempt)

    kind.add_step("Slow", fairness_kinds.sleeping.run)
    registry = kinds_registry()
    registry.load_module(fairness_kinds.__name__)
    registry.register(kind)
    return registry


async def test_an_attempt_past_its_deadline_is_failed_rolled_back_and_retried(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    undone: list[int] = []
    registry = with_rollback(undone)
    async with running_worker(fast_settings(tmp_path), db_url, registry):
        job = await create(aconn, "late-rollback", registry=registry, max_attempts=3)
        done = await wait_for(aconn, job.job_id, timeout=30)
    assert done.status is JobStatus.ROLLED_BACK
    assert done.attempts == 3
    assert done.error_message is not None and "deadline exceeded" in done.error_message
    rows = await attempt_rows(aconn, job.job_id)
    assert [(r[1], r[2]) for r in rows] == [(1, "failed"), (2, "failed"), (3, "failed")]
    for row in rows:
        assert row[3] == (
            "DeadlineExceeded: deadline exceeded: the attempt ran longer than its kind's"
            " timeout (0.5s)"
        )
    assert undone == [1, 2, 3]  # every attempt's finished step was rolled back


async def test_within_the_deadline_nothing_changes(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    registry = kinds_registry()
    registry.load_module(fairness_kinds.__name__)
    async with running_worker(fast_settings(tmp_path), db_url, registry):
        job = await create(aconn, "late", {"seconds": 0.1}, registry=registry)
        done = await wait_for(aconn, job.job_id)
    assert done.status is JobStatus.COMPLETED and done.attempts == 1


async def test_a_package_over_its_cap_fails_at_once(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    registry = kinds_registry()
    registry.load_module(fairness_kinds.__name__)
    settings = fast_settings(tmp_path)
    async with running_worker(settings, db_url, registry):
        small = await create(aconn, "too-big", {"size": 1000}, registry=registry)
        big = await create(aconn, "too-big", registry=registry, max_attempts=3)
        fits = await wait_for(aconn, small.job_id)
        refused = await wait_for(aconn, big.job_id)
    assert fits.status is JobStatus.COMPLETED
    assert refused.status is JobStatus.ROLLED_BACK and refused.attempts == 1
    assert refused.error_message == (
        "PackageTooLarge: the package is larger than its kind's max_package_bytes"
        " (50000 bytes); nothing was kept"
    )
    stored = [p for p in settings.storage_dir.rglob("*") if p.is_file()]
    assert [p.name for p in stored] == [Path(str(fits.package_path)).name]
