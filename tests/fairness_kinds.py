"""Kinds with the limits of DESIGN §13, for the fairness tests (loaded with
EXPORTD_KINDS=tests.kinds_for_tests,tests.fairness_kinds)."""

from __future__ import annotations

import asyncio
import os

from daemon.kinds.context import ExportContext
from daemon.kinds.params import Param
from daemon.kinds.registry import Kind

# At most one runs at a time, across all workers.
single = Kind("single", params={"seconds": Param("float", default=0.5)}, max_running=1)


@single.step("Alone")
async def alone(ctx: ExportContext) -> None:
    await asyncio.sleep(ctx.params["seconds"])
    ctx.file("alone.txt").write_text("done\n")


# Its package (incompressible bytes) is larger than it may be.
too_big = Kind("too-big", params={"size": Param("int", default=200_000)}, max_package_bytes=50_000)


@too_big.step("Random bytes")
async def random_bytes(ctx: ExportContext) -> None:
    ctx.file("blob.bin").write_bytes(os.urandom(ctx.params["size"]))


# Sleeps past its deadline unless told otherwise.
late = Kind("late", params={"seconds": Param("float", default=10.0)}, timeout=1.0)


@late.step("Sleeping")
async def sleeping(ctx: ExportContext) -> None:
    await asyncio.sleep(ctx.params["seconds"])
    ctx.file("late.txt").write_text("done\n")
