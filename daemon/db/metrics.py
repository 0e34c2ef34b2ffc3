"""Figures GET /metrics reads from the database at scrape time, and the
cleanup totals it reports.

One pooled connection, a 2 s statement timeout (a scrape never queues behind
a slow statement), the statements of `sql/queries/metrics.sql`.

Retention runs in a worker (or `exportd cleanup`), which serves no /metrics:
each run adds its figures to `exportd.maintenance_totals` (migration 0005)
in one statement, and any API process reports the totals as counters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from daemon.db.connect import Connection
from daemon.db.queries import named_queries

Q = named_queries("metrics")

# The outcomes of a webhook delivery attempt (exportd.webhook_deliveries),
# each a value of the `outcome` label of exportd_webhook_deliveries_total.
WEBHOOK_OUTCOMES = ("delivered", "rejected", "timeout", "unreachable", "refused")

# The figures a cleanup run adds to, and the help text of each counter
# `exportd_cleanup_{name}_total`. `runs` counts the runs themselves.
CLEANUP_TOTALS = {
    "packages_deleted": "Expired packages deleted",
    "bytes_freed": "Bytes of expired packages and orphans deleted",
    "jobs_pruned": "Finished job rows deleted by retention",
    "queue_rows_pruned": "Finished procrastinate queue rows deleted",
    "orphans_removed": "Files and directories in storage no row referenced",
    "failures": "Files retention could not delete (retried next tick)",
    "runs": "Cleanup runs",
}


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
    cleanup: dict[str, int]  # CLEANUP_TOTALS name -> total so far
    paused: list[str]  # paused kinds
    webhooks: dict[str, int]  # WEBHOOK_OUTCOMES name -> delivery attempts so far


async def read_figures(conn: Connection, buckets: Sequence[float]) -> Figures:
    await conn.execute(Q["limit_scrape"])
    try:
        by_status = await (await conn.execute(Q["jobs_by_status"])).fetchall()
        queue = await (await conn.execute(Q["queue_depth"])).fetchall()
        cur = await conn.execute(Q["job_figures"], {"buckets": list(buckets)})
        row: Any = await cur.fetchone()
        cleanup = await (await conn.execute(Q["cleanup_totals"])).fetchall()
        paused = await (await conn.execute(Q["paused_kinds"])).fetchall()
        webhooks = await (await conn.execute(Q["webhook_totals"])).fetchall()
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
        cleanup={str(name): int(total) for name, total in cleanup},
        paused=sorted(str(kind) for (kind,) in paused),
        webhooks={str(outcome): int(total) for outcome, total in webhooks},
    )


async def add_cleanup_totals(conn: Connection, figures: Mapping[str, int]) -> None:
    """Add one cleanup run's figures (names of CLEANUP_TOTALS) to the totals."""
    unknown = set(figures) - set(CLEANUP_TOTALS)
    if unknown:
        raise ValueError(f"not a cleanup total: {sorted(unknown)}")
    names = sorted(figures)
    await conn.execute(
        Q["add_cleanup_totals"], {"names": names, "amounts": [figures[n] for n in names]}
    )
