"""Rolling back the kept steps of a run that ended without a worker.

A cancel while the job waited for its retry, or the rescue's final failure
of a lost attempt, ends a run whose finished resumable steps were kept
(DESIGN §14) and never rolled back. The checkpoint sweep
(`daemon.maintenance.checkpoints`), run by a worker, claims such a run and
calls `rollback_kept_steps`: a context like the attempt's (the job, a fresh
work directory, the kept files, `ctx.result` and `ctx.state` put back), then
each kept step's rollback, in reverse.
"""

from __future__ import annotations

import asyncio
from uuid import UUID

from daemon.db.attempts import RunState
from daemon.errors import UnknownKind
from daemon.kinds.context import ExportContext, JobInfo
from daemon.kinds.registry import KindRegistry
from daemon.models import JobStatus
from daemon.storage.backend import Attempt, RunId, Storage
from daemon.worker.checkpoints import RunCheckpoint
from daemon.worker.pipeline import rollback


async def _no_progress(
    job_id: UUID, done: int, total: int, current_step: str | None, percentage: int
) -> JobStatus | None:
    """The job has ended: a rollback's progress is written nowhere."""
    return None


async def rollback_kept_steps(registry: KindRegistry, storage: Storage, state: RunState) -> None:
    """Roll back the kept steps of the run `state` names (claimed by the caller)."""
    if state.kind is None or state.created_at is None:
        return  # the job is gone: nothing to run a rollback for
    try:
        kind = registry.get(state.kind)
    except UnknownKind:
        return  # a kind this worker does not know: nothing it could roll back
    attempt = max(1, state.attempts or 1)
    info = JobInfo(
        job_id=state.job_id,
        kind=state.kind,
        owner_id=state.owner_id,
        params=dict(state.params or {}),
        run=state.run,
        attempt=attempt,
        created_at=state.created_at,
    )
    work_dir = await asyncio.to_thread(
        storage.make_work_dir, Attempt(state.job_id, state.run, attempt)
    )
    try:
        ctx = ExportContext(info, kind, work_dir, _no_progress)
        checkpoint = RunCheckpoint(storage.checkpoints, RunId(state.job_id, state.run), work_dir)
        kept = await asyncio.to_thread(checkpoint.restore, ctx, kind.steps)
        ctx.log.info("rolling back the %d kept steps of run %d", kept, state.run)
        await rollback(kind.steps[:kept], ctx)
    finally:
        await asyncio.to_thread(storage.remove_tree, work_dir)
