"""Figures GET /metrics reads from the database at scrape time.

One pooled connection, a 2 s statement timeout (a scrape never queues behind
a slow statement), three statements of `sql/queries/metrics.sql`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from daemon.db.connect import Connection
from daemon.db.queries import named_queries

Q = named_queries("metrics")


@dataclass(frozen=True)
class Figures:
    by_status: list[tuple[str, int]]
    queue: list[tuple[str, int]]  # due-or-later entries per procrastinate queue
    oldest_pending: float | None  # seconds
    durations: list[int]  # cumulative counts at each bucket bound
    duration_count: int
    duration_sum: float
    packages: int
    package_bytes: int


async def read_figures(conn: Connection, buckets: Sequence[float]) -> Figures:
    await conn.execute(Q["limit_scrape"])
    try:
        by_status = await (await conn.execute(Q["jobs_by_status"])).fetchall()
        queue = await (await conn.execute(Q["queue_depth"])).fetchall()
        cur = await conn.execute(Q["job_figures"], {"buckets": list(buckets)})
        row: Any = await cur.fetchone()
    finally:
        await conn.execute(Q["end_scrape"])
    assert row is not None
    oldest, durations, duration_count, duration_sum, packages, package_bytes = row
    return Figures(
        by_status=[(str(s), int(n)) for s, n in by_status],
        queue=[(str(q), int(n)) for q, n in queue],
        oldest_pending=oldest,
        durations=[int(n) for n in durations],
        duration_count=int(duration_count),
        duration_sum=float(duration_sum),
        packages=int(packages),
        package_bytes=int(package_bytes),
    )
