"""Running one attempt of an export: steps, progress, cancellation, rollback, package.

The pipeline knows nothing about HTTP or about procrastinate. It receives a
kind, a context and a `complete` callback (which commits the job as
completed), and guarantees:

- steps run in order; a step that raises, or a cancellation, rolls back the
  steps that finished, in reverse, then re-raises;
- with a `Resume` (the worker always gives one), the outputs of finished
  resumable steps are kept in the run's checkpoint (`daemon.worker.
  checkpoints`) and an attempt starts at the first step its run had not
  finished. A failure that the run will retry rolls back only the steps that
  will run again; the kept ones are rolled back when the run ends (its final
  failure, its cancellation) — once: the end is claimed in the database
  first, so the checkpoint sweep, which ends the runs no worker ended (a
  cancel while the job waited for its retry, a lost last attempt), never
  rolls them back a second time. The checkpoint is deleted when the run
  ends, completed or not;
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
from dataclasses import dataclass, field
from typing import Any, TypeVar

from daemon.kinds.context import ExportContext, JobCancelled, safe_error
from daemon.kinds.registry import Kind, Step
from daemon.models import package_name
from daemon.storage.backend import Attempt, Storage
from daemon.worker.checkpoints import RunCheckpoint
from daemon.worker.packaging import BuiltPackage, PackagingRun, package_with_progress

PACKAGING_TITLE = "Packaging"

T = TypeVar("T")


@dataclass(frozen=True)
class Published:
    """A package moved into storage, waiting for its row to commit."""

    relative_path: str
    built: BuiltPackage


@dataclass
class Resume:
    """What the pipeline needs to keep and resume a run's steps: its
    checkpoint, and the worker's answers (whether a failure ends the run;
    the claim of a run's end; recording where an attempt resumed)."""

    checkpoint: RunCheckpoint
    ends_run: Callable[[BaseException], bool]
    claim_end: Callable[[], Awaitable[bool]]
    record_resume: Callable[[int], Awaitable[None]]


@dataclass
class _Done:
    """The steps finished in this run so far, and how many of the first are kept."""

    finished: list[Step] = field(default_factory=list)
    kept: int = 0


async def run_steps(kind: Kind, ctx: ExportContext, resume: Resume | None = None) -> None:
    """Run every step; on any exception (or cancellation) roll back and re-raise."""
    await _run_steps(kind, ctx, resume, _Done())


async def _run_steps(kind: Kind, ctx: ExportContext, resume: Resume | None, done: _Done) -> None:
    try:
        first = await _restore(kind, ctx, resume, done)
        for index in range(first, len(kind.steps)):
            step = kind.steps[index]
            await ctx.check_cancelled()
            await ctx.reporter.enter_step(index, step.title)
            await step.run(ctx)
            done.finished.append(step)
            if resume is not None and step.resumable and done.kept == index:
                await _keep(resume, ctx, index, step, done)
        await ctx.check_cancelled()
    except BaseException as exc:
        ctx.reporter.stop()
        if ctx.before_rollback is not None:
            await ctx.before_rollback(exc)
        await _end_attempt(ctx, resume, done, exc)
        raise


async def _restore(kind: Kind, ctx: ExportContext, resume: Resume | None, done: _Done) -> int:
    """Put the kept steps of the run back; the index of the first step to run."""
    if resume is None:
        return 0
    if resume.checkpoint.prefetched:
        # Read in the hop that made the work directory: only decoded here.
        first = resume.checkpoint.restore(ctx, kind.steps)
    else:
        first = await asyncio.to_thread(resume.checkpoint.restore, ctx, kind.steps)
    if first:
        done.finished.extend(kind.steps[:first])
        done.kept = first
        ctx.log.info(
            "resuming at step %d of %d (%s): the steps before it were kept",
            first + 1,
            len(kind.steps),
            kind.steps[first].title if first < len(kind.steps) else PACKAGING_TITLE,
            extra={"action": "resume"},
        )
        await resume.record_resume(first + 1)
        title = kind.steps[first].title if first < len(kind.steps) else PACKAGING_TITLE
        await ctx.reporter.enter_step(first, title)
        await ctx.reporter.write_now()
    return first


