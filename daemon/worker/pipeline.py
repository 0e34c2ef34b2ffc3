"""Running one attempt of an export: steps, progress, cancellation, rollback, package.

The pipeline knows nothing about HTTP or about procrastinate. It receives a
kind, a context and a `complete` callback (which commits the job as
completed), and guarantees:

- steps run in order; a step that raises, or a cancellation, rolls back the
  steps that finished, in reverse, then re-raises;
- the package is built in a temp file, published under a name unique to the
  attempt, and deleted again if the completion is refused (the job was
  cancelled or taken over meanwhile), so storage only ever holds packages
  that a committed row points to (or that the orphan sweep will remove);
- the work directory is removed whatever happens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from daemon.kinds.context import ExportContext, JobCancelled, safe_error
from daemon.kinds.registry import Kind, Step
from daemon.models import package_name
from daemon.storage.local import Attempt, PackageStorage
from daemon.worker.packaging import BuiltPackage, build_package

PACKAGING_TITLE = "Packaging"


@dataclass(frozen=True)
class Published:
    """A package moved into storage, waiting for its row to commit."""

    relative_path: str
    built: BuiltPackage


async def run_steps(kind: Kind, ctx: ExportContext) -> None:
    """Run every step; on any exception (or cancellation) roll back and re-raise."""
    finished: list[Step] = []
    try:
        for index, step in enumerate(kind.steps):
            await ctx.check_cancelled()
            await ctx.reporter.enter_step(index, step.title)
            await step.run(ctx)
            finished.append(step)
        await ctx.check_cancelled()
    except BaseException as exc:
        ctx.reporter.stop()
        if ctx.before_rollback is not None:
            await ctx.before_rollback(exc)
        await rollback(finished, ctx)
        raise


async def rollback(finished: list[Step], ctx: ExportContext) -> None:
    """Undo finished steps in reverse. A failing rollback is recorded, not raised."""
    for step in reversed(finished):
        if step.undo is None:
            continue
        try:
            await step.undo(ctx)
        except Exception as exc:
            ctx.log.error(
                "rollback of %r failed: %s",
                step.title,
                safe_error(exc),
                extra={"action": "rollback"},
            )
            ctx.state.setdefault("_rollback_errors", []).append(f"{step.title}: {safe_error(exc)}")


def rollback_failed(ctx: ExportContext) -> bool:
    return bool(ctx.state.get("_rollback_errors"))


async def execute(
    kind: Kind,
    ctx: ExportContext,
    storage: PackageStorage,
    complete: Callable[[Published], Awaitable[bool]],
) -> Published:
    """One attempt from first step to committed completion.

    `complete` commits the job as completed and returns False when the row
    refused (cancelled or no longer this attempt's): the package is then
    deleted, the steps rolled back, and JobCancelled raised.
    """
    attempt = Attempt(ctx.job.job_id, ctx.job.run, ctx.job.attempt)
    finished_all = False
    try:
        await run_steps(kind, ctx)
        finished_all = True
        await ctx.reporter.enter_step(len(kind.steps), PACKAGING_TITLE)
        ctx.reporter.stop()
        temp = storage.temp_package_path(attempt)
        try:
            built = await asyncio.to_thread(
                build_package,
                temp,
                ctx.files,
                top_dir=package_name(ctx.job.kind, ctx.job.created_at).removesuffix(".tar.gz"),
                manifest_header=_manifest_header(ctx),
            )
            await ctx.check_cancelled()
            relative = storage.final_path(attempt)
            await asyncio.to_thread(storage.publish, temp, relative)
        finally:
            temp.unlink(missing_ok=True)
        published = Published(relative, built)
        try:
            committed = await complete(published)
        except BaseException:
            # Unknown whether the row committed: neither roll back nor delete
            # what a committed row may point to (an uncommitted file is swept).
            finished_all = False
            raise
        if not committed:
            await asyncio.to_thread(storage.delete, relative)
            raise JobCancelled(f"job {ctx.job.job_id} was cancelled before it completed")
        return published
    except BaseException as exc:
        if finished_all:
            if ctx.before_rollback is not None:
                await ctx.before_rollback(exc)
            await rollback(list(kind.steps), ctx)
        raise
    finally:
        ctx.reporter.stop()
        await asyncio.to_thread(storage.remove_tree, ctx.work_dir)


def _manifest_header(ctx: ExportContext) -> dict[str, Any]:
    return {
        "job_id": str(ctx.job.job_id),
        "kind": ctx.job.kind,
        "params": ctx.job.params,
        "owner_id": ctx.job.owner_id,
        "created_at": ctx.job.created_at.isoformat(),
        "run": ctx.job.run,
        "attempt": ctx.job.attempt,
    }
