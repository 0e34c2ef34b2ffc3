"""The checkpoint sweep: end the checkpoints of runs that ended.

A run's checkpoint (`Storage.checkpoints`, DESIGN §14) lives while the run
may continue: queued, running, waiting for its retry. The worker whose
attempt ends the run deletes it; what is left here is a checkpoint whose run
ended without a worker — cancelled while it waited for its retry, failed by
the rescue of a lost last attempt — or one a crash or an outage kept from
being deleted. For each, the database says (`run_states`):

- live: keep it;
- open: its kept steps were never rolled back. With `end_run` (the worker
  gives it: it knows the kinds) the end is claimed in the database, the
  kept steps are rolled back by the claimer only, and the checkpoint goes;
  without it (`exportd cleanup`), it is left for a worker's sweep;
- completed, ended (claimed over `ROLLBACK_GRACE_SECONDS` ago), gone (the
  job deleted or pruned): delete it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from daemon.db import attempts
from daemon.db.attempts import RunState
from daemon.db.connect import Connection
from daemon.storage.backend import RunId, Storage

log = logging.getLogger("daemon.maintenance.cleanup")

EndRun = Callable[[RunState], Awaitable[None]]

# How long after a run's end was claimed its checkpoint stays: the claimer (a
# worker ending the run, or another sweep) rolls the kept steps back from the
# checkpoint's files and deletes it itself. Every worker sweeps at each
# rescue tick; without this, one sweep would delete the files under another's
# rollback. A claimer that died leaves it to be removed after the grace.
ROLLBACK_GRACE_SECONDS = 3600.0


async def sweep_checkpoints(
    conn: Connection, storage: Storage, *, end_run: EndRun | None = None
) -> int:
    """End the checkpoints of ended runs; returns how many were removed."""
    runs = await asyncio.to_thread(lambda: storage.checkpoints.runs())
    if not runs:
        return 0
    removed = 0
    listed = [(r.job_id, r.run) for r in runs]
    for state in await attempts.run_states(conn, listed, rollback_grace=ROLLBACK_GRACE_SECONDS):
        if state.state == "live":
            continue
        extra = {"job_id": str(state.job_id), "action": "cleanup.checkpoint"}
        if state.state == "open":
            if end_run is None:
                continue  # a worker's sweep rolls the kept steps back first
            if await attempts.end_run(conn, state.job_id, state.run):
                try:
                    await end_run(state)
                except Exception as exc:
                    log.error("rollback of a run's kept steps failed: %s", exc, extra=extra)
        try:
            await asyncio.to_thread(storage.checkpoints.delete, RunId(state.job_id, state.run))
        except Exception as exc:
            log.warning("cannot remove a checkpoint: %s", exc, extra=extra)
            continue
        removed += 1
        log.info("removed the checkpoint of run %d (%s)", state.run, state.state, extra=extra)
    return removed
