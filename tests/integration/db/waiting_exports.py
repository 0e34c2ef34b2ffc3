"""A queue of waiting exports for the plan tests: `count` procrastinate jobs
on the `exports` queue, each with its exportd job row, spread over `owners`
owners ('owner-0' …). Written in two statements, without a worker or the API,
so that thousands wait before the first fetch or start is measured."""

from __future__ import annotations

from typing import Any

import psycopg


def queue_waiting_exports(conn: psycopg.Connection[Any], count: int, *, owners: int) -> None:
    conn.execute(
        "SELECT procrastinate_defer_jobs_v1(ARRAY(SELECT ROW('exports',"
        " 'exportd.run_export', 0, NULL, NULL, '{}'::jsonb, NULL)"
        "::procrastinate_job_to_defer_v1 FROM generate_series(1, %s)))",
        (count,),
    )
    conn.execute(
        "INSERT INTO exportd.jobs (kind, owner_id, queue_job_id)"
        " SELECT 'k', 'owner-' || (id %% %s), id FROM procrastinate_jobs",
        (owners,),
    )
