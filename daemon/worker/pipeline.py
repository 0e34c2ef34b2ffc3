"""Running one attempt of an export: steps, progress, cancellation, rollback, package.

The pipeline knows nothing about HTTP or about procrastinate. It receives a
kind, a context and a `complete` callback (which commits the job as
completed), and guarantees:

- steps run in order; a step that raises, or a cancellation, rolls back the
  steps that finished, in reverse, then re-raises;
- the package is streamed into storage's writer (a temp file, or a
  multipart upload), published under a name unique to the attempt, and
  deleted again whenever the completion is known not to have committed:
  refused (the job was cancelled or taken over meanwhile), or never
  attempted (a cancellation arrived while publishing). A cancellation
  that arrives while the completion runs waits for its outcome first (one
  short statement), so that outcome is known too. Only when the completion
  itself failed with an unknown outcome is the file left to the orphan sweep
  — a committed row may point to it. Storage thus only holds packages that
  a committed row points to, or that the sweep will remove;
- the work directory is removed whatever happens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from daemon.kinds.context import ExportContext, JobCancelled, safe_error
from daemon.kinds.registry import Kind, Step
from daemon.models import package_name
from daemon.storage.backend import Attempt, PackageWriter, Storage
from daemon.worker.packaging import BuiltPackage, build_package

PACKAGING_TITLE = "Packaging"

T = TypeVar("T")


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
    storage: Storage,
    complete: Callable[[Published], Awaitable[bool]],
) -> Published:
    """One attempt from first step to committed completion.

    `complete` commits the job as completed and returns False when the row
    refused (cancelled or no longer this attempt's): the package is then
    deleted, the steps rolled back, and JobCancelled raised. If `complete`
    raises, whether the row committed is unknown: nothing is deleted or
    rolled back. A cancellation of this task (procrastinate's abort) while
    publishing or completing is held until that operation ended, then
    re-raised — after deleting the package unless the row committed.
    """
    attempt = Attempt(ctx.job.job_id, ctx.job.run, ctx.job.attempt)
    finished_all = False
    try:
        await run_steps(kind, ctx)
        finished_all = True
        await ctx.reporter.enter_step(len(kind.steps), PACKAGING_TITLE)
        ctx.reporter.stop()
        writer: PackageWriter = await asyncio.to_thread(storage.open_writer, attempt)
        relative = writer.relative
        try:
            built = await asyncio.to_thread(
                build_package,
                writer,
                ctx.files,
                top_dir=package_name(ctx.job.kind, ctx.job.created_at).removesuffix(".tar.gz"),
                manifest_header=_manifest_header(ctx),
            )
            await ctx.check_cancelled()
            try:
                # The thread publishes (renames the file, completes the
                # upload) whether or not this task is cancelled meanwhile:
                # wait for it, so the delete below cannot run before the
                # package appears.
                _, cancel = await _to_the_end(asyncio.to_thread(writer.publish))
            except BaseException:
                await _discard(storage, relative, ctx)
                raise
        finally:
            # A temp file or an unfinished upload; nothing after a publish.
            await asyncio.to_thread(writer.discard)
        if cancel is not None:
            await _discard(storage, relative, ctx)  # completion never attempted
            raise cancel
        published = Published(relative, built)
        try:
            committed, cancel = await _to_the_end(complete(published))
        except BaseException:
            # Unknown whether the row committed: neither roll back nor delete
            # what a committed row may point to (an uncommitted file is swept).
            finished_all = False
            raise
        if committed:
            if cancel is not None:
                finished_all = False  # completed: nothing to roll back
                raise cancel
            return published
        await _discard(storage, relative, ctx)
        if cancel is not None:
            raise cancel
        raise JobCancelled(f"job {ctx.job.job_id} was cancelled before it completed")
    except BaseException as exc:
        if finished_all:
            if ctx.before_rollback is not None:
                await ctx.before_rollback(exc)
            await rollback(list(kind.steps), ctx)
        raise
    finally:
        ctx.reporter.stop()
        await asyncio.to_thread(storage.remove_tree, ctx.work_dir)


async def _to_the_end(operation: Awaitable[T]) -> tuple[T, asyncio.CancelledError | None]:
    """Await `operation` to its end even if this task is cancelled meanwhile.

    Returns its result and the cancellation that arrived while waiting (for
    the caller to re-raise once it acted on the result). An exception of the
    operation itself, its own cancellation included, propagates.
    """
    future = asyncio.ensure_future(operation)
    cancel: asyncio.CancelledError | None = None
    while True:
        try:
            return await asyncio.shield(future), cancel
        except asyncio.CancelledError as exc:
            if not future.done():
                cancel = exc  # this task's cancellation: keep waiting
                continue
            if future.cancelled() or future.exception() is not None:
                raise  # the operation was cancelled or failed: its outcome is unknown
            return future.result(), exc  # it ended just as the cancellation came


async def _discard(storage: Storage, relative: str, ctx: ExportContext) -> None:
    """Delete a package no committed row points to. A failure is logged, not
    raised: the orphan sweep removes the file later."""
    try:
        # Cancelled meanwhile, the thread still deletes: no need to wait for it.
        await asyncio.to_thread(storage.delete, relative)
    except Exception as exc:
        ctx.log.warning(
            "could not delete an uncommitted package: %s",
            safe_error(exc),
            extra={"action": "discard"},
        )


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
