"""SQL exports: one configured query streamed with `COPY … TO STDOUT`, compressed as it comes.

Why it is built this way:

- The query text comes only from the exports file. Job params reach it as
  bound values (quoted client-side as literals, as COPY takes no server
  parameters), and `owner_id` is always the job's authenticated owner, added
  last so no param can replace it.
- The query runs in a read-only transaction with an optional statement
  timeout, on a connection of its own (`daemon.db.copy`): an export can
  neither change data nor hold the database for longer than the operator
  allowed. The connection stays open for the next export to the same
  database when this one committed and was never cancelled: opening one is
  most of the time a short export takes.
- The export runs at the speed of the server. The COPY is read in a worker
  thread (never on the event loop) in blocks of about 1 MiB of whole rows;
  each block goes as it is, never split into rows, into a gzip member in
  the work directory (`daemon.compression.GzipMemberWriter`: ISA-L deflate
  and sha256 of the content on a second thread, while the next block
  arrives). Packaging copies that member into the `.tar.gz` verbatim, so the
  rows are compressed once, while the server still produces them, and
  memory stays flat whatever the size of the export.
- Progress inside the step: rows and bytes so far, counted as newlines of
  one block in eight and inferred for the others from their bytes (counting
  each cost the COPY thread ~7 %), and a percentage when the query has
  an estimate (`count_sql`, or `estimate = "planner"`: the planner's row
  estimate from EXPLAIN), held below 100 % until the COPY ends. A JSONL row
  never holds a raw newline; a CSV field with a line break in it makes the
  running count run ahead (only the progress: the row count of the result
  and the manifest comes from the server's `COPY n`).
- Cancelling the job cancels the statement on the server: a side task polls
  `ctx.cancelled` (and a cancelled task does the same) and sends a cancel
  request, instead of waiting for a 30-minute query to end on its own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.compression import GzipMemberWriter
from daemon.db.copy import FORMATS, QueryCopy
from daemon.errors import DatabaseUnavailable, ExportdError, QueryFailed
from daemon.kinds.context import ExportContext, JobCancelled, check_arcname, safe_error

CANCEL_POLL_SECONDS = 0.2
# A cancel request sent just before a statement starts is lost; repeat it.
CANCEL_REPEAT_SECONDS = 1.0
CANCEL_TIMEOUT_SECONDS = 10.0
PROGRESS_SECONDS = 0.25  # how often the counters are read (writes are throttled anyway)
ESTIMATES = ("planner",)
MEMBER_DIR = ".exportd-gzip"  # compressed outputs, apart from members a step names
# Held below 100 % until the COPY ends: an estimate may be short.
MAX_FRACTION_BEFORE_END = 0.99
COUNT_EVERY = 8  # blocks: the newlines of one in this many are counted (`_Counter`)


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
    `count_sql` (a query returning one number, with the same params) or
    `estimate = "planner"` gives the step a percentage.
    """

    name: str
    sql: str
    database_url: str = field(repr=False)
    format: str = "csv"
    statement_timeout_ms: int | None = None
    count_sql: str | None = None
    estimate: str | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}")
        if self.estimate is not None and self.estimate not in ESTIMATES:
            raise ValueError(f"unknown estimate {self.estimate!r}")

    @property
    def arcname(self) -> str:
        return f"{self.name}.{self.format}"

    def bound_params(self, ctx: ExportContext) -> dict[str, Any]:
        """Declared params as Python values, then `owner_id` from the job (always wins)."""
        return {**ctx.params, "owner_id": ctx.job.owner_id}

    async def __call__(self, ctx: ExportContext) -> int:
        """Run the query; return the number of rows exported."""
        await ctx.check_cancelled()
        arcname = check_arcname(self.arcname)
        path = ctx.work_dir / MEMBER_DIR / f"{arcname}.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        copy = await self._connect(ctx)
        counter = _Counter(header=self.format == "csv")
        watch = _CancelWatch(copy, ctx)
        try:
            rows, size, sha256 = await self._export(copy, ctx, path, counter)
        except QueryFailed as exc:
            if watch.fired:
                raise JobCancelled(f"job {ctx.job.job_id} was cancelled") from None
            raise SqlExportError(
                f"query {self.name!r} failed: {exc}", permanent=exc.permanent
            ) from exc
        except DatabaseUnavailable as exc:  # a dropped idle connection could not be replaced
            raise self._unavailable(ctx, exc) from None
        finally:
            await watch.stop()
            await asyncio.to_thread(copy.close)
        if watch.fired:
            raise JobCancelled(f"job {ctx.job.job_id} was cancelled")
        ctx.add_file(path, arcname, rows=rows, compressed=True, size=size, sha256=sha256)
        ctx.result.setdefault("rows", {})[self.name] = rows
        ctx.log.info("query %r exported %d rows", self.name, rows)
        return rows

    async def _connect(self, ctx: ExportContext) -> QueryCopy:
        try:
            return await asyncio.to_thread(QueryCopy.connect, self.database_url)
        except DatabaseUnavailable as exc:
            raise self._unavailable(ctx, exc) from None

    def _unavailable(self, ctx: ExportContext, exc: DatabaseUnavailable) -> SqlExportError:
        # The driver's message names host, port and user: fine for the
        # operator's log, not for the job's owner.
        ctx.log.error("cannot connect to the export database: %s", safe_error(exc))
        return SqlExportError(f"query {self.name!r}: cannot connect to the export database")

    async def _export(
        self, copy: QueryCopy, ctx: ExportContext, path: Path, counter: _Counter
    ) -> tuple[int, int, str]:
        """Run the COPY in a thread, reporting progress until it ends.

        A cancellation of this task (or any error here) asks the server to
        cancel the statement and waits for the thread (it holds the
        connection and the file), then goes on.
        """
        thread = asyncio.ensure_future(
            asyncio.to_thread(self._copy_into_member, copy, ctx, path, counter)
        )
        try:
            while True:
                done, _ = await asyncio.wait([thread], timeout=PROGRESS_SECONDS)
                if done:
                    break
                await self._report(ctx, counter)
        except BaseException:  # cancelled, or a progress write failed
            await _cancel_and_wait(copy, thread)
            raise
        rows, size, sha256 = thread.result()
        await self._report(ctx, counter, rows=rows)
        return rows, size, sha256

    def _copy_into_member(
        self, copy: QueryCopy, ctx: ExportContext, path: Path, counter: _Counter
    ) -> tuple[int, int, str]:
        """Blocking: estimate, COPY into the gzip member, commit."""
        params = self.bound_params(ctx)
        copy.begin(
            application_name=f"exportd export {ctx.job.kind}",
            statement_timeout_ms=self.statement_timeout_ms,
        )
        if self.count_sql is not None:
            counter.expected = copy.count_rows(self.count_sql, params)
        elif self.estimate == "planner":
            counter.expected = copy.estimate_rows(self.sql, params)
        member = GzipMemberWriter(path, level=ctx.compression_level)
        try:

            def write(block: bytes) -> None:
                member.write(block)
                counter.add(block)

            rows = copy.copy_to(self.sql, params, fmt=self.format, write=write)
            sha256 = member.finish()
        except BaseException:
            member.close()
            raise
        copy.commit()
        return rows, member.size, sha256

    async def _report(self, ctx: ExportContext, counter: _Counter, rows: int | None = None) -> None:
        done = counter.rows if rows is None else rows
        message = f"{_count(done)} rows, {_size(counter.bytes)} written"
        expected = counter.expected
        if rows is not None:
            await ctx.progress(1, 1, message)
        elif expected:
            await ctx.progress(
                min(done, int(expected * MAX_FRACTION_BEFORE_END)), expected, message
            )
        else:
            await ctx.progress(0, 0, message)


