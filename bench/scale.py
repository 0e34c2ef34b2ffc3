"""Scale: the hot queries on 10 K vs 1 M rows of exportd.jobs.

Run: .venv/bin/python -m bench.scale --small 10000 --large 1000000 --repeat 200

Rows are generated with generate_series (owners with a realistic spread:
one busy owner with 1 % of the rows, the rest spread over 1000 owners; a
third of the jobs completed with a live package, expiries spread over ±15
days, half of them already due). Each query runs `--repeat` times through
psycopg (prepared after the fifth run, as in the API); the median latency is reported, and the ratio
1 M ÷ 10 K.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, LiteralString

import psycopg

from bench.results import record
from daemon.db.embedded import EmbeddedPostgres
from daemon.db.migrations import Migrator
from daemon.db.queries import named_queries

JOBS = named_queries("jobs")

GENERATE = """
ALTER TABLE exportd.jobs DISABLE TRIGGER USER;
TRUNCATE exportd.jobs CASCADE;
INSERT INTO exportd.jobs (kind, owner_id, status, created_at, updated_at, scheduled_at,
                          started_at, completed_at, attempts, steps_completed, steps_total,
                          progress_percentage, package_path, package_size_bytes,
                          package_sha256, package_expires_at)
SELECT 'orders',
       CASE WHEN i %% 100 = 0 THEN 'busy' ELSE 'owner-' || (i %% 1000) END,
       CASE WHEN i %% 3 = 0 THEN 'completed' ELSE 'rolled_back' END::exportd.job_status,
       t, t, t, t, t + interval '5 seconds', 1, 1, 1,
       CASE WHEN i %% 3 = 0 THEN 100 ELSE 0 END,
       CASE WHEN i %% 3 = 0 THEN 'ab/' || gen_random_uuid() || '/p.tar.gz' END,
       CASE WHEN i %% 3 = 0 THEN 1000 END,
       CASE WHEN i %% 3 = 0 THEN repeat('a', 64) END,
       CASE WHEN i %% 3 = 0 THEN now() + make_interval(secs => (i %% 2592000) - 1296000) END
  FROM generate_series(1, %(rows)s) AS i,
       LATERAL (SELECT now() - make_interval(secs => %(rows)s - i) AS t) AS ts;
ALTER TABLE exportd.jobs ENABLE TRIGGER USER;
"""


def timed(fn: Callable[[], Any], repeat: int) -> float:
    values = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        values.append(time.perf_counter() - started)
    return statistics.median(values)


def measure(conn: psycopg.Connection[Any], repeat: int) -> dict[str, float]:
    row = conn.execute(
        "SELECT job_id FROM exportd.jobs ORDER BY created_at DESC OFFSET 5 LIMIT 1"
    ).fetchone()
    assert row is not None
    job_id = row[0]
    queries: dict[str, tuple[LiteralString, dict[str, Any]]] = {
        "status by id": (JOBS["get_job"], {"job_id": job_id}),
        "owner history, newest 50": (
            JOBS["list_owner_jobs"],
            {
                "owner_id": "busy",
                "status": None,
                "kind": None,
                "after_created_at": None,
                "after_job_id": None,
                "limit": 50,
            },
        ),
        "expiry scan, next 500": (JOBS["packages_due_for_expiry"], {"limit": 500, "now": None}),
    }
    results: dict[str, float] = {}
    for name, (query, params) in queries.items():

        def run(q: LiteralString = query, p: dict[str, Any] = params) -> None:
            conn.execute(q, p).fetchall()

        results[name] = timed(run, repeat)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="exportd-bench-scale-"))
    results: dict[int, dict[str, float]] = {}
    try:
        with (
            EmbeddedPostgres(base / "pg") as server,
            psycopg.connect(server.url(), autocommit=True) as conn,
        ):
            Migrator(conn).upgrade()
            for rows in (args.small, args.large):
                with psycopg.ClientCursor(conn) as cur:
                    cur.execute(GENERATE, {"rows": rows})
                conn.execute("VACUUM ANALYZE exportd.jobs")
                results[rows] = measure(conn, args.repeat)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    small, large = results[args.small], results[args.large]
    print(f"| query | {args.small:,} rows (ms) | {args.large:,} rows (ms) | ratio |")
    print("|---|---|---|---|")
    for name in small:
        print(
            f"| {name} | {small[name] * 1000:.3f} | {large[name] * 1000:.3f}"
            f" | {large[name] / small[name]:.2f} |"
        )
    # Stable names: "status by id" -> scale_status_by_id_large_vs_small_time.
    names = {name: re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") for name in small}
    record(
        ratios={f"scale_{names[n]}_large_vs_small_time": large[n] / small[n] for n in small},
        raw={
            "scale_small_rows": args.small,
            "scale_large_rows": args.large,
            **{f"scale_{names[n]}_small_ms": round(small[n] * 1000, 4) for n in small},
            **{f"scale_{names[n]}_large_ms": round(large[n] * 1000, 4) for n in small},
        },
    )


if __name__ == "__main__":
    main()
