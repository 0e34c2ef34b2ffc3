"""A real `exportd worker` process for the benchmarks that export through it
(bench.sql_export, bench.resume), and the wait for one of its jobs to end.

The worker runs with the bench's own settings only (every `EXPORTD_*` of the
caller's environment is dropped), one export at a time, and is stopped with
SIGTERM (SIGKILL after a minute) whatever happens in the benchmark.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

from daemon.db.jobs import get_job
from daemon.kinds.exports_file import load_exports_file
from daemon.kinds.registry import KindRegistry
from daemon.models import Job

EXPORTD = str(Path(sys.executable).with_name("exportd"))


@contextmanager
def worker_process(
    url: str, work: Path, exports: str, **settings: str
) -> Iterator[tuple[subprocess.Popen[bytes], KindRegistry]]:
    """`exportd worker` on `url` serving the kinds of the exports file text
    `exports`, with its directories under `work`; `settings` adds or
    overrides `EXPORTD_*` variables. Yields the process and the kinds."""
    path = work / "exports.toml"
    path.write_text(exports)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPORTD_")}
    env.update(
        EXPORTD_DATABASE_URL=url,
        EXPORTD_EXPORTS_FILE=str(path),
        EXPORTD_DATA_DIR=str(work / "data"),
        EXPORTD_STORAGE_DIR=str(work / "packages"),
        EXPORTD_WORK_DIR=str(work / "work"),
        EXPORTD_WORKER_CONCURRENCY="1",
        EXPORTD_POLL_SECONDS="0.2",
    )
    env.update(settings)
    log = (work / "worker.log").open("wb")
    proc = subprocess.Popen([EXPORTD, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc, KindRegistry(load_exports_file(path, default_database_url=url))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def finished_job(conn: psycopg.AsyncConnection[Any], job_id: UUID) -> Job:
    """The job once it ended (completed, rolled back, failed, cancelled)."""
    while True:
        job = await get_job(conn, job_id)
        if job.is_finished:
            return job
        await asyncio.sleep(0.1)
