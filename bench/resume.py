"""Resume: what an automatic retry saves when a 4-step SQL export fails at step 4.

Run: .venv/bin/python -m bench.resume --rows 1000000

One embedded PostgreSQL server, one generated table (~100 bytes of CSV per
row), a SQL kind of four queries over it whose fourth fails once (a flag
row, removed through `dblink` by the failing query itself). A real
`exportd worker` process runs, each round:

- resumed: the job's first attempt fails at step 4, its automatic retry
  resumes there (steps 1-3 kept) — timed from the retry's `started_at` to
  its `finished_at` (`exportd.job_attempts`);
- from scratch (the baseline): a job of the same kind with one attempt
  fails at step 4 the same way, and a manual retry — a new run, nothing
  kept — runs all four steps; timed the same way.

Records `resume_retry_vs_from_scratch` (how many times faster the resumed
retry is) and raw seconds with `bench.results.record`.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

from bench.results import record
from bench.worker import finished_job, worker_process
from daemon.actions import ExportRequest, create_export, retry_export
from daemon.db.embedded import EmbeddedPostgres
from daemon.db.migrations import Migrator
from daemon.kinds.registry import KindRegistry
from daemon.models import JobStatus

GENERATE = """
CREATE EXTENSION IF NOT EXISTS dblink;
CREATE SCHEMA IF NOT EXISTS bench;
DROP TABLE IF EXISTS bench.rows;
CREATE TABLE bench.rows AS
SELECT i AS id, md5(i::text) AS label, (i %% 100000) / 100.0 AS amount, repeat('x', 40) AS note
FROM generate_series(1, %(rows)s) AS i;
ANALYZE bench.rows;
CREATE TABLE IF NOT EXISTS bench.flag (x int);
"""
FAIL_ONCE = """
CREATE OR REPLACE FUNCTION bench.fail_once() RETURNS int VOLATILE LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM bench.flag) THEN
        PERFORM dblink_exec({url}, 'DELETE FROM bench.flag');
        RAISE EXCEPTION 'planned failure in step 4';
    END IF;
    RETURN 1;
END $$
"""
QUERY = "SELECT id, label, amount, note FROM bench.rows"
EXPORTS = f"""
[exports.four]
[[exports.four.queries]]
name = "one"
sql = "{QUERY}"
[[exports.four.queries]]
name = "two"
sql = "{QUERY}"
[[exports.four.queries]]
name = "three"
sql = "{QUERY}"
[[exports.four.queries]]
name = "four"
sql = "{QUERY} CROSS JOIN (SELECT bench.fail_once()) AS f"
"""


async def _last_attempt_seconds(
    conn: psycopg.AsyncConnection[Any], job_id: UUID, resumed_from: int | None
) -> float:
    cur = await conn.execute(
        "SELECT extract(epoch FROM finished_at - started_at), resumed_from_step"
        " FROM exportd.job_attempts WHERE job_id = %s ORDER BY run DESC, attempt DESC LIMIT 1",
        (job_id,),
    )
    row = await cur.fetchone()
    assert row is not None and row[1] == resumed_from, row
    return float(row[0])


async def one_round(url: str, registry: KindRegistry) -> tuple[float, float]:
    """(resumed retry seconds, from-scratch retry seconds)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("INSERT INTO bench.flag VALUES (1)")
        job, _ = await create_export(
            conn, registry, ExportRequest(kind="four", max_attempts=2), owner_id="bench"
        )
        assert (await finished_job(conn, job.job_id)).status is JobStatus.COMPLETED
        resumed = await _last_attempt_seconds(conn, job.job_id, 4)

        await conn.execute("INSERT INTO bench.flag VALUES (1)")
        job, _ = await create_export(
            conn, registry, ExportRequest(kind="four", max_attempts=1), owner_id="bench"
        )
        assert (await finished_job(conn, job.job_id)).status is not JobStatus.COMPLETED
        await retry_export(conn, registry, job.job_id)
        assert (await finished_job(conn, job.job_id)).status is JobStatus.COMPLETED
        scratch = await _last_attempt_seconds(conn, job.job_id, None)
    return resumed, scratch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per step")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="exportd-bench-"))
    try:
        with EmbeddedPostgres(base / "pg") as server:
            url = server.url()
            with psycopg.connect(url, autocommit=True) as conn:
                Migrator(conn).upgrade()
                with psycopg.ClientCursor(conn) as cur:
                    cur.execute(GENERATE, {"rows": args.rows})
                literal = "'" + url.replace("'", "''") + "'"
                conn.execute(FAIL_ONCE.replace("{url}", literal).encode())
            work = base / "exportd"
            work.mkdir()
            resumed, scratch = [], []
            with worker_process(
                url,
                work,
                EXPORTS,
                EXPORTD_RETRY_BASE_SECONDS="0.05",
                EXPORTD_RETRY_MAX_SECONDS="0.05",
            ) as (_, registry):
                for _ in range(args.rounds):
                    r, s = asyncio.run(one_round(url, registry))
                    resumed.append(r)
                    scratch.append(s)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    r_med, s_med = statistics.median(resumed), statistics.median(scratch)
    print(f"rows per step: {args.rows:,}; {args.rounds} rounds (median, min-max)")
    print("| retry after a failure at step 4 of 4 | seconds |")
    print("|---|---|")
    print(f"| resumed at step 4 | {r_med:.2f} ({min(resumed):.2f}-{max(resumed):.2f}) |")
    print(f"| from scratch (no resume) | {s_med:.2f} ({min(scratch):.2f}-{max(scratch):.2f}) |")
    print(f"\nresume makes the retry {s_med / r_med:.2f}x faster; saves {s_med - r_med:.2f} s")
    record(
        ratios={"resume_retry_vs_from_scratch": s_med / r_med},
        raw={
            "resume_rows_per_step": args.rows,
            "resume_retry_resumed_s": round(r_med, 3),
            "resume_retry_from_scratch_s": round(s_med, 3),
        },
    )


if __name__ == "__main__":
    main()
