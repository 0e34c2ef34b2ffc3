"""SQL export throughput: exportd's built-in SQL export vs `psql \\copy`.

Run: .venv/bin/python -m bench.sql_export --rows 10000000

One embedded PostgreSQL server, one generated table (~100 bytes of CSV per
row). Each round, measured the same way on the same server:

- `psql \\copy (query) to file` — the baseline: the same COPY, to a plain file;
- `psql \\copy … | gzip -6` — the baseline with the compression a package has;
- exportd: a job of a built-in SQL kind run by a worker in this process,
  timed from `started_at` to `completed_at` of its row (COPY streamed to the
  work directory, tar.gz with sha256 and manifest, atomic publish, commit).

Prints a Markdown table of the medians of `--rounds` runs (min/max too).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from daemon.actions import ExportRequest, create_export
from daemon.config import Settings
from daemon.db.embedded import EmbeddedPostgres, binaries_dir
from daemon.db.jobs import get_job
from daemon.db.migrations import Migrator
from daemon.kinds.exports_file import load_exports_file
from daemon.kinds.registry import KindRegistry
from daemon.models import JobStatus
from daemon.worker.process import WorkerDaemon

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


async def exportd_export(url: str, work: Path) -> tuple[float, int]:
    exports = work / "exports.toml"
    exports.write_text(
        '[exports.bench]\n[[exports.bench.queries]]\nname = "rows"\n'
        f'sql = "{QUERY.format(owner="%(owner_id)s")}"\n'
    )
    registry = KindRegistry(load_exports_file(exports, default_database_url=url))
    settings = Settings(data_dir=work / "data", storage_dir=work / "packages", worker_concurrency=1)
    daemon = WorkerDaemon(settings, url, registry)
    task = asyncio.create_task(daemon.run())
    await daemon.ready.wait()
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            job, _ = await create_export(
                conn, registry, ExportRequest(kind="bench"), owner_id="bench"
            )
            while True:
                job = await get_job(conn, job.job_id)
                if job.status in (JobStatus.COMPLETED, JobStatus.ROLLED_BACK, JobStatus.FAILED):
                    break
                await asyncio.sleep(0.2)
    finally:
        daemon.stop()
        await task
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
            csv_size = package_size = 0
            for round_ in range(args.rounds):
                out = base / f"copy-{round_}.csv"
                plain.append(timed(lambda out=out: psql_copy(url, out, gzip=False)))
                csv_size = out.stat().st_size
                out.unlink()
                gz_out = base / f"copy-{round_}.csv.gz"
                gz.append(timed(lambda gz_out=gz_out: psql_copy(url, gz_out, gzip=True)))
                gz_out.unlink()
                work = base / f"exportd-{round_}"
                work.mkdir()
                seconds, package_size = asyncio.run(exportd_export(url, work))
                ours.append(seconds)
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
    )
    print("| run | rows/s (median) | s median | s min | s max | speed vs psql \\copy |")
    print("|---|---|---|---|---|---|")
    print(line("psql \\copy to file", plain))
    print(line("psql \\copy \\| gzip -6", gz))
    print(line("exportd SQL export (tar.gz + sha256)", ours))


if __name__ == "__main__":
    main()
