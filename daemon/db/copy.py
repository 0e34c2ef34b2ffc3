"""Streaming one configured query out of PostgreSQL with COPY … TO STDOUT.

The query text comes only from the exports file (data, composed into the
COPY statement of `sql/queries/exports.sql` with `psycopg.sql`, never
formatted into a string); job params reach it as bound values. It runs on a
connection of its own — the export database may not be exportd's — in a
READ ONLY transaction with an optional statement timeout, so an export can
neither change data nor hold the server longer than the operator allowed.

Connections are kept open between exports (`ExportConnections`, one idle
list per database URL, owned by the process): opening one costs several
milliseconds of a short export, a round trip on an open one a few dozen
microseconds. Nothing of one export reaches the next: every transaction is
begun READ ONLY and proved so, the timeout and the application name are
SET LOCAL, and only a connection whose transaction committed, that no cancel
request was sent to and that is not broken goes back; any other is closed.
An idle connection is taken without a round trip: one idle for longer than
IDLE_SECONDS is closed instead, and one the server dropped meanwhile
(restart, idle timeout) fails at its first statement, which then runs again
once on a new connection.

Driver errors leave this module as `QueryFailed` (the server's one-line
message and SQLSTATE, never connection details) or `DatabaseUnavailable`.
A `QueryFailed` is marked permanent when its SQLSTATE says the same query
with the same values can never succeed (`never_transient`): the worker then
fails the job at once instead of retrying it (DESIGN §16).
"""

from __future__ import annotations

import json
import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.errors
from psycopg import pq
from psycopg.pq import TransactionStatus
from psycopg.sql import SQL

from daemon.db.queries import named_queries
from daemon.errors import DatabaseUnavailable, QueryFailed

Q = named_queries("copy")
FORMATS = ("csv", "jsonl")
COPY_BLOCK = 1024 * 1024  # bytes of rows handed on at once
# Idle connections older than this are closed, not reused: a server-side
# idle timeout or a proxy may have cut them.
IDLE_SECONDS = 60.0
# Idle connections kept per database URL (the busy ones are bounded by the
# worker's concurrency): a burst leaves no crowd of them behind.
MAX_IDLE_PER_URL = 8
APPLICATION_NAME = "exportd export"  # the connection's; each export SETs LOCAL its own

# SQLSTATE classes no retry can fix: the query text, the objects it names,
# the role's rights or the bound values are wrong, and stay wrong.
PERMANENT_SQLSTATE_CLASSES = frozenset(
    {
        "0A",  # feature not supported
        "21",  # cardinality violation (a scalar subquery returned several rows)
        "22",  # data exception: a value the server rejects (overflow, bad datetime…)
        "26",  # invalid SQL statement name
        "2F",  # SQL routine exception
        "34",  # invalid cursor name
        "3F",  # invalid schema name
        "42",  # syntax error or access rule violation (42601, 42P01, 42703, 42501…)
        "44",  # WITH CHECK OPTION violation
        "54",  # program limit exceeded (statement too complex, too many columns)
    }
)
# Single codes of otherwise mixed classes.
PERMANENT_SQLSTATES = frozenset(
    {
        "25006",  # read_only_sql_transaction: the query writes, exports are read-only
    }
)
# Everything else stays retryable: connection loss (08), serialization
# failures and deadlocks (40), statement timeout and cancel, server shutdown
# (57), insufficient resources (53), lock not available (55P03), I/O and
# internal errors (58, XX), and errors raised by user functions (P0).


def never_transient(sqlstate: str | None) -> bool:
    """True when an error with this SQLSTATE will recur on every retry."""
    if not sqlstate:
        return False
    return sqlstate in PERMANENT_SQLSTATES or sqlstate[:2] in PERMANENT_SQLSTATE_CLASSES


