"""Queue benchmarks: exportd (full domain tracking) vs raw procrastinate vs
pgqueuer, on one PostgreSQL server, in one process, alternating systems.

Run: .venv/bin/python -m bench.queue  (the defaults are `make bench`'s: about
6 minutes on a 2-core machine; medians of the rounds, with min-max)

- drain: N no-op jobs inserted first (procrastinate: `batch_defer_async`;
  pgqueuer: its list `enqueue`; exportd: its create statement N times in
  one pipeline, as exportd has no batch API), then timed until the queue is
  empty, with one worker at concurrency 1 and 10; commits and WAL bytes per
  job from `pg_stat_database` / `pg_stat_wal`, WAL fsyncs per job from
  `pg_stat_io`, and CPU per job of this process and of the PostgreSQL
  server (what bounds a drain on a 2-core machine); with `synchronous_commit`
  on and off. Tables are truncated and vacuumed between runs.
- pickup latency at idle: one job every 50 ms into an idle, listening worker;
  started - enqueued, p50/p95/p99.
- sustained arrival: single enqueues at a fixed rate for `--sustain-seconds`
  at each rate, sent by a process of their own for every system (as the web
  process or the deferring application does in production; see
  `enqueue_at_rate`; `--enqueue-in-worker` for the earlier harness, which
  enqueued on the worker's event loop); the highest rate whose p99 latency
  (started - enqueued, on the system-wide monotonic clock) stays under 1 s.
- time to ready (exportd only): a built-in SQL export of 100 rows created
  with the API's action (`daemon.actions.create_export`) every 1/20 s into
  a listening worker at concurrency 10; `completed_at - created_at` of each
  row (both the database's clock), p50/p99.

Figures are recorded with `bench.results.record` (`queue_*`, `pickup_*`,
`time_to_ready_*`).

Workers run in this process (procrastinate's `Worker`, exportd's runtime on
the same `Worker`, pgqueuer's `QueueManager`), so the figures compare queue
mechanics, not process start-up; so do the enqueues, except those of the
sustained arrival.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import psycopg
from pgqueuer.db import PsycopgDriver
from pgqueuer.models import Job as PgqJob
from pgqueuer.qm import QueueManager
from pgqueuer.queries import Queries
from pgqueuer.types import QueueExecutionMode
from procrastinate import App, PsycopgConnector
from procrastinate.worker import Worker

from bench.results import record
from daemon.actions import ExportRequest, create_export
from daemon.config import Settings
from daemon.db import jobs as job_store
from daemon.db.embedded import EmbeddedPostgres
from daemon.db.migrations import Migrator
from daemon.kinds.context import ExportContext
from daemon.kinds.exports_file import load_exports_file
from daemon.kinds.params import Param
from daemon.kinds.registry import Kind, KindRegistry
from daemon.models import NewJob
from daemon.storage.local import LocalStorage
from daemon.worker.runtime import ExportRuntime

SYSTEMS = ("procrastinate", "exportd", "pgqueuer")


# -- the three systems ---------------------------------------------------------------------


@dataclass
class Probe:
    """Start times recorded by the no-op job bodies (latency runs)."""

    started: dict[str, float] = field(default_factory=dict)
    done: int = 0


def bench_kinds(probe: Probe) -> KindRegistry:
    kind = Kind("bench-noop", params={"key": Param("text", default="")})

    @kind.step("Nothing")
    async def nothing(ctx: ExportContext) -> None:
        if ctx.params["key"]:
            probe.started[ctx.params["key"]] = time.monotonic()
        probe.done += 1

    registry = KindRegistry()
    registry.register(kind)
    return registry


class System(Protocol):
    name: str
    url: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def insert(self, n: int) -> None: ...
    async def drain(self, concurrency: int) -> None: ...
    async def enqueue_one(self, key: str) -> None: ...
    def worker(self, concurrency: int) -> Callable[[], Coroutine[Any, Any, None]]: ...
    async def stop(self) -> None: ...
    def clear_files(self) -> None: ...


class Procrastinate:
    name = "procrastinate"

    def __init__(self, url: str, probe: Probe) -> None:
        self.app = App(connector=PsycopgConnector(conninfo=url, max_size=20))
        self.url = url
        self.probe = probe

        @self.app.task(name="bench.noop", queue="bench")
        async def noop(key: str = "") -> None:
            if key:
                probe.started[key] = time.monotonic()
            probe.done += 1

        self.task = noop
        self._worker: Worker | None = None

    async def open(self) -> None:
        await self.app.open_async()

    async def close(self) -> None:
        await self.app.close_async()

    async def insert(self, n: int) -> None:
        for start in range(0, n, 5000):
            await self.task.batch_defer_async(*({} for _ in range(min(5000, n - start))))

    def _new_worker(self, concurrency: int, *, wait: bool) -> Worker:
        return Worker(
            self.app,
            concurrency=concurrency,
            wait=wait,
            install_signal_handlers=False,
            listen_notify=wait,
            update_heartbeat_interval=3600 if not wait else 10,
            fetch_job_polling_interval=5.0,
        )

    async def drain(self, concurrency: int) -> None:
        await self._new_worker(concurrency, wait=False).run()

    async def enqueue_one(self, key: str) -> None:
        await self.task.defer_async(key=key)

    def worker(self, concurrency: int) -> Callable[[], Coroutine[Any, Any, None]]:
        self._worker = self._new_worker(concurrency, wait=True)
        return self._worker.run

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop()

    def clear_files(self) -> None:
        """Nothing on disk."""


class Exportd(Procrastinate):
    name = "exportd"

    def __init__(self, url: str, probe: Probe, work: Path) -> None:
        self.probe = probe
        self.registry = bench_kinds(probe)
        settings = Settings(
            data_dir=work / "data",
            storage_dir=work / "packages",
            heartbeat_seconds=10,
            stalled_after_seconds=3600,
            # Every job is one owner's: a cap below the concurrency would
            # measure the cap, not the queue. Above it, the fair fetch still
            # takes the owner's lock and counts on every job.
            owner_max_running=1000,
        )
        self.runtime = ExportRuntime(settings, url, self.registry, pool_size=20)
        self.runtime.storage.ensure()
        self.app = self.runtime.app
        self.url = url
        self._worker = None
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def open(self) -> None:
        await super().open()
        self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
        await super().close()

    async def insert(self, n: int) -> None:
        assert self._conn is not None
        async with self._conn.pipeline():
            for _ in range(n):
                await job_store.create_job(
                    self._conn,
                    NewJob(kind="bench-noop", owner_id="bench", params={"key": ""}),
                    queue="exports",
                    task="exportd.run_export",
                )

    def clear_files(self) -> None:
        """Packages of the previous run: their rows were truncated, so to the
        retention sweep they are tens of thousands of orphans (not a state a
        running system is ever in)."""
        storage = self.runtime.storage
        assert isinstance(storage, LocalStorage), "the queue benchmark runs on local storage"
        shutil.rmtree(storage.root, ignore_errors=True)
        self.runtime.storage.ensure()

    async def enqueue_one(self, key: str) -> None:
        assert self._conn is not None
        await job_store.create_job(
            self._conn,
            NewJob(kind="bench-noop", owner_id="bench", params={"key": key}),
            queue="exports",
            task="exportd.run_export",
        )


class Pgqueuer:
    name = "pgqueuer"

    def __init__(self, url: str, probe: Probe) -> None:
        self.url = url
        self.probe = probe
        self._qm: QueueManager | None = None
        self._conns: list[psycopg.AsyncConnection[Any]] = []

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        self._conns.append(conn)
        return conn

    async def open(self) -> None:
        self.queries = Queries(PsycopgDriver(await self._connection()))

    async def close(self) -> None:
        for conn in self._conns:
            await conn.close()

    async def insert(self, n: int) -> None:
        for start in range(0, n, 5000):
            size = min(5000, n - start)
            await self.queries.enqueue(["bench.noop"] * size, [None] * size, [0] * size)

    def _manager(self, driver: PsycopgDriver) -> QueueManager:
        qm = QueueManager(Queries(driver))
        probe = self.probe

        @qm.entrypoint("bench.noop")
        async def noop(job: PgqJob) -> None:
            if job.payload:
                probe.started[job.payload.decode()] = time.monotonic()
            probe.done += 1

        return qm

    async def drain(self, concurrency: int) -> None:
        # pgqueuer's unit of concurrency is the batch it dequeues (a
        # per-entrypoint limit of 1 stalls on its dequeue timeout).
        qm = self._manager(PsycopgDriver(await self._connection()))
        await qm.run(
            mode=QueueExecutionMode.drain,
            batch_size=concurrency,
            dequeue_timeout=timedelta(seconds=0.2),
        )

    async def enqueue_one(self, key: str) -> None:
        await self.queries.enqueue("bench.noop", key.encode(), 0)

    def worker(self, concurrency: int) -> Callable[[], Coroutine[Any, Any, None]]:
        async def run() -> None:
            self._qm = self._manager(PsycopgDriver(await self._connection()))
            await self._qm.run(batch_size=concurrency)

        return run

    async def stop(self) -> None:
        if self._qm is not None:
            self._qm.shutdown.set()

    def clear_files(self) -> None:
        """Nothing on disk."""


# -- measurements ----------------------------------------------------------------------------


async def server_counters(conn: psycopg.AsyncConnection[Any]) -> tuple[int, int, int]:
    """Commits, WAL bytes and WAL fsyncs of the server so far."""
    cur = await conn.execute(
        "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),"
        "       (SELECT wal_bytes FROM pg_stat_wal),"
        "       (SELECT coalesce(sum(fsyncs), 0) FROM pg_stat_io WHERE object = 'wal')"
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def own_cpu_seconds() -> float:
    """CPU time of this process, every thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_cpu_seconds(postmaster: int) -> float:
    """CPU time of the PostgreSQL server: the postmaster and its children
    (the backends serving the systems, and the WAL writer, checkpointer…)."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(entry.name) == postmaster or int(fields[1]) == postmaster:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


async def reset(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute(
        "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_periodic_defers,"
        " exportd.jobs, pgqueuer, pgqueuer_log, pgqueuer_statistics CASCADE"
    )
    for table in ("procrastinate_jobs", "exportd.jobs", "pgqueuer"):
        await conn.execute(f"VACUUM ANALYZE {table}")


async def print_function_stats(conn: psycopg.AsyncConnection[Any], jobs: int) -> None:
    """Server time per job in each plpgsql function over all the drains
    (`track_functions = pl`; both systems' functions: their names differ),
    most expensive first (profiling)."""
    await asyncio.sleep(0.6)  # backends report their counters at most every 0.5 s
    cur = await conn.execute(
        "SELECT schemaname || '.' || funcname, calls, total_time, self_time"
        " FROM pg_stat_user_functions ORDER BY self_time DESC"
    )
    for name, calls, total, own in await cur.fetchall():
        print(
            f"function {name:45} {calls / jobs:5.2f} calls/job"
            f" total {total / jobs:6.3f} self {own / jobs:6.3f} ms/job",
            file=sys.stderr,
            flush=True,
        )


@dataclass
class DrainResult:
    jobs_per_second: float
    commits_per_job: float
    wal_bytes_per_job: float
    wal_fsyncs_per_job: float
    # CPU milliseconds per job: this process (the worker), the server.
    worker_cpu_ms_per_job: float
    server_cpu_ms_per_job: float


async def drain_once(
    system: System, conn: psycopg.AsyncConnection[Any], n: int, concurrency: int, postmaster: int
) -> DrainResult:
    await reset(conn)
    system.clear_files()
    await system.insert(n)
    await conn.execute("SELECT pg_stat_force_next_flush()")
    commits0, wal0, fsyncs0 = await server_counters(conn)
    own0, server0 = own_cpu_seconds(), server_cpu_seconds(postmaster)
    started = time.perf_counter()
    await system.drain(concurrency)
    seconds = time.perf_counter() - started
    own1, server1 = own_cpu_seconds(), server_cpu_seconds(postmaster)
    await asyncio.sleep(0.6)  # pg_stat counters are flushed about every 0.5 s
    await conn.execute("SELECT pg_stat_force_next_flush()")
    commits1, wal1, fsyncs1 = await server_counters(conn)
    return DrainResult(
        n / seconds,
        (commits1 - commits0) / n,
        (wal1 - wal0) / n,
        (fsyncs1 - fsyncs0) / n,
        (own1 - own0) * 1000 / n,
        (server1 - server0) * 1000 / n,
    )


async def latencies(
    system: System,
    probe: Probe,
    samples: int,
    interval: float,
    concurrency: int = 10,
    enqueuer: ProcessPoolExecutor | None = None,
) -> list[float]:
    """Enqueue one job every `interval` s into an idle worker; seconds to start.

    With `enqueuer`, the jobs are enqueued by that other process (see
    `enqueue_at_rate`), else by this one, on the worker's event loop."""
    probe.started.clear()
    run = system.worker(concurrency)
    task = asyncio.create_task(run())
    await asyncio.sleep(1.0)  # the worker is listening and idle
    if enqueuer is None:
        sent = await _enqueue(system, samples, interval)
    else:
        sent = await asyncio.get_running_loop().run_in_executor(
            enqueuer, enqueue_at_rate, system.name, system.url, samples, interval
        )
    if len(sent) > 1:
        # The offered rate: an enqueuer that shares the worker's loop falls
        # behind its schedule when the worker is busy, and offers less.
        span = max(sent.values()) - min(sent.values())
        print(f"  sent {len(sent) / max(span, 1e-9):.0f}/s", file=sys.stderr, flush=True)
    deadline = time.monotonic() + 30
    while len(probe.started) < samples and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    await system.stop()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(task, timeout=30)
    return [probe.started[k] - sent[k] for k in sent if k in probe.started] + [
        float("inf") for k in sent if k not in probe.started
    ]


async def _enqueue(system: System, samples: int, interval: float) -> dict[str, float]:
    """Single enqueues at a fixed rate; when each was sent (`time.monotonic`,
    the system-wide clock: the starts may be stamped by another process)."""
    sent: dict[str, float] = {}
    next_at = time.monotonic()
    for i in range(samples):
        key = f"k{i}"
        sent[key] = time.monotonic()
        await system.enqueue_one(key)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    return sent


def enqueue_at_rate(name: str, url: str, samples: int, interval: float) -> dict[str, float]:
    """The sustained arrival's enqueuer, in a process of its own (for every
    system alike).

    In production the jobs of all three systems are created by other
    processes than the worker — exportd's by the web process (often on another
    host), procrastinate's and pgqueuer's by the application that defers
    them. Enqueuing on the worker's own event loop charges each enqueue's
    round trip and CPU to the worker's one core and delays its jobs behind
    the enqueuer's turns: at a few hundred arrivals per second on a 2-core
    machine that measures the enqueuer as much as the queue. Same enqueue
    statement as in-process (`System.enqueue_one`), same clock, same rates.
    """
    return asyncio.run(_enqueue_from(name, url, samples, interval))


async def _enqueue_from(name: str, url: str, samples: int, interval: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="exportd-bench-enqueue-") as work:
        system = _system(name, url, Probe(), Path(work))
        await system.open()
        try:
            return await _enqueue(system, samples, interval)
        finally:
            await system.close()


def _system(name: str, url: str, probe: Probe, work: Path) -> System:
    if name == "procrastinate":
        return Procrastinate(url, probe)
    if name == "exportd":
        return Exportd(url, probe, work)
    return Pgqueuer(url, probe)


def _ready_enqueuer() -> ProcessPoolExecutor:
    """A started enqueuer process (spawned: no copy of this process's loop,
    pools or connections), its imports done before the first rate runs."""
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    pool.submit(int).result()
    return pool


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


READY_KIND = "ready100"
READY_EXPORTS = """
[exports.ready100]
[[exports.ready100.queries]]
name = "rows"
sql = "SELECT i AS id, md5(i::text) AS label, i * 1.5 AS amount FROM generate_series(1, 100) AS i"
"""


async def time_to_ready(
    url: str, work: Path, samples: int, rate: float
) -> tuple[list[float], list[float]]:
    """Seconds from `created_at` to `completed_at` of 100-row SQL exports
    created one every 1/`rate` s (the API's create action) into an idle,
    listening exportd worker at concurrency 10: queue pickup, the COPY, the
    package (tar.gz, manifest, sha256, fsync, rename) and the settle. Also
    the attempt alone (`started_at` to `completed_at`), the rest being the
    pickup."""
    exports = work / "ready-exports.toml"
    exports.write_text(READY_EXPORTS)
    registry = KindRegistry(load_exports_file(exports, default_database_url=url))
    settings = Settings(
        data_dir=work / "ready-data",
        storage_dir=work / "ready-packages",
        heartbeat_seconds=10,
        stalled_after_seconds=3600,
    )
    runtime = ExportRuntime(settings, url, registry, pool_size=14)
    runtime.storage.ensure()
    await runtime.app.open_async()
    worker = Worker(
        runtime.app,
        concurrency=10,
        wait=True,
        listen_notify=True,
        install_signal_handlers=False,
        update_heartbeat_interval=10,
        fetch_job_polling_interval=5.0,
    )
    task = asyncio.create_task(worker.run())
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await asyncio.sleep(1.0)  # the worker is listening and idle
            next_at = time.perf_counter()
            for _ in range(samples):
                await create_export(
                    conn, registry, ExportRequest(kind=READY_KIND), owner_id="bench"
                )
                next_at += 1.0 / rate
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            query = (
                "SELECT extract(epoch FROM completed_at - created_at)::float8,"
                "       extract(epoch FROM completed_at - started_at)::float8"
                "  FROM exportd.jobs WHERE kind = %s AND status = 'completed'"
            )
            deadline = time.perf_counter() + 30
            while time.perf_counter() < deadline:
                cur = await conn.execute(query, (READY_KIND,))
                rows = await cur.fetchall()
                done, attempts = [float(r[0]) for r in rows], [float(r[1]) for r in rows]
                if len(done) >= samples:
                    break
                await asyncio.sleep(0.05)
    finally:
        worker.stop()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(task, timeout=30)
        await runtime.app.close_async()
    return done + [float("inf")] * (samples - len(done)), attempts


# -- main ----------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    results: dict[str, Any] = {
        "drain": [],
        "latency": {},
        "sustained": {},
        "ready": [],
        "ready_attempt": [],
    }
    with EmbeddedPostgres(base / "pg") as server:
        url = server.url()
        postmaster = int((base / "pg" / "postmaster.pid").read_text().split()[0])
        with psycopg.connect(url, autocommit=True) as sync:
            Migrator(sync).upgrade()
            facts = sync.execute(
                "SELECT version(), current_setting('fsync'), current_setting('synchronous_commit')"
            ).fetchone()
        assert facts is not None
        results["server"] = {"version": facts[0], "fsync": facts[1]}
        probe = Probe()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            pgq = Pgqueuer(url, probe)
            await pgq.open()
            await pgq.queries.install()
            every: list[System] = [Procrastinate(url, probe), Exportd(url, probe, base), pgq]
            for system in every[:2]:
                await system.open()  # pgqueuer's is open: it installed its schema
            systems = [s for s in every if s.name in args.systems]
            try:
                if args.function_stats:
                    await conn.execute("ALTER SYSTEM SET track_functions = 'pl'")
                    await conn.execute("SELECT pg_reload_conf()")
                    await conn.execute("SELECT pg_stat_reset()")
                for sync_commit in args.synchronous_commit:
                    await conn.execute(f"ALTER SYSTEM SET synchronous_commit = {sync_commit}")
                    await conn.execute("SELECT pg_reload_conf()")
                    await asyncio.sleep(0.2)
                    rounds = args.rounds if sync_commit == "on" else args.off_rounds
                    for concurrency in args.concurrency:
                        for round_ in range(rounds):
                            for system in systems:
                                r = await drain_once(
                                    system, conn, args.jobs, concurrency, postmaster
                                )
                                results["drain"].append(
                                    {
                                        "system": system.name,
                                        "synchronous_commit": sync_commit,
                                        "concurrency": concurrency,
                                        "round": round_,
                                        **r.__dict__,
                                    }
                                )
                                print(
                                    f"drain {system.name:13} sc={sync_commit:3} c={concurrency:2}"
                                    f" {r.jobs_per_second:8.0f} jobs/s"
                                    f" {r.commits_per_job:5.2f} commits/job"
                                    f" {r.wal_bytes_per_job:6.0f} WAL B/job"
                                    f" {r.wal_fsyncs_per_job:4.2f} fsyncs/job"
                                    f" CPU {r.worker_cpu_ms_per_job:5.2f}"
                                    f" + {r.server_cpu_ms_per_job:5.2f} ms/job",
                                    file=sys.stderr,
                                    flush=True,
                                )
                if args.function_stats:
                    await print_function_stats(conn, len(results["drain"]) * args.jobs)
                await conn.execute("ALTER SYSTEM RESET synchronous_commit")
                await conn.execute("SELECT pg_reload_conf()")
                for system in systems:
                    await reset(conn)
                    system.clear_files()
                    values = await latencies(system, probe, args.latency_samples, 0.05)
                    results["latency"][system.name] = values
                    print(
                        f"latency {system.name:13} p50 {pct(values, 50) * 1000:.1f} ms"
                        f" p99 {pct(values, 99) * 1000:.1f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
                enqueuer = None if args.enqueue_in_worker or not args.rates else _ready_enqueuer()
                for rate in args.rates:
                    for system in systems:
                        await reset(conn)
                        system.clear_files()
                        samples = int(rate * args.sustain_seconds)
                        values = await latencies(
                            system, probe, samples, 1.0 / rate, enqueuer=enqueuer
                        )
                        results["sustained"].setdefault(system.name, {})[rate] = {
                            "p50": pct(values, 50),
                            "p99": pct(values, 99),
                        }
                        print(
                            f"sustained {system.name:13} {rate:5}/s p99 {pct(values, 99):.3f} s",
                            file=sys.stderr,
                            flush=True,
                        )
                if enqueuer is not None:
                    enqueuer.shutdown()
                if "exportd" in args.systems and args.ready_samples:
                    await reset(conn)
                    values, attempts = await time_to_ready(
                        url, base, args.ready_samples, args.ready_rate
                    )
                    results["ready"], results["ready_attempt"] = values, attempts
                    print(
                        f"time to ready p50 {pct(values, 50) * 1000:.1f} ms"
                        f" p99 {pct(values, 99) * 1000:.1f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
            finally:
                for system in every:
                    await system.close()
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"Command: `.venv/bin/python -m bench.queue --jobs {args.jobs} --rounds {args.rounds}"
        f" --off-rounds {args.off_rounds} --latency-samples {args.latency_samples}"
        f" --sustain-seconds {args.sustain_seconds} --rates {' '.join(map(str, args.rates))}"
        f" --ready-samples {args.ready_samples}`",
        f"Server: {results['server']['version'].split(' on ')[0]},"
        f" fsync={results['server']['fsync']}",
        "",
        "Drain of pre-inserted no-op jobs, one worker (medians of the rounds; min-max):",
        "",
        "| synchronous_commit | concurrency | system | jobs/s | min-max | commits/job"
        " | WAL bytes/job | WAL fsyncs/job | CPU ms/job (worker + server) | vs procrastinate |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for sc in args.synchronous_commit:
        for c in args.concurrency:
            medians = {}
            for name in args.systems:
                runs = [
                    r
                    for r in results["drain"]
                    if r["system"] == name
                    and r["synchronous_commit"] == sc
                    and r["concurrency"] == c
                ]
                if not runs:
                    continue  # no drain rounds (--rounds 0: other measurements only)
                rates = [r["jobs_per_second"] for r in runs]
                medians[name] = statistics.median(rates)
                commits = statistics.median(r["commits_per_job"] for r in runs)
                wal = statistics.median(r["wal_bytes_per_job"] for r in runs)
                fsyncs = statistics.median(r["wal_fsyncs_per_job"] for r in runs)
                own = statistics.median(r["worker_cpu_ms_per_job"] for r in runs)
                server = statistics.median(r["server_cpu_ms_per_job"] for r in runs)
                ratio = (
                    medians[name] / medians["procrastinate"] if "procrastinate" in medians else 1
                )
                spread = f"{min(rates):,.0f}-{max(rates):,.0f}"
                lines.append(
                    f"| {sc} | {c} | {name} | {medians[name]:,.0f} | {spread}"
                    f" | {commits:.2f} | {wal:,.0f} | {fsyncs:.2f} | {own:.2f} + {server:.2f}"
                    f" | {ratio:.2f} |"
                )
    lines += [
        "",
        f"Pickup latency at idle (one job every 50 ms, {args.latency_samples} samples):",
        "",
        "| system | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    for name in args.systems:
        values = results["latency"][name]
        lines.append(
            f"| {name} | {pct(values, 50) * 1000:.1f} | {pct(values, 95) * 1000:.1f}"
            f" | {pct(values, 99) * 1000:.1f} |"
        )
    lines += [
        "",
        f"Sustained arrival ({args.sustain_seconds} s per rate, single enqueues): p99 latency",
        "",
        "| system | "
        + " | ".join(f"{r}/s" for r in args.rates)
        + " | highest rate with p99 < 1 s |",
        "|---|" + "---|" * len(args.rates) + "---|",
    ]
    for name in args.systems:
        per_rate = results["sustained"].get(name, {})
        ok = [r for r in args.rates if per_rate.get(r, {}).get("p99", 99) < 1.0]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{per_rate[r]['p99'] * 1000:,.0f} ms" for r in args.rates)
            + f" | {max(ok) if ok else 'none'} |"
        )
    if results["ready"]:
        values = results["ready"]
        lines += [
            "",
            f"Time to ready: a 100-row SQL export every 1/{args.ready_rate:g} s,"
            f" created_at → completed_at ({len(values)} exports):",
            "",
            "| span | p50 ms | p95 ms | p99 ms | max ms |",
            "|---|---|---|---|---|",
        ]
        spans = [("created → completed", values)]
        if results["ready_attempt"]:
            spans.append(("started → completed (the attempt)", results["ready_attempt"]))
        for label, span in spans:
            lines.append(
                f"| {label} | {pct(span, 50) * 1000:.1f} | {pct(span, 95) * 1000:.1f}"
                f" | {pct(span, 99) * 1000:.1f} | {max(span) * 1000:.1f} |"
            )
    return "\n".join(lines)


def drain_median(
    results: dict[str, Any], name: str, sc: str, c: int, field: str = "jobs_per_second"
) -> float | None:
    runs = [
        r[field]
        for r in results["drain"]
        if r["system"] == name and r["synchronous_commit"] == sc and r["concurrency"] == c
    ]
    return statistics.median(runs) if runs else None


def highest_rate(results: dict[str, Any], name: str, rates: list[int]) -> int:
    """The highest arrival rate whose p99 time to start stayed under 1 s (0: none)."""
    per_rate = results["sustained"].get(name, {})
    return max((r for r in rates if per_rate.get(r, {}).get("p99", 99) < 1.0), default=0)


def figures(
    results: dict[str, Any], args: argparse.Namespace
) -> tuple[dict[str, float], dict[str, Any]]:
    """The stable names of `bench.results`: ratios (exportd vs raw procrastinate,
    same run) and raw figures."""
    ratios: dict[str, float] = {}
    raw: dict[str, Any] = {}
    for sc in args.synchronous_commit:
        suffix = "" if sc == "on" else "_sync_off"
        for c in args.concurrency:
            for name in args.systems:
                rate = drain_median(results, name, sc, c)
                if rate is None:
                    continue
                raw[f"queue_drain_c{c}{suffix}_{name}_jobs_per_s"] = round(rate, 1)
                for counter in (
                    "commits_per_job",
                    "wal_fsyncs_per_job",
                    "worker_cpu_ms_per_job",
                    "server_cpu_ms_per_job",
                ):
                    value = drain_median(results, name, sc, c, counter)
                    assert value is not None
                    raw[f"queue_drain_c{c}{suffix}_{name}_{counter}"] = round(value, 3)
            ours = drain_median(results, "exportd", sc, c)
            theirs = drain_median(results, "procrastinate", sc, c)
            if ours and theirs:
                ratios[f"queue_drain_c{c}{suffix}_vs_procrastinate"] = ours / theirs
        c1, c10 = drain_median(results, "exportd", sc, 1), drain_median(results, "exportd", sc, 10)
        if c1 and c10:
            ratios[f"queue_drain_c10_vs_c1{suffix}"] = c10 / c1
    for name, values in results["latency"].items():
        prefix = "pickup" if name == "exportd" else f"pickup_{name}"
        raw[f"{prefix}_p50_ms"] = round(pct(values, 50) * 1000, 2)
        raw[f"{prefix}_p99_ms"] = round(pct(values, 99) * 1000, 2)
    for name in results["sustained"]:
        raw[f"queue_sustained_rate_{name}"] = highest_rate(results, name, args.rates)
    if {"exportd", "procrastinate"} <= results["sustained"].keys():
        theirs_rate = highest_rate(results, "procrastinate", args.rates)
        ours_rate = highest_rate(results, "exportd", args.rates)
        if theirs_rate:
            ratios["queue_sustained_rate_vs_procrastinate"] = ours_rate / theirs_rate
    if results["ready"]:
        raw["time_to_ready_p50_ms"] = round(pct(results["ready"], 50) * 1000, 2)
        raw["time_to_ready_p99_ms"] = round(pct(results["ready"], 99) * 1000, 2)
    if results["ready_attempt"]:
        raw["time_to_ready_attempt_p50_ms"] = round(pct(results["ready_attempt"], 50) * 1000, 2)
        raw["time_to_ready_attempt_p99_ms"] = round(pct(results["ready_attempt"], 99) * 1000, 2)
    return ratios, raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # The defaults fit `make bench` (about 6 minutes): 4,000 jobs drain in
    # 5-15 s per system, long past the start-up of a worker, and three rounds
    # give a median and a spread.
    parser.add_argument("--jobs", type=int, default=4_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 10], help="drains (profiling)"
    )
    parser.add_argument("--sustain-seconds", type=float, default=5.0)
    parser.add_argument("--rates", type=int, nargs="*", default=[100, 300, 600, 1000])
    parser.add_argument(
        "--ready-samples", type=int, default=200, help="time-to-ready exports (0: skip)"
    )
    parser.add_argument("--ready-rate", type=float, default=20.0, help="exports per second")
    parser.add_argument("--synchronous-commit", nargs="*", default=["on", "off"])
    parser.add_argument(
        "--off-rounds", type=int, default=1, help="rounds with synchronous_commit=off"
    )
    parser.add_argument(
        "--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS), help="(profiling)"
    )
    parser.add_argument(
        "--enqueue-in-worker",
        action="store_true",
        help="sustained arrival: enqueue on the worker's event loop (the earlier harness)",
    )
    parser.add_argument(
        "--function-stats",
        action="store_true",
        help="print server time per job of each plpgsql function over the drains (profiling)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write raw results here")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="exportd-bench-queue-"))
    try:
        results = asyncio.run(run(args, base))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    text = report(results, args)
    print(text)
    ratios, raw = figures(results, args)
    record(ratios=ratios, raw=raw)
    if args.json:
        results["latency"] = {
            k: {"p50": pct(v, 50), "p95": pct(v, 95), "p99": pct(v, 99)}
            for k, v in results["latency"].items()
        }
        args.json.write_text(json.dumps({"results": results, "markdown": text}, indent=2))


if __name__ == "__main__":
    main()
