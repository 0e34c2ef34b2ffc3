"""SQL export throughput: exportd's built-in SQL export vs `psql \\copy`, and worker memory.

Run: .venv/bin/python -m bench.sql_export --rows 5000000

One embedded PostgreSQL server, one generated table (~100 bytes of CSV per
row). Each round, measured the same way on the same server:

- `psql \\copy (query) to file` — the baseline: the same COPY, to a plain file;
- `psql \\copy … | gzip -6` — the baseline with the compression a package has;
- exportd: a job of a built-in SQL kind run by a real `exportd worker`
  process, timed from `started_at` to `completed_at` of its row (COPY
  compressed while it streams, tar.gz with sha256 and manifest, atomic
  publish, commit).

Memory: the peak RSS (`VmHWM` of /proc/PID/status) of the worker process
after a tiny export, and after the large CSV exports; then the same with a
fresh worker for one JSONL export of every row. The growth is what the size
of an export costs in memory (it should not depend on it).

Prints a Markdown table of the medians of `--rounds` runs (min/max too) and
records `sql_export_vs_copy`, `sql_export_vs_copy_gzip` and raw figures with
`bench.results.record`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.http import peak_rss_mib
from bench.results import record
from bench.worker import finished_job, worker_process
from daemon.actions import ExportRequest, create_export
from daemon.db.embedded import EmbeddedPostgres, binaries_dir
from daemon.db.migrations import Migrator
from daemon.kinds.registry import KindRegistry
from daemon.models import JobStatus

QUERY = (
    "SELECT id, owner_id, created_at, label, amount, note FROM bench.rows WHERE owner_id = {owner}"
)
GENERATE = """
CREATE SCHEMA IF NOT EXISTS bench;
DROP TABLE IF EXISTS bench.rows;
CREATE TABLE bench.rows AS
SELECT i AS id, 'bench'::text AS owner_id,
       timestamptz '2026-01-01' + make_interval(secs => i) AS created_at,
       md5(i::text) AS label, (i %% 100000) / 100.0 AS amount,
       repeat('x', 20) AS note
