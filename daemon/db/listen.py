"""The one listening connection of a process: job events as they happen.

The worker announces every status or progress change of a job on one
PostgreSQL channel (a trigger, migration 0003). The API's event hub (SSE)
and `exportd export --wait` both listen through `JobEventListener`; each
notification's payload is a JSON object with at least `job_id`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg

from daemon.db.connect import Connection, application_name, translated_errors
from daemon.db.queries import named_queries

Q = named_queries("listen")
CONNECT_TIMEOUT_SECONDS = 5


class JobEventListener:
    """A dedicated autocommit connection listening to the job events channel."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    @classmethod
    async def connect(cls, url: str, *, role: str) -> JobEventListener:
        with translated_errors():
            conn = await psycopg.AsyncConnection.connect(
                url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                application_name=application_name(role),
            )
            try:
                await conn.execute(Q["listen"])
            except BaseException:
                await conn.close()
                raise
        return cls(conn)

    async def payloads(self, *, wait_seconds: float | None = None) -> AsyncIterator[str]:
        """Notification payloads; ends after `wait_seconds` without one (if given).
        A lost connection raises DatabaseUnavailable."""
        with translated_errors():
            async for notify in self._conn.notifies(timeout=wait_seconds):
                yield notify.payload

    async def close(self) -> None:
        await self._conn.close()
