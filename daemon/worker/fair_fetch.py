"""The worker's JobManager: exportd's settling, and exportd's fair fetch.

procrastinate's worker asks `job_manager.fetch_job` for its next job; this
override runs `exportd.fetch_job` (daemon/db/fetch.py, migration 0009)
instead of procrastinate's function: one statement, like the original, that
also passes over the jobs of an owner at `EXPORTD_OWNER_MAX_RUNNING`, of a
kind at its `max_running`, and of a paused kind (DESIGN §13), and — while
this worker's disk is below its free-space floor (`daemon.worker.free_space`,
DESIGN §14) — every export. Those jobs stay pending and never hold up the
jobs behind them. The signature is
procrastinate's (checked by tests/unit/worker/test_procrastinate_contract.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from procrastinate import PsycopgConnector
from procrastinate import jobs as pjobs

from daemon.db import fetch
from daemon.worker.free_space import FreeSpaceFloor
from daemon.worker.settle import SettlingJobManager

if TYPE_CHECKING:
    from daemon.worker.runtime import ExportRuntime


class FairJobManager(SettlingJobManager):
    """SettlingJobManager whose fetch applies exportd's caps and pauses."""

    def __init__(self, connector: PsycopgConnector, runtime: ExportRuntime) -> None:
        super().__init__(connector, runtime)
        # Fixed for the life of the process, like the kinds themselves.
        self.owner_max_running = runtime.settings.owner_max_running or None
        self.kind_limits = runtime.registry.running_limits()
        # Below the free-space floor every kind is capped at 0 running
        # exports: none starts here, the maintenance tasks (no kind) still do.
        self.free_space = FreeSpaceFloor.for_settings(runtime.settings)
        self.no_exports = dict.fromkeys(runtime.registry.names(), 0)

    async def fetch_job(self, queues: Iterable[str] | None, worker_id: int) -> pjobs.Job | None:
        allowed = await self.free_space.allows_start()
        row = await fetch.fetch_job(
            self.runtime.pool,
            queues=queues,
            worker_id=worker_id,
            owner_max_running=self.owner_max_running,
            kind_limits=self.kind_limits if allowed else self.no_exports,
        )
        return None if row is None else pjobs.Job.from_row(row)
