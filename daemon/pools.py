"""Connection pools that check a connection only when it has been idle a while.

psycopg_pool runs its `check` on every checkout, and procrastinate installs
`check_connection` (a round trip) on its pool: one extra round trip for every
statement the worker sends — the fetch, the settle, each heartbeat — and for
every API request. A connection returned to the pool moments ago is known to
work; one idle for longer may have been cut by a server restart or a proxy,
and is checked (and replaced by the pool if broken) before anyone gets it.
A connection that breaks in use is discarded by the pool on return anyway.
"""

from __future__ import annotations

import time
from typing import Any
from weakref import WeakKeyDictionary

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

# A connection returned this recently is handed out unchecked.
IDLE_CHECK_SECONDS = 2.0

# When each pooled connection was last returned to its pool.
_LAST_USED: WeakKeyDictionary[AsyncConnection[Any], float] = WeakKeyDictionary()


async def mark_used(conn: AsyncConnection[Any]) -> None:
    """The pool's `reset` callback: runs as a healthy connection is returned."""
    _LAST_USED[conn] = time.monotonic()


async def check_if_idle(conn: AsyncConnection[Any]) -> None:
    """The pool's `check` callback: a round trip only after IDLE_CHECK_SECONDS idle."""
    last = _LAST_USED.get(conn)
    if last is not None and time.monotonic() - last < IDLE_CHECK_SECONDS:
        return
    await AsyncConnectionPool.check_connection(conn)


def idle_checked_pool(**kwargs: Any) -> AsyncConnectionPool[Any]:
    """procrastinate's `pool_factory`: its pool, with the idle-only check."""
    kwargs["check"] = check_if_idle
    kwargs["reset"] = mark_used
    return AsyncConnectionPool(**kwargs)