FROM generate_series(1, %(rows)s) AS i;
ANALYZE bench.rows;
"""


def process_cpu_seconds(pid: int) -> float:
    """CPU time of a running process, every thread (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU time of the ended child processes of the bench (psql, gzip)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def psql_copy(url: str, target: Path, *, gzip: bool) -> None:
    psql = str(binaries_dir() / "psql")
    copy = f"\\copy ({QUERY.format(owner=repr('bench'))}) to stdout with (format csv, header)"
    with target.open("wb") as out:
        if not gzip:
            subprocess.run([psql, url, "-qc", copy], stdout=out, check=True)
            return
        producer = subprocess.Popen([psql, url, "-qc", copy], stdout=subprocess.PIPE)
        subprocess.run(["gzip", "-6"], stdin=producer.stdout, stdout=out, check=True)
        assert producer.stdout is not None
        producer.stdout.close()
        if producer.wait() != 0:
            raise RuntimeError("psql failed")


EXPORTS = """
[exports.bench]
[[exports.bench.queries]]
name = "rows"
sql = "{query}"

[exports.bench_jsonl]
format = "jsonl"
[[exports.bench_jsonl.queries]]
name = "rows"
sql = "{query}"

[exports.tiny]
[[exports.tiny.queries]]
name = "rows"
sql = "{query} LIMIT 10"
"""


async def exportd_export(url: str, registry: KindRegistry, kind: str) -> tuple[float, int]:
    """One export through the worker: (started → completed seconds, package bytes)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        job, _ = await create_export(conn, registry, ExportRequest(kind=kind), owner_id="bench")
        job = await finished_job(conn, job.job_id)
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert job.started_at is not None and job.completed_at is not None
    return (job.completed_at - job.started_at).total_seconds(), job.package_size_bytes or 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
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
            plain, gz, ours = [], [], []
            psql_cpu, worker_cpu = [], []
            csv_size = gz_size = package_size = 0
            work = base / "exportd"
            work.mkdir()
            exports = EXPORTS.format(query=QUERY.format(owner="%(owner_id)s"))
            with worker_process(url, work, exports) as (proc, registry):
                asyncio.run(exportd_export(url, registry, "tiny"))
                rss_base = peak_rss_mib(proc.pid)
                for round_ in range(args.rounds):
                    out = base / f"copy-{round_}.csv"
                    before = children_cpu_seconds()
                    plain.append(timed(lambda out=out: psql_copy(url, out, gzip=False)))
                    psql_cpu.append(children_cpu_seconds() - before)
                    csv_size = out.stat().st_size
                    out.unlink()
                    gz_out = base / f"copy-{round_}.csv.gz"
                    gz.append(timed(lambda gz_out=gz_out: psql_copy(url, gz_out, gzip=True)))
                    gz_size = gz_out.stat().st_size
                    gz_out.unlink()
                    before = process_cpu_seconds(proc.pid)
                    seconds, package_size = asyncio.run(exportd_export(url, registry, "bench"))
                    worker_cpu.append(process_cpu_seconds(proc.pid) - before)
                    ours.append(seconds)
                rss_csv = peak_rss_mib(proc.pid) - rss_base
            shutil.rmtree(work)
            work.mkdir()
            with worker_process(url, work, exports) as (proc, registry):
                asyncio.run(exportd_export(url, registry, "tiny"))
                rss_base_jsonl = peak_rss_mib(proc.pid)
                jsonl_seconds, _ = asyncio.run(exportd_export(url, registry, "bench_jsonl"))
                rss_jsonl = peak_rss_mib(proc.pid) - rss_base_jsonl
            shutil.rmtree(work)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    rows = args.rows

    def line(name: str, times: list[float]) -> str:
        med = statistics.median(times)
        return (
            f"| {name} | {rows / med:,.0f} | {med:.2f} | {min(times):.2f} | {max(times):.2f} "
            f"| {statistics.median(plain) / med:.2f} |"
        )

    print(
        f"rows: {rows:,}; CSV: {csv_size / 2**30:.2f} GiB; package: {package_size / 2**20:.0f} MiB"
        f" (gzip -6: {gz_size / 2**20:.0f} MiB)"
    )
    print("| run | rows/s (median) | s median | s min | s max | speed vs psql \\copy |")
    print("|---|---|---|---|---|---|")
    print(line("psql \\copy to file", plain))
    print(line("psql \\copy \\| gzip -6", gz))
    print(line("exportd SQL export (tar.gz + sha256)", ours))
    print(f"| exportd JSONL export (1 run) | {rows / jsonl_seconds:,.0f} | {jsonl_seconds:.2f} |")
    print(
        f"\nclient CPU per CSV export (median): exportd worker "
        f"{statistics.median(worker_cpu):.2f} s, psql {statistics.median(psql_cpu):.2f} s"
    )
    print(
        f"worker peak RSS growth over a tiny export: CSV {rss_csv:.1f} MiB, "
        f"JSONL {rss_jsonl:.1f} MiB (base {rss_base:.0f} MiB)"
    )
    ours_s = statistics.median(ours)
    record(
        ratios={
            "sql_export_vs_copy": statistics.median(plain) / ours_s,
            "sql_export_vs_copy_gzip": statistics.median(gz) / ours_s,
            "sql_export_size_vs_gzip": package_size / gz_size if gz_size else 0.0,
        },
        raw={
            "sql_export_rows": rows,
            "sql_export_rows_per_s": round(rows / ours_s),
            "sql_export_mb_per_s": round(csv_size / ours_s / 1e6, 1),
            "sql_export_jsonl_rows_per_s": round(rows / jsonl_seconds),
            "sql_copy_rows_per_s": round(rows / statistics.median(plain)),
            "sql_copy_gzip_rows_per_s": round(rows / statistics.median(gz)),
            "sql_export_worker_cpu_s": round(statistics.median(worker_cpu), 2),
            "sql_copy_psql_cpu_s": round(statistics.median(psql_cpu), 2),
            "sql_export_worker_rss_base_mib": round(rss_base, 1),
            "sql_export_worker_rss_growth_csv_mib": round(rss_csv, 1),
            "sql_export_worker_rss_growth_jsonl_mib": round(rss_jsonl, 1),
        },
    )


if __name__ == "__main__":
    main()
