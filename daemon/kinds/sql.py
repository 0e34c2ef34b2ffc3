"""SQL exports: one configured query streamed with `COPY … TO STDOUT` into a file.

Why it is built this way:

- The query text comes only from the exports file. Job params reach it as
  bound values (psycopg binds COPY params client-side, quoting each value as
  a literal), and `owner_id` is always the job's authenticated owner, added
  last so no param can replace it.
- The query runs in a read-only transaction with an optional statement
  timeout, on a connection of its own (`daemon.db.copy`): an export can
  neither change data nor hold the database for longer than the operator
  allowed.
- COPY streams the result row by row; it is written to the work directory in
  1 MiB blocks, so memory stays flat whatever the size of the export.
- Cancelling the job cancels the statement on the server: a side task polls
  `ctx.cancelled` and sends a cancel request, instead of waiting for a
  30-minute query to end on its own.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from daemon.db.copy import FORMATS, QueryCopy
from daemon.errors import DatabaseUnavailable, ExportdError, QueryFailed
from daemon.kinds.context import ExportContext, JobCancelled, safe_error

CANCEL_POLL_SECONDS = 0.2
# A cancel request sent just before a statement starts is lost; repeat it.
CANCEL_REPEAT_SECONDS = 1.0
CANCEL_TIMEOUT_SECONDS = 10.0
WRITE_BLOCK = 1024 * 1024
PROGRESS_EVERY_CHUNKS = 64


class SqlExportError(ExportdError):
    """A configured query failed: connection, SQL error, read-only violation, timeout.

    Permanent (the job fails at once, DESIGN §16) when the query's own error
    is: a syntax error, a missing table or column, a refused privilege, a
    value the server rejects. A lost connection or a timeout stays retryable.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        self.permanent = permanent
        super().__init__(message)


@dataclass(frozen=True)
class SqlQueryExport:
    """The step that runs one configured query into `<name>.<format>`.

    `database_url` is fixed when the exports file is loaded (the kind's own
    `database_url`, else exportd's database); it never appears in messages.
    """

    name: str
    sql: str
    database_url: str = field(repr=False)
    format: str = "csv"
    statement_timeout_ms: int | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}")

    @property
    def arcname(self) -> str:
        return f"{self.name}.{self.format}"

    def bound_params(self, ctx: ExportContext) -> dict[str, Any]:
        """Declared params as Python values, then `owner_id` from the job (always wins)."""
        return {**ctx.params, "owner_id": ctx.job.owner_id}

    async def __call__(self, ctx: ExportContext) -> int:
        """Run the query; return the number of rows exported."""
        await ctx.check_cancelled()
        path = ctx.file(self.arcname)
        copy = await self._connect(ctx)
        watch = _CancelWatch(copy, ctx)
        try:
            rows = await self._export(copy, ctx, path)
        except QueryFailed as exc:
            if watch.fired:
                raise JobCancelled(f"job {ctx.job.job_id} was cancelled") from None
            raise SqlExportError(
                f"query {self.name!r} failed: {exc}", permanent=exc.permanent
            ) from exc
        finally:
            await watch.stop()
            await copy.close()
        if watch.fired:
            raise JobCancelled(f"job {ctx.job.job_id} was cancelled")
        ctx.set_rows(self.arcname, rows)
        ctx.result.setdefault("rows", {})[self.name] = rows
        ctx.log.info("query %r exported %d rows", self.name, rows)
        return rows

    async def _connect(self, ctx: ExportContext) -> QueryCopy:
        try:
            return await QueryCopy.connect(
                self.database_url, application_name=f"exportd export {ctx.job.kind}"
            )
        except DatabaseUnavailable as exc:
            # The driver's message names host, port and user: fine for the
            # operator's log, not for the job's owner.
            ctx.log.error("cannot connect to the export database: %s", safe_error(exc))
            raise SqlExportError(
                f"query {self.name!r}: cannot connect to the export database"
            ) from None

    async def _export(self, copy: QueryCopy, ctx: ExportContext, path: Path) -> int:
        chunks = copy.stream(
            self.sql,
            self.bound_params(ctx),
            fmt=self.format,
            statement_timeout_ms=self.statement_timeout_ms,
        )
        with path.open("wb") as out:
            block = bytearray()
            written = count = 0
            async with aclosing(chunks):
                async for chunk in chunks:
                    block += chunk
                    count += 1
                    if len(block) >= WRITE_BLOCK:
                        written += await _write(out, block)
                    if count % PROGRESS_EVERY_CHUNKS == 0:
                        done = written + len(block)
                        await ctx.progress(done, 0, f"{_size(done)} written")
            await _write(out, block)
        return copy.rows


class _CancelWatch:
    """Sends a cancel request to the server while the job is marked cancelled."""

    def __init__(self, copy: QueryCopy, ctx: ExportContext) -> None:
        self.fired = False
        self._copy = copy
        self._ctx = ctx
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        # The context offers a flag, not an event (it is set by a progress
        # write seeing the job's new status), so it is polled.
        while not self._ctx.cancelled:  # noqa: ASYNC110
            await asyncio.sleep(CANCEL_POLL_SECONDS)
        self.fired = True
        while True:
            await self._copy.cancel(wait_seconds=CANCEL_TIMEOUT_SECONDS)
            await asyncio.sleep(CANCEL_REPEAT_SECONDS)

    async def stop(self) -> None:
        self._task.cancel()
        # asyncio.wait neither raises the task's error nor swallows a
        # cancellation of the caller.
        await asyncio.wait([self._task])
        error = None if self._task.cancelled() else self._task.exception()
        if error is not None:
            self._ctx.log.warning("could not cancel the export query: %s", safe_error(error))


async def _write(out: IO[bytes], block: bytearray) -> int:
    """Write and empty the block off the event loop (a slow disk must not stall it)."""
    size = len(block)
    if size:
        await asyncio.to_thread(out.write, block)
        block.clear()
    return size


def _size(count: int) -> str:
    if count < 1024 * 1024:
        return f"{count / 1024:.0f} KiB"
    return f"{count / (1024 * 1024):.1f} MiB"