class ExportConnections:
    """Idle export connections per database URL, newest first out.

    Thread-safe: exports take and give connections from their COPY threads.
    """

    def __init__(
        self, *, max_idle: int = MAX_IDLE_PER_URL, idle_seconds: float = IDLE_SECONDS
    ) -> None:
        self._max_idle = max_idle
        self._idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._idle: dict[str, list[tuple[psycopg.Connection[Any], float]]] = {}

    def take(self, url: str) -> psycopg.Connection[Any] | None:
        """An idle connection to `url` that looks usable (no round trip), or None."""
        stale: list[psycopg.Connection[Any]] = []
        found = None
        now = time.monotonic()
        with self._lock:
            idle = self._idle.get(url, [])
            while idle:
                conn, since = idle.pop()
                if now - since < self._idle_seconds and _reusable(conn):
                    found = conn
                    break
                stale.append(conn)
            # Older ones sit below: anything left past the limit is stale too.
            stale.extend(c for c, since in idle if now - since >= self._idle_seconds)
            idle[:] = [(c, since) for c, since in idle if now - since < self._idle_seconds]
        for conn in stale:
            conn.close()
        return found

    def give(self, url: str, conn: psycopg.Connection[Any]) -> None:
        """Keep `conn` for the next export to `url`, or close it when enough are idle."""
        with self._lock:
            idle = self._idle.setdefault(url, [])
            if len(idle) < self._max_idle:
                idle.append((conn, time.monotonic()))
                return
        conn.close()

    def close_all(self) -> None:
        """Close every idle connection (the worker's shutdown)."""
        with self._lock:
            conns = [conn for idle in self._idle.values() for conn, _ in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()

    def idle_count(self, url: str) -> int:
        with self._lock:
            return len(self._idle.get(url, []))


# The process's: a worker's exports share them; `close_export_connections`
# at shutdown.
CONNECTIONS = ExportConnections()


def close_export_connections() -> None:
    """Close the idle export connections of this process."""
    CONNECTIONS.close_all()


def _reusable(conn: psycopg.Connection[Any]) -> bool:
    """What can be known without a round trip: open, and idle outside a transaction."""
    return (
        not conn.closed
        and not conn.broken
        and conn.info.transaction_status == TransactionStatus.IDLE
    )


def _open(url: str) -> psycopg.Connection[Any]:
    """A new read-only connection; DatabaseUnavailable carries the driver's
    reason for the operator's log (it names host and user: not for the owner)."""
    try:
        conn = psycopg.Connection.connect(
            url, client_encoding="UTF8", application_name=APPLICATION_NAME
        )
    except psycopg.Error as exc:
        raise DatabaseUnavailable(" ".join(str(exc).split())) from None
    try:
        conn.read_only = True  # every transaction begins READ ONLY
    except BaseException:
        conn.close()
        raise
    return conn


class QueryCopy:
    """One read-only connection that COPYs one query at a time.

    Blocking: the SQL step drives it from a worker thread, so that the
    event loop never runs per-row work. The COPY rows are read straight off
    libpq (`PQgetCopyData` and `PQgetResult` called only when they cannot
    block, waiting on the socket with the GIL released) and joined into
    large blocks: psycopg's `Copy` iterator costs a generator round trip per
    row, about as much as the server spends producing it. `cancel` may be called from any thread.
    """

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        *,
        url: str,
        reused: bool = False,
        connections: ExportConnections = CONNECTIONS,
    ) -> None:
        self._conn = conn
        self._url = url
        self._reused = reused
        self._connections = connections
        self._lock = threading.Lock()  # between `cancel` and `close`
        self._cancel_sent = False
        self._committed = False
        self._closed = False
        self.rows = 0  # from the server's "COPY n" command tag

    @classmethod
    def connect(cls, url: str, *, connections: ExportConnections = CONNECTIONS) -> QueryCopy:
        """An idle connection to `url` if there is one (no round trip), else a
        new one (DatabaseUnavailable when it cannot be opened)."""
        conn = connections.take(url)
        if conn is not None:
            return cls(conn, url=url, reused=True, connections=connections)
        return cls(_open(url), url=url, connections=connections)

    @property
    def backend_pid(self) -> int:
        return self._conn.info.backend_pid

    def begin(self, *, application_name: str, statement_timeout_ms: int | None = None) -> None:
        """Start the READ ONLY transaction (checked) with its statement timeout.

        On a reused connection that the server dropped while it was idle, the
        first statement fails with OperationalError before anything ran: it
        runs again, once, on a new connection.
        """
        try:
            self._begin(application_name, statement_timeout_ms)
        except QueryFailed as exc:
            dropped = isinstance(exc.__cause__, psycopg.OperationalError) and (
                self._conn.broken or self._conn.closed
            )
            if not (self._reused and dropped and not self._cancel_sent):
                raise
            self._replace_connection()
            self._begin(application_name, statement_timeout_ms)

    def _begin(self, application_name: str, statement_timeout_ms: int | None) -> None:
        with _translated(), self._conn.cursor() as cur:
            cur.execute(Q["transaction_read_only"], {"application_name": application_name})
            row = cur.fetchone()
            if row is None or row[0] != "on":
                raise QueryFailed("the export transaction is not read-only", permanent=True)
            if statement_timeout_ms is not None:
                cur.execute(Q["set_statement_timeout"], {"ms": str(statement_timeout_ms)})

    def _replace_connection(self) -> None:
        """The dropped connection closed, a new one in its place (a cancel
        request sent meanwhile marks the new one as not to be kept either)."""
        fresh = _open(self._url)
        with self._lock:
            old, self._conn, self._reused = self._conn, fresh, False
        old.close()

    def estimate_rows(self, query: str, params: dict[str, Any]) -> int:
        """The planner's estimate of the rows `query` returns (EXPLAIN, not run)."""
        statement = SQL(Q["explain_json"]).format(query=SQL(query))
        with _translated(), psycopg.ClientCursor(self._conn) as cur:
            cur.execute(statement, params)
            row = cur.fetchone()
        plan: Any = row[0] if row else None
        if isinstance(plan, str):
            plan = json.loads(plan)
        try:
            return max(0, int(plan[0]["Plan"]["Plan Rows"]))
        except (TypeError, KeyError, IndexError, ValueError):
            return 0

    def count_rows(self, count_sql: str, params: dict[str, Any]) -> int:
        """Run the operator's `count_sql`: one row, one number (0 if not a number)."""
        with _translated(), psycopg.ClientCursor(self._conn) as cur:
            cur.execute(SQL(count_sql), params)
            row = cur.fetchone()
        try:
            return max(0, int(row[0])) if row else 0
        except (TypeError, ValueError):
            return 0

    def copy_to(
        self,
        query: str,
        params: dict[str, Any],
        *,
        fmt: str,
        write: Callable[[bytes], None],
        block_size: int = COPY_BLOCK,
    ) -> int:
        """COPY `query` out, handing `write` blocks of whole rows of at least
        `block_size` bytes (the last one shorter); return the row count."""
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}")
        # The text is the operator's, read from the exports file at start; no
        # request ever reaches it, so it may be treated as trusted SQL.
        statement = SQL(Q[f"copy_{fmt}"]).format(query=SQL(query))
        with _translated():
            # COPY takes no server-side parameters: bind them client-side,
            # quoting each as a literal (as psycopg's own cursor.copy does).
            with psycopg.ClientCursor(self._conn) as cur:
                text = cur.mogrify(statement, params)
            pgconn = self._conn.pgconn
            pgconn.send_query(text.encode())
            result = _next_result(pgconn)
            if result is None or result.status != pq.ExecStatus.COPY_OUT:
                self._finish_results(result)
                raise QueryFailed("the export query did not start a COPY", permanent=True)
            self._read_rows(pgconn, write, block_size)
            self.rows = self._finish_results(_next_result(pgconn))
        return self.rows

    def commit(self) -> None:
        with _translated():
            self._conn.commit()
        self._committed = True

    def cancel(self, *, wait_seconds: float) -> None:
        """Ask the server to cancel the running statement (safe to repeat, any thread).

        A connection a cancel request was sent to is never kept: the request
        may arrive after its statement ended and cancel the next export's.
        After `close` it does nothing (the connection may serve another export).
        """
        with self._lock:
            if self._closed:
                return
            self._cancel_sent = True
            conn = self._conn
        conn.cancel_safe(timeout=wait_seconds)

    def close(self) -> None:
        """Give the connection back for the next export if this one ended
        cleanly (committed, never cancelled, idle, not broken), else close it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            keep = self._committed and not self._cancel_sent and _reusable(self._conn)
        if keep:
            self._connections.give(self._url, self._conn)
        else:
            self._conn.close()

    @staticmethod
    def _read_rows(pgconn: pq.abc.PGconn, write: Callable[[bytes], None], block_size: int) -> None:
        block = bytearray()
        get = pgconn.get_copy_data
        fileno = pgconn.socket
        while True:
            nbytes, data = get(1)
            if nbytes > 0:
                block += data
                if len(block) >= block_size:
                    write(bytes(block))
                    block.clear()
            elif nbytes == 0:  # nothing buffered: wait for the socket
                select.select([fileno], [], [])
                pgconn.consume_input()
            else:  # -1: the COPY ended (its result follows)
                break
        if block:
            write(bytes(block))

    def _finish_results(self, result: pq.abc.PGresult | None) -> int:
        """Drain the results of the statement; raise the server's error if any."""
        pgconn = self._conn.pgconn
        error: psycopg.Error | None = None
        rows = 0
        while result is not None:
            if result.status == pq.ExecStatus.FATAL_ERROR and error is None:
                error = psycopg.errors.error_from_result(result, encoding="utf-8")
            elif result.status == pq.ExecStatus.COMMAND_OK:
                rows = result.command_tuples or 0
            result = _next_result(pgconn)
        if error is not None:
            raise error
        return rows


def _next_result(pgconn: pq.abc.PGconn) -> pq.abc.PGresult | None:
    """`PQgetResult` without blocking while holding the GIL: wait for the
    socket first (a statement may run for minutes before its first row)."""
    while True:
        pgconn.consume_input()
        if not pgconn.is_busy():
            return pgconn.get_result()
        select.select([pgconn.socket], [], [])


@contextmanager
def _translated() -> Iterator[None]:
    """Driver errors as `QueryFailed`: one line, SQLSTATE, permanence."""
    try:
        yield
    except psycopg.Error as exc:
        raise QueryFailed(
            _describe(exc), sqlstate=exc.sqlstate, permanent=never_transient(exc.sqlstate)
        ) from exc


def _describe(exc: psycopg.Error) -> str:
    """One line: the server's primary message and SQLSTATE, never connection details."""
    message = exc.diag.message_primary or (str(exc).splitlines() or [type(exc).__name__])[0]
    return f"{message} (SQLSTATE {exc.sqlstate})" if exc.sqlstate else message
