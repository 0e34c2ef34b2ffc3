"""Taking the next job off the queue, fairly (DESIGN §13).

exportd's workers fetch through `exportd.fetch_job` (migration 0009) instead
of procrastinate's own function: the same candidates in the same order, but
a job whose owner already runs `owner_max_running` exports, whose kind runs
its `max_running`, or whose kind is paused is passed over and stays pending.
Still one statement per fetch, so fairness adds no round trip per job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from daemon.db.connect import translated_errors
from daemon.db.pools import Pool
from daemon.db.queries import named_queries

Q = named_queries("fetch")


async def fetch_job(
    pool: Pool,
    *,
    queues: Iterable[str] | None,
    worker_id: int,
    owner_max_running: int | None,
    kind_limits: Mapping[str, int],
) -> dict[str, Any] | None:
    """The row of the queue entry this worker now runs (procrastinate's
    columns), or None when no job may start. `owner_max_running` None: no
    per-owner cap; `kind_limits`: {kind: max_running}."""
    params = {
        "queues": list(queues) if queues is not None else None,
        "worker_id": worker_id,
        "owner_max_running": owner_max_running,
        "kind_limits": Jsonb(dict(kind_limits)),
    }
    with translated_errors():
        async with pool.connection() as conn:
            await conn.set_autocommit(True)
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(Q["fetch_job"], params)
                row: dict[str, Any] | None = await cur.fetchone()
    if row is None or row["id"] is None:
        return None
    return row