async def _cancel_and_wait(copy: QueryCopy, thread: asyncio.Future[Any]) -> None:
    """Cancel the statement and wait until the COPY thread let go of the
    connection (closing it under the thread would free what libpq uses).
    Further cancellations meanwhile are held: the server ends it promptly."""
    while not thread.done():
        try:
            await asyncio.to_thread(copy.cancel, wait_seconds=CANCEL_TIMEOUT_SECONDS)
            await asyncio.wait([thread], timeout=CANCEL_REPEAT_SECONDS)
        except asyncio.CancelledError:
            continue
    if not thread.cancelled():
        thread.exception()  # the cancelled statement's error: expected, retrieved


class _Counter:
    """Rows and bytes so far, written by the COPY thread, read by the event loop.

    The newlines of one block in COUNT_EVERY are counted, and the rows of
    the others inferred from their bytes at the same bytes per line: counting
    every block cost the COPY thread about 7 % of its work (`bytes.count`
    runs at ~1.3 GB/s and holds the GIL), for a figure shown rounded. The
    first block is always counted, so a small export's count is exact; the
    figure shown never goes down. The state is one tuple assigned whole: a
    reader sees a slightly old value, never a torn one.
    """

    def __init__(self, *, header: bool) -> None:
        self._header = header
        self._blocks = 0
        self._state = (0, 0, 0)  # (bytes, bytes of the counted blocks, their newlines)
        self._shown = 0
        self.expected = 0  # rows, from count_sql or the planner; 0 = unknown

    def add(self, block: bytes) -> None:
        """Only the COPY thread calls this (one writer: no lock needed)."""
        total, counted, lines = self._state
        if self._blocks % COUNT_EVERY == 0:
            counted += len(block)
            lines += block.count(b"\n")
        self._blocks += 1
        self._state = (total + len(block), counted, lines)

    @property
    def bytes(self) -> int:
        return self._state[0]

    @property
    def rows(self) -> int:
        """Only the event loop reads this (it keeps the figure from going down)."""
        total, counted, lines = self._state
        if counted:
            lines += (total - counted) * lines // counted
        rows = max(0, lines - 1) if self._header else lines
        self._shown = max(self._shown, rows)
        return self._shown


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
            await asyncio.to_thread(self._copy.cancel, wait_seconds=CANCEL_TIMEOUT_SECONDS)
            await asyncio.sleep(CANCEL_REPEAT_SECONDS)

    async def stop(self) -> None:
        self._task.cancel()
        # asyncio.wait neither raises the task's error nor swallows a
        # cancellation of the caller.
        await asyncio.wait([self._task])
        error = None if self._task.cancelled() else self._task.exception()
        if error is not None:
            self._ctx.log.warning("could not cancel the export query: %s", safe_error(error))


def _count(rows: int) -> str:
    if rows < 10_000:
        return f"{rows:,}"
    if rows < 1_000_000:
        return f"{rows / 1000:.0f} K"
    return f"{rows / 1_000_000:.1f} M"


def _size(count: int) -> str:
    if count < 1000 * 1000:
        return f"{count / 1000:.0f} KB"
    return f"{count / (1000 * 1000):.0f} MB"
