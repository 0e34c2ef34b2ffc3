"""The real `exportd worker` process: systemd notifications, SIGKILL, SIGTERM
drains, database loss and restarts, start-up errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from daemon.embedded import EmbeddedPostgres
from daemon.migrations import Migrator
from daemon.queue import SHUTDOWN_ERROR
from tests.conftest import TEST_SERVER_OPTIONS

EXPORTD = str(Path(sys.executable).with_name("exportd"))
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def worker_env(db_url: str, storage: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPORTD_", "NOTIFY_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        EXPORTD_DATABASE_URL=db_url,
        EXPORTD_STORAGE_DIR=str(storage),
        EXPORTD_KINDS="tests.kinds_for_tests",
        EXPORTD_HEARTBEAT_SECONDS="0.5",
        EXPORTD_STALLED_AFTER_SECONDS="1.5",
        EXPORTD_POLL_SECONDS="0.2",
        EXPORTD_RETRY_BASE_SECONDS="0.05",
        EXPORTD_RETRY_MAX_SECONDS="0.2",
        EXPORTD_SHUTDOWN_GRACE_SECONDS="20",
        EXPORTD_WORKER_CONCURRENCY="2",
    )
    env.update(extra)
    return env


class NotifySocket:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def wait_for(self, message: str, timeout: float = 30, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.messages.count(message) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {message!r} within {timeout} s: {self.messages}")
            self.sock.settimeout(remaining)
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def close(self) -> None:
        self.sock.close()


@contextmanager
def worker(env: dict[str, str], tmp_path: Path, name: str) -> Iterator[subprocess.Popen[str]]:
    """Start `exportd worker`, wait for READY=1, and make sure it is gone afterwards."""
    notify = NotifySocket(tmp_path / f"{name}.sock")
    log = (tmp_path / f"{name}.log").open("w")
    proc = subprocess.Popen(
        [EXPORTD, "worker"],
        env={**env, "NOTIFY_SOCKET": str(notify.path)},
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        notify.wait_for("READY=1")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        notify.close()
        log.close()


def create(db_url: str, kind: str, **params: Any) -> UUID:
    max_attempts = params.pop("max_attempts", 3)
    result = subprocess.run(
        [EXPORTD, "export", kind, "--owner", "alice", "--max-attempts", str(max_attempts)]
        + [f"--param={k}={v}" for k, v in params.items()],
        env=worker_env(db_url, Path("/nonexistent")),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return UUID(result.stdout.split()[2])


def status_of(db_url: str, job_id: UUID) -> tuple[str, int]:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT status::text, attempts FROM exportd.jobs WHERE job_id = %s", (job_id,)
        ).fetchone()
        assert row is not None
        return str(row[0]), int(row[1])


def wait_status(db_url: str, job_id: UUID, *wanted: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status, _ = status_of(db_url, job_id)
        if status in wanted:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"job is {status}, wanted {wanted}")
        time.sleep(0.05)


def outcomes(db_url: str, job_id: UUID) -> list[tuple[str, str | None]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT outcome::text, error FROM exportd.job_attempts WHERE job_id = %s "
            "ORDER BY run, attempt",
            (job_id,),
        ).fetchall()
    return [(str(r[0]), r[1]) for r in rows]


def packages(storage: Path) -> list[Path]:
    return sorted(p for p in storage.rglob("*.tar.gz") if ".tmp" not in p.parts)


def test_systemd_notifications_and_clean_sigterm(db_url: str, tmp_path: Path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    env = worker_env(db_url, tmp_path / "packages", NOTIFY_SOCKET=str(notify.path))
    env["WATCHDOG_USEC"] = "400000"  # → WATCHDOG=1 every 0.2 s
    proc = subprocess.Popen([EXPORTD, "worker"], env=env, stderr=subprocess.DEVNULL)
    try:
        notify.wait_for("READY=1")
        notify.wait_for("WATCHDOG=1", timeout=5, count=3)
        proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1", timeout=10)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()


def test_sigkill_mid_job_is_rescued_by_another_worker(db_url: str, tmp_path: Path) -> None:
    storage = tmp_path / "packages"
    env = worker_env(db_url, storage)
    retried = create(db_url, "slow", seconds=2, max_attempts=3)
    exhausted = create(db_url, "slow", seconds=2, max_attempts=1)
    with worker(env, tmp_path, "a") as first:
        wait_status(db_url, retried, "in_progress")
        wait_status(db_url, exhausted, "in_progress")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    with worker(env, tmp_path, "b"):
        assert wait_status(db_url, retried, "completed", "failed", timeout=60) == "completed"
        assert wait_status(db_url, exhausted, "completed", "failed", timeout=60) == "failed"
    assert [o for o, _ in outcomes(db_url, retried)] == ["lost", "succeeded"]
    assert [o for o, _ in outcomes(db_url, exhausted)] == ["lost"]
    assert status_of(db_url, exhausted) == ("failed", 1)
    assert len(packages(storage)) == 1  # the completed job's, and only it


def test_sigterm_drains_while_another_worker_waits(db_url: str, tmp_path: Path) -> None:
    """The job outlives the stalled threshold (1.5 s) during the drain: without
    heartbeats while draining, the second worker would rescue and re-run it."""
    storage = tmp_path / "packages"
    env = worker_env(db_url, storage)
    job = create(db_url, "busy", seconds=5)
    with worker(env, tmp_path, "a") as first:
        wait_status(db_url, job, "in_progress")
        with worker(env, tmp_path, "b"):
            time.sleep(1.0)  # the job is running on the first worker: SIGTERM mid-job
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=30) == 0
            assert status_of(db_url, job) == ("completed", 1)
    assert outcomes(db_url, job) == [("succeeded", None)]
    assert len(packages(storage)) == 1


def test_sigterm_past_the_grace_period_rolls_back_and_retries(db_url: str, tmp_path: Path) -> None:
    storage = tmp_path / "packages"
    env = worker_env(db_url, storage, EXPORTD_SHUTDOWN_GRACE_SECONDS="0.5")
    job = create(db_url, "busy", seconds=2)
    with worker(env, tmp_path, "a") as first:
        wait_status(db_url, job, "in_progress")
        started = time.monotonic()
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
        assert time.monotonic() - started < 10
    assert status_of(db_url, job)[0] == "pending"
    assert outcomes(db_url, job) == [("cancelled", SHUTDOWN_ERROR)]
    assert packages(storage) == []
    with worker(env, tmp_path, "b"):
        assert wait_status(db_url, job, "completed", timeout=30) == "completed"


def test_worker_survives_terminated_connections(db_url: str, tmp_path: Path) -> None:
    env = worker_env(db_url, tmp_path / "packages")
    with worker(env, tmp_path, "a") as proc, psycopg.connect(db_url, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name LIKE 'exportd-worker%%'"
        ).fetchone()
        assert killed is not None and killed[0] >= 1
        job = create(db_url, "noop")
        assert wait_status(db_url, job, "completed", timeout=60) == "completed"
        assert proc.poll() is None


def test_worker_survives_a_postgres_restart(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg", server_options=TEST_SERVER_OPTIONS)
    running = server.start()
    try:
        url = running.url()
        with psycopg.connect(url, autocommit=True) as conn:
            Migrator(conn).upgrade()
        env = worker_env(url, tmp_path / "packages")
        with worker(env, tmp_path, "a") as proc:
            server.stop()
            time.sleep(1.0)  # the worker notices and starts reconnecting
            server.start()
            job = create(url, "noop")
            assert wait_status(url, job, "completed", timeout=90) == "completed"
            assert proc.poll() is None
    finally:
        server.stop()


def test_unreachable_database_at_start_is_one_line(tmp_path: Path) -> None:
    env = worker_env("postgresql://exportd@127.0.0.1:9/exportd", tmp_path / "packages")
    started = time.monotonic()
    result = subprocess.run(
        [EXPORTD, "worker"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert time.monotonic() - started < 15
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("exportd: cannot connect to database exportd on 127.0.0.1:9")


def test_unmigrated_database_at_start_is_one_line(empty_db_url: str, tmp_path: Path) -> None:
    env = worker_env(empty_db_url, tmp_path / "packages")
    result = subprocess.run(
        [EXPORTD, "worker"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 1
    assert (
        result.stderr == "exportd: the database schema is not up to date; run `exportd migrate`\n"
    )
