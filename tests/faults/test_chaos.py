"""Chaos soak: three `exportd worker` processes and `exportd web` while a
worker is SIGKILLed every couple of seconds and restarted, and exports of
every sort are created through the API (fast, multi-step, large, failing
then succeeding, always failing, cancelled mid-way).

After quiescence: every job is final, no run used more attempts than it was
allowed, every attempt is accounted for, every completed job has exactly one
package whose sha256 matches its row and whose manifest names it, and after
a sweep no orphan, temp file or work directory is left.

`make test` runs EXPORTD_SOAK_JOBS=100 (the default); `make soak` 1000.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from daemon.maintenance.cleanup import Cleanup
from daemon.storage.local import LocalStorage
from tests.api_helpers import SECRET, bearer
from tests.e2e.processes import EXPORTD, poll_until, web, worker_env
from tests.helpers import fast_settings

JOBS = int(os.environ.get("EXPORTD_SOAK_JOBS", "100"))
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120 + 2 * JOBS)]
WORKERS = 3
KILL_EVERY_SECONDS = 1.0
FINAL = ("completed", "failed", "rolled_back", "cancelled")


class WorkerFleet:
    """N `exportd worker` processes; one can be SIGKILLed and replaced."""

    def __init__(self, env: dict[str, str], logs: Path, size: int) -> None:
        self.env = env
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started = 0
        self.kills = 0
        for _ in range(size):
            self.procs.append(self._start())

    def _start(self) -> subprocess.Popen[bytes]:
        self.started += 1
        with (self.logs / f"worker-{self.started}.log").open("wb") as log:
            # The child keeps its own copy of the descriptor.
            return subprocess.Popen([EXPORTD, "worker"], env=self.env, stdout=log, stderr=log)

    def kill_one(self, rng: random.Random) -> None:
        index = rng.randrange(len(self.procs))
        victim = self.procs[index]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.kills += 1
        self.procs[index] = self._start()

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def fleet(env: dict[str, str], logs: Path) -> Iterator[WorkerFleet]:
    workers = WorkerFleet(env, logs, WORKERS)
    try:
        yield workers
    finally:
        workers.stop()


def mix(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """The exports to create: a fixed, seeded mixture."""
    choices: list[tuple[float, dict[str, Any]]] = [
        (0.25, {"kind": "noop"}),
        (0.30, {"kind": "three-steps", "params": {"pause": 0.3}}),
        (0.15, {"kind": "blob", "params": {"size": 200_000}}),
        (0.10, {"kind": "flaky", "params": {"fail_times": 1}}),
        (0.05, {"kind": "rollback-fails", "max_attempts": 2}),
        (0.15, {"kind": "slow", "params": {"seconds": 3.0}}),
    ]
    weights = [w for w, _ in choices]
    return [dict(rng.choices([c for _, c in choices], weights)[0]) for _ in range(n)]


def statuses(db_url: str) -> dict[str, int]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT status::text, count(*) FROM exportd.jobs GROUP BY 1").fetchall()
    return {str(s): int(n) for s, n in rows}


def started(db_url: str, job_ids: list[str]) -> int:
    """How many of `job_ids` have started (running now, or finished)."""
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM exportd.jobs WHERE job_id = ANY(%s::uuid[])"
            " AND started_at IS NOT NULL",
            (job_ids,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_chaos_soak(db_url: str, tmp_path: Path) -> None:
    rng = random.Random(20261123)  # noqa: S311 - a reproducible schedule, not a secret
    storage = tmp_path / "packages"
    env = worker_env(
        db_url,
        storage,
        EXPORTD_JWT_SECRET=SECRET,
        EXPORTD_RATE_LIMIT="off",
        EXPORTD_WORKER_CONCURRENCY="2",
        EXPORTD_CLEANUP_INTERVAL_SECONDS="3600",
    )
    wanted = mix(rng, JOBS)
    created: list[tuple[str, dict[str, Any]]] = []
    with fleet(env, tmp_path) as workers, web(env, tmp_path) as base:
        client = httpx.Client(base_url=base, headers=bearer(), timeout=30)
        last_kill = time.monotonic()
        for body in wanted:
            response = client.post("/api/v1/jobs", json=body)
            assert response.status_code == 202, response.text
            created.append((response.json()["data"]["job_id"], body))
            if time.monotonic() - last_kill > KILL_EVERY_SECONDS:
                workers.kill_one(rng)
                last_kill = time.monotonic()
        # Cancel the slow ones, some still pending, some running: once one runs.
        slow = [job_id for job_id, body in created if body["kind"] == "slow"]
        if slow:
            poll_until(lambda: started(db_url, slow) > 0, "a slow job starting", timeout=60)
        for job_id in slow:
            answer = client.post(f"/api/v1/jobs/{job_id}/cancel")
            assert answer.status_code in (202, 409), answer.text
        # Keep killing while work remains, then let it settle.
        deadline = time.monotonic() + 60 + JOBS * 0.5
        while sum(n for s, n in statuses(db_url).items() if s not in FINAL):
            assert time.monotonic() < deadline, f"not quiescent: {statuses(db_url)}"
            if time.monotonic() - last_kill > KILL_EVERY_SECONDS and workers.kills < JOBS // 5:
                workers.kill_one(rng)
                last_kill = time.monotonic()
            time.sleep(0.2)
        client.close()
        assert workers.kills >= 3
    check_invariants(db_url, storage, created)


def check_invariants(db_url: str, storage: Path, created: list[tuple[str, dict[str, Any]]]) -> None:
    with psycopg.connect(db_url) as conn:
        jobs = {
            str(r[0]): r[1:]
            for r in conn.execute(
                "SELECT job_id, status::text, run, attempts, max_attempts, package_path,"
                "       package_sha256, package_size_bytes FROM exportd.jobs"
            ).fetchall()
        }
        attempts = conn.execute(
            "SELECT job_id, run, count(*), count(*) FILTER (WHERE finished_at IS NULL),"
            "       count(*) FILTER (WHERE outcome = 'lost')"
            "  FROM exportd.job_attempts GROUP BY job_id, run"
        ).fetchall()
    assert len(jobs) == len(created)
    # Every job is final.
    assert {status for status, *_ in jobs.values()} <= set(FINAL)
    per_run = {(str(j), run): (n, open_, lost) for j, run, n, open_, lost in attempts}
    for job_id, (status, run, attempts_now, max_attempts, path, sha, size) in jobs.items():
        n, still_open, _lost = per_run.get((job_id, run), (0, 0, 0))
        # No run used more attempts than allowed; every start is a closed row.
        assert n <= max_attempts, (job_id, n, max_attempts)
        assert still_open == 0, job_id
        assert attempts_now == n, (job_id, attempts_now, n)
        if status == "completed":
            assert path is not None
            package = storage / path
            assert hashlib.sha256(package.read_bytes()).hexdigest() == sha
            assert package.stat().st_size == size
            with tarfile.open(package) as tar:
                member = next(m for m in tar.getmembers() if m.name.endswith("/manifest.json"))
                extracted = tar.extractfile(member)
                assert extracted is not None
                assert json.load(extracted)["job_id"] == job_id
        else:
            assert path is None
    # What each kind must end as. A run whose attempts were used up by
    # SIGKILLs (lost attempts) may end failed instead: that is the contract.
    for job_id, body in created:
        status = jobs[job_id][0]
        lost = per_run.get((job_id, jobs[job_id][1]), (0, 0, 0))[2]
        if body["kind"] in ("noop", "blob", "three-steps", "flaky"):
            assert status == "completed" or (status == "failed" and lost > 0), (job_id, status)
        elif body["kind"] == "rollback-fails":
            assert status in ("failed", "rolled_back"), (job_id, status)
        else:  # slow, cancelled while pending or running (or done before the cancel)
            assert status in ("cancelled", "completed") or lost > 0, (job_id, status)
    # Exactly one package per completed job, nothing else after a sweep.
    live = {row[4] for row in jobs.values() if row[4] is not None}
    settings = fast_settings(storage.parent, storage_dir=storage, orphan_grace_seconds=0)

    async def sweep() -> None:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            report = await Cleanup(settings, LocalStorage(storage)).run(
                conn, now=datetime.now(UTC) + timedelta(seconds=1)
            )
            assert report.failures == 0

    asyncio.run(sweep())
    files = {
        p.relative_to(storage).as_posix()
        for p in storage.rglob("*")
        if p.is_file() or p.is_symlink()
    }
    assert files == live
    for scratch in (".work", ".tmp"):
        assert not list((storage / scratch).glob("*")), scratch
