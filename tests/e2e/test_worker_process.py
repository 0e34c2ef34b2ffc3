"""The real `exportd worker` process: systemd notifications, SIGKILL, SIGTERM
drains, database loss and restarts, start-up errors."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from daemon.db.embedded import EmbeddedPostgres
from daemon.db.migrations import Migrator
from daemon.worker.settle import SHUTDOWN_ERROR
from tests.conftest import TEST_SERVER_OPTIONS
from tests.e2e.processes import (
    EXPORTD,
    NotifySocket,
    create,
    outcomes,
    packages,
    poll_until,
    status_of,
    wait_status,
    worker,
    worker_env,
)

pytestmark = pytest.mark.slow


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
            # The job runs on the first worker, the second is ready: SIGTERM
            # mid-job, about 4 s of the job (> 1.5 s) left to drain.
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
        log = tmp_path / "a.log"
        with worker(env, tmp_path, "a") as proc:
            server.stop()
            # The database comes back only once the worker has noticed it gone.
            poll_until(
                lambda: "worker.reconnect" in log.read_text(),
                "the worker logging the lost connection",
            )
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


def test_invalid_exports_file_stops_the_worker_naming_kind_and_field(
    db_url: str, tmp_path: Path
) -> None:
    exports = tmp_path / "exports.toml"
    exports.write_text(
        '[exports.orders]\nformat = "xml"\n[[exports.orders.queries]]\n'
        'name = "o"\nsql = "SELECT 1"\n'
    )
    env = worker_env(db_url, tmp_path / "packages", EXPORTD_EXPORTS_FILE=str(exports))
    result = subprocess.run(
        [EXPORTD, "worker"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        "exportd: configuration error: EXPORTD_EXPORTS_FILE: exports.orders.format:"
    )
