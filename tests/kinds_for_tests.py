"""Kinds used by the tests (loaded with EXPORTD_KINDS=tests.kinds_for_tests).

Each one is small and deterministic: failures depend on the attempt number,
durations on a parameter, so no test needs shared state across processes.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os

from daemon.kinds.context import ExportContext
from daemon.kinds.params import Param
from daemon.kinds.registry import Kind

noop = Kind("noop", title="Does nothing (benchmarks)")


@noop.step("Nothing")
async def nothing(ctx: ExportContext) -> None:
    return None


three_steps = Kind("three-steps", params={"pause": Param("float", default=0.0)})


async def _write(ctx: ExportContext, name: str) -> None:
    await asyncio.sleep(ctx.params["pause"])
    ctx.file(f"{name}.txt").write_text(f"{name} of {ctx.job.owner_id}\n")


@three_steps.step("First")
async def first(ctx: ExportContext) -> None:
    await _write(ctx, "first")


@three_steps.step("Second")
async def second(ctx: ExportContext) -> None:
    await _write(ctx, "second")


@three_steps.step("Third")
async def third(ctx: ExportContext) -> None:
    await _write(ctx, "third")


blob = Kind("blob", params={"size": Param("int", default=300_000)})


@blob.step("Random bytes")
async def random_bytes(ctx: ExportContext) -> None:
    """Incompressible data, so the package is about `size` bytes (downloads)."""
    with ctx.file("blob.bin").open("wb") as out:
        left = ctx.params["size"]
        while left > 0:
            chunk = os.urandom(min(left, 1 << 20))
            out.write(chunk)
            left -= len(chunk)


typed = Kind(
    "typed",
    title="Every param type (input validation tests)",
    params={
        "text": Param("text", required=True),
        "int": Param("int"),
        "float": Param("float"),
        "bool": Param("bool"),
        "date": Param("date"),
        "timestamp": Param("timestamp"),
        "uuid": Param("uuid"),
    },
)


@typed.step("Nothing")
async def typed_nothing(ctx: ExportContext) -> None:
    return None


flaky = Kind("flaky", params={"fail_times": Param("int", default=0)})


@flaky.step("Maybe fail")
async def maybe_fail(ctx: ExportContext) -> None:
    if ctx.job.attempt <= ctx.params["fail_times"]:
        raise RuntimeError(f"planned failure {ctx.job.attempt}")
    path = ctx.file("attempt.json")
    path.write_text(json.dumps({"attempt": ctx.job.attempt}))
    ctx.result["attempt"] = ctx.job.attempt


rollback_fails = Kind("rollback-fails")


@rollback_fails.step("Works")
async def works(ctx: ExportContext) -> None:
    ctx.state["worked"] = True


@works.rollback
async def works_undo(ctx: ExportContext) -> None:
    raise OSError("cannot undo")


@rollback_fails.step("Breaks")
async def breaks(ctx: ExportContext) -> None:
    raise ValueError("step two broke")


slow = Kind("slow", params={"seconds": Param("float", default=5.0)})


@slow.step("Working slowly")
async def work_slowly(ctx: ExportContext) -> None:
    """Checks for cancellation ten times a second, reports progress."""
    total = max(1, int(ctx.params["seconds"] * 10))
    for tick in range(total):
        await ctx.check_cancelled()
        await ctx.progress(tick, total, f"tick {tick}")
        await asyncio.sleep(0.1)
    ctx.file("slow.txt").write_text("done\n")


busy = Kind("busy", params={"seconds": Param("float", default=5.0)})


@busy.step("Busy, not checking")
async def busy_work(ctx: ExportContext) -> None:
    """One long await without cancellation checks (like a long computation)."""
    await asyncio.sleep(ctx.params["seconds"])
    ctx.file("busy.txt").write_text("done\n")


disk_full = Kind("disk-full", params={"errno": Param("int", default=errno.ENOSPC)})


@disk_full.step("Write to a full disk")
async def write_to_full_disk(ctx: ExportContext) -> None:
    """Fails like a write on an exhausted volume: the OS error names a server path."""
    code = ctx.params["errno"]
    raise OSError(code, os.strerror(code), "/srv/exportd/packages/5e/5e7a0c1d/r1-a1.tar.gz")
