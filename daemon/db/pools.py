"""Connection pools: one factory for the API, the worker and procrastinate.

psycopg_pool runs its `check` on every checkout, and procrastinate installs
`check_connection` (a round trip) on its pool: one extra round trip for every
statement the worker sends — the fetch, the settle, each heartbeat — and for
every API request. A connection returned to the pool moments ago is known to
work; one idle for longer may have been cut by a server restart or a proxy,
and is checked (and replaced by the pool if broken) before anyone gets it.
A connection that breaks in use is discarded by the pool on return anyway.

The time is taken as a connection is handed out, not as it comes back: a
`reset` callback would make psycopg_pool return every connection through
one of its worker tasks (a queue and a task switch per checkout, and the
connection unavailable until that task ran: ~3 % of the API's samples, and
requests waiting for connections already free). A connection's idle time
counted from its last checkout is never shorter than from its last return,
so nothing that has been idle goes unchecked.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from weakref import WeakKeyDictionary

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from daemon.db.connect import Connection, application_name, translated_errors

# A connection returned this recently is handed out unchecked.
IDLE_CHECK_SECONDS = 2.0
# How long a pool keeps retrying one failed connection (with psycopg_pool's
# doubling delay: 1, 2, 4 … s) before giving up; the next request that needs
# a connection starts a new attempt at once. Its default, 300 s, lets the
# delay grow past a minute: after an outage of a few minutes the API stayed
# 503 for up to a minute more with the database back.
POOL_RECONNECT_SECONDS = 2.0
POOL_CONNECT_TIMEOUT_SECONDS = 5

# When each pooled connection was last handed out.
_LAST_USED: WeakKeyDictionary[AsyncConnection[Any], float] = WeakKeyDictionary()


async def check_if_idle(conn: AsyncConnection[Any]) -> None:
    """The pool's `check` callback: a round trip only after IDLE_CHECK_SECONDS
    since the connection was last handed out."""
    now = time.monotonic()
    last = _LAST_USED.get(conn)
    if last is None or now - last >= IDLE_CHECK_SECONDS:
        await AsyncConnectionPool.check_connection(conn)  # raises if broken: not marked
    _LAST_USED[conn] = now


def make_pool(**kwargs: Any) -> AsyncConnectionPool[Any]:
    """The pool every exportd process uses (also procrastinate's `pool_factory`):
    idle-only checks, a short reconnect, an application name in `kwargs`."""
    kwargs["check"] = check_if_idle
    kwargs.setdefault("reconnect_timeout", POOL_RECONNECT_SECONDS)
    return AsyncConnectionPool(**kwargs)


def connection_options(role: str, **extra: Any) -> dict[str, Any]:
    """Keyword arguments of each pooled connection of a process with this role."""
    return {
        "application_name": application_name(role),
        "connect_timeout": POOL_CONNECT_TIMEOUT_SECONDS,
        **extra,
    }


class Database:
    """A pool of autocommit connections to exportd's database.

    `connection()` waits at most `timeout` seconds for a connection, and turns
    an unreachable server, a lost connection or an exhausted pool into
    `DatabaseUnavailable` — the one error the HTTP layer maps to 503.
    """

    def __init__(
        self, url: str, *, role: str, min_size: int = 1, max_size: int = 10, timeout: float = 3.0
    ) -> None:
        self.url = url
        self.pool = make_pool(
            conninfo=url,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open=False,
            kwargs=connection_options(role, autocommit=True),
        )

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def connection(self, *, wait_seconds: float | None = None) -> AsyncIterator[Connection]:
        # getconn/putconn, not pool.connection(): that also enters the
        # connection's own context, whose exit takes the connection's lock to
        # commit — nothing to commit in autocommit (a transaction() block
        # ends itself), and a lock and a context per API request. putconn
        # rolls back or discards a connection returned mid-transaction.
        with translated_errors():
            conn = await self.pool.getconn(timeout=wait_seconds)
            try:
                yield conn
            finally:
                await self.pool.putconn(conn)


# procrastinate's pool (the worker) and the API's: the same class.
Pool = AsyncConnectionPool[Any]


@asynccontextmanager
async def pooled(pool: Pool) -> AsyncIterator[Connection]:
    """An autocommit connection of `pool`; driver errors become DatabaseUnavailable."""
    with translated_errors():
        async with pool.connection() as conn:
            await conn.set_autocommit(True)
            yield conn
