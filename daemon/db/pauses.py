"""Paused kinds (DESIGN §13): stored in PostgreSQL, so a pause survives
restarts and every worker on every host sees it at its next fetch.

`exportd kinds pause|resume` and `POST /api/v1/admin/kinds/{kind}/pause|resume`
call these; the fetch of migration 0009 reads the table itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import class_row

from daemon.db.connect import Connection
from daemon.db.queries import named_queries

Q = named_queries("pauses")


@dataclass(frozen=True)
class Pause:
    """A row of `exportd.paused_kinds`."""

    kind: str
    paused_at: datetime
    paused_by: str | None


async def pause_kind(conn: Connection, kind: str, *, paused_by: str | None) -> bool:
    """Pause `kind`; False when it was paused already (the first pause stays)."""
    cur = await conn.execute(Q["pause_kind"], {"kind": kind, "paused_by": paused_by})
    return await cur.fetchone() is not None


async def resume_kind(conn: Connection, kind: str, *, queue: str) -> bool:
    """Resume `kind` and wake the workers of `queue` (its queue); False when
    it was not paused."""
    cur = await conn.execute(Q["resume_kind"], {"kind": kind, "queue": queue})
    row = await cur.fetchone()
    return row is not None and int(row[0]) > 0


async def paused_kinds(conn: Connection) -> dict[str, Pause]:
    """Every pause, by kind."""
    async with conn.cursor(row_factory=class_row(Pause)) as cur:
        await cur.execute(Q["paused_kinds"])
        return {pause.kind: pause for pause in await cur.fetchall()}