async def _keep(resume: Resume, ctx: ExportContext, index: int, step: Step, done: _Done) -> None:
    """Save a finished step's outputs; a failure to save only costs a resume."""
    try:
        await asyncio.to_thread(resume.checkpoint.save, ctx, index, step)
    except Exception as exc:
        ctx.log.warning(
            "the outputs of %r were not kept (a retry runs it again): %s",
            step.title,
            safe_error(exc),
            extra={"action": "checkpoint"},
        )
        return
    done.kept = index + 1


async def _end_attempt(
    ctx: ExportContext, resume: Resume | None, done: _Done, exc: BaseException
) -> None:
    """Roll back after a failure: everything when the run ends with it, only
    the steps that will run again when it is retried."""
    if resume is None:
        await rollback(done.finished, ctx)
        return
    if not resume.ends_run(exc):
        await rollback(done.finished[done.kept :], ctx)
        return
    try:
        claimed = await resume.claim_end() if done.kept else True
    except Exception as claim_error:
        # Unknown whether anyone else ends it: the kept steps and their
        # checkpoint are left to the checkpoint sweep, which claims first.
        ctx.log.warning(
            "the end of the run was not recorded; its kept steps are left to the sweep: %s",
            safe_error(claim_error),
            extra={"action": "rollback"},
        )
        await rollback(done.finished[done.kept :], ctx)
        return
    await rollback(done.finished if claimed else done.finished[done.kept :], ctx)
    await _delete_checkpoint(resume, ctx)


async def _delete_checkpoint(resume: Resume, ctx: ExportContext) -> None:
    try:
        await asyncio.to_thread(resume.checkpoint.delete)
    except Exception as exc:
        ctx.log.warning(
            "the run's checkpoint was not deleted (the sweep removes it): %s",
            safe_error(exc),
            extra={"action": "checkpoint"},
        )


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
    resume: Resume | None = None,
) -> Published:
    """One attempt from first step to committed completion.

    `complete` commits the job as completed and returns False when the row
    refused (cancelled or no longer this attempt's): the package is then
    deleted, the steps rolled back, and JobCancelled raised. If `complete`
    raises, whether the row committed is unknown: nothing is deleted or
    rolled back. A cancellation of this task (procrastinate's abort) while
    packaging stops the packaging thread before it publishes (it discards
    the writer), or, once the publish began, is held like one while
    completing: until that operation ended, then re-raised — after deleting
    the package unless the row committed.
    """
    attempt = Attempt(ctx.job.job_id, ctx.job.run, ctx.job.attempt)
    finished_all = False
    done = _Done()
    completed_run: Resume | None = None  # its checkpoint goes with the work directory
    try:
        await _run_steps(kind, ctx, resume, done)
        finished_all = True
        await ctx.reporter.enter_step(len(kind.steps), PACKAGING_TITLE)
        run = PackagingRun()
        try:
            # One thread opens the writer, builds the package and publishes
            # it; a cancellation meanwhile stops it before the publish (the
            # thread discards the writer) or waits for the publish to end.
            relative, built, cancel = await package_with_progress(
                ctx,
                lambda: storage.open_writer(attempt),
                run,
                top_dir=package_name(ctx.job.kind, ctx.job.created_at).removesuffix(".tar.gz"),
                manifest_header=_manifest_header(ctx),
            )
        except BaseException:
            if run.publishing and run.relative is not None:
                # The publish failed or its outcome is unknown: nothing
                # committed points to the name.
                await _discard(storage, run.relative, ctx)
            raise
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
            finished_all = False  # completed: nothing to roll back
            completed_run = resume
            if cancel is not None:
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
            await _end_attempt(ctx, resume, done, exc)
        raise
    finally:
        ctx.reporter.stop()
        await _clear(storage, ctx, completed_run)


async def _clear(storage: Storage, ctx: ExportContext, completed_run: Resume | None) -> None:
    """Remove the work directory, and first the checkpoint of a run that
    completed: one thread hop for both (each hop costs the event loop a GIL
    handoff). A checkpoint that stays is logged, not raised: the sweep
    removes it."""

    def clear() -> Exception | None:
        error: Exception | None = None
        if completed_run is not None:
            try:
                completed_run.checkpoint.delete()
            except Exception as exc:
                error = exc
        storage.remove_tree(ctx.work_dir)
        return error

    error = await asyncio.to_thread(clear)
    if error is not None:
        ctx.log.warning(
            "the run's checkpoint was not deleted (the sweep removes it): %s",
            safe_error(error),
            extra={"action": "checkpoint"},
        )


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
