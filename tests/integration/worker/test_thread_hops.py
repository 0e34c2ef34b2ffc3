"""An export's blocking work is grouped into few thread hops.

Each `asyncio.to_thread` costs the worker's event loop a GIL handoff both
ways (the drain profile of bench.queue: a fifth of the worker's CPU per
no-op job). A no-op export makes three: the work directory made and the
run's checkpoint read (one), the writer opened, the package built and
published (one), and the checkpoint deleted with the work directory (one).

The count is taken on a real worker running a real export; the only thing
added is a counter in front of `to_thread` as the worker's modules see it.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from daemon.models import JobStatus
from daemon.worker import packaging, pipeline, runtime
from tests.helpers import create, fast_settings, running_worker, wait_for

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]
T = TypeVar("T")

NO_OP_EXPORT_HOPS = 3


class CountingAsyncio(types.SimpleNamespace):
    """`asyncio` as a module sees it, with each `to_thread` call's function noted."""

    def __init__(self) -> None:
        super().__init__()
        self.hops: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def to_thread(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        self.hops.append(getattr(fn, "__qualname__", repr(fn)))
        return await asyncio.to_thread(fn, *args, **kwargs)


async def test_a_no_op_export_makes_three_thread_hops(
    aconn: AConn, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = CountingAsyncio()
    for module in (runtime, pipeline, packaging):
        monkeypatch.setattr(module, "asyncio", counting)
    async with running_worker(fast_settings(tmp_path), db_url):
        job = await create(aconn, "noop")
        done = await wait_for(aconn, job.job_id)
    assert done.status is JobStatus.COMPLETED and done.package_path is not None
    assert len(counting.hops) == NO_OP_EXPORT_HOPS, counting.hops
