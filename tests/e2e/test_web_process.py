"""`exportd web` as a process: serves on the configured port, stops cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from daemon.db.embedded import EmbeddedPostgres
from daemon.db.migrations import Migrator
from tests.api_helpers import SECRET, bearer, token
from tests.conftest import TEST_SERVER_OPTIONS
from tests.e2e.processes import EXPORTD, free_port, wait_until_up, web, worker, worker_env

pytestmark = pytest.mark.slow
# How long the database stays down in test_postgres_stopped_then_started, once
# the 503s are checked. The duration is the scenario, not a wait for an effect:
# long enough for the pool's retry delay to have doubled past the request
# timeout (1, 2, 4 … s); it must still recover at once.
DB_OUTAGE_SECONDS = 7.0


def test_web_serves_and_stops_on_sigterm(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = worker_env(db_url, tmp_path / "packages", EXPORTD_JWT_SECRET=SECRET)
    log = (tmp_path / "web.log").open("w")
    with subprocess.Popen(
        [EXPORTD, "web", "--host", "127.0.0.1", "--port", str(port)], env=env, stderr=log
    ) as proc:
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_up(f"{base}/healthz", proc)
            assert httpx.get(f"{base}/readyz").status_code == 200
            created = httpx.post(f"{base}/api/v1/jobs", json={"kind": "noop"}, headers=bearer())
            assert created.status_code == 202
            assert httpx.get(f"{base}/api/v1/jobs", headers=bearer()).status_code == 200
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()


def test_web_refuses_to_start_without_a_secret(db_url: str, tmp_path: Path) -> None:
    env = worker_env(db_url, tmp_path / "packages", EXPORTD_DATA_DIR=str(tmp_path / "data"))
    result = subprocess.run(
        [EXPORTD, "web", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("exportd: configuration error: EXPORTD_JWT_SECRET: not set")


def test_readyz_is_503_until_migrated(empty_db_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = worker_env(empty_db_url, tmp_path / "packages", EXPORTD_JWT_SECRET=SECRET)
    log = (tmp_path / "web.log").open("w")
    with subprocess.Popen([EXPORTD, "web", "--port", str(port)], env=env, stderr=log) as proc:
        try:
            wait_until_up(f"http://127.0.0.1:{port}/healthz", proc)
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
            assert ready.status_code == 503
            assert ready.json()["database"] == "migrations pending"
            subprocess.run([EXPORTD, "migrate"], env=env, check=True, capture_output=True)
            assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            log.close()


def test_curl_follows_a_job_live_until_it_ends(db_url: str, tmp_path: Path) -> None:
    """`curl -N …/events` against `exportd web` while `exportd worker` runs the job."""
    env = worker_env(db_url, tmp_path / "packages", EXPORTD_JWT_SECRET=SECRET)
    with web(env, tmp_path) as base:
        created = httpx.post(
            f"{base}/api/v1/jobs",
            json={"kind": "three-steps", "params": {"pause": 0.3}},
            headers=bearer(),
        )
        job_id = created.json()["data"]["job_id"]
        with (
            subprocess.Popen(
                [
                    "curl",
                    "-sN",
                    "-H",
                    f"Authorization: Bearer {token()}",
                    f"{base}/api/v1/jobs/{job_id}/events",
                ],
                stdout=subprocess.PIPE,
                text=True,
            ) as curl,
            worker(env, tmp_path, "worker"),
        ):
            output, _ = curl.communicate(timeout=60)
    assert curl.returncode == 0
    statuses = [
        json.loads(line.removeprefix("data:"))["status"]
        for previous, line in zip(output.splitlines(), output.splitlines()[1:], strict=False)
        if previous == "event: status"
    ]
    assert statuses == ["pending", "in_progress", "completed"]
    assert output.count("event: progress") >= 1


def test_postgres_stopped_then_started(tmp_path: Path) -> None:
    """While its database is down `exportd web` answers 503 fast (never hangs,
    never 500) and /healthz stays 200; once it is back, everything works."""
    server = EmbeddedPostgres(tmp_path / "pg", server_options=TEST_SERVER_OPTIONS)
    url = server.start().url()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            Migrator(conn).upgrade()
        env = worker_env(url, tmp_path / "packages", EXPORTD_JWT_SECRET=SECRET)
        with web(env, tmp_path) as base:
            assert httpx.get(f"{base}/api/v1/jobs", headers=bearer()).status_code == 200
            server.stop()
            for path, headers in (("/readyz", {}), ("/api/v1/jobs", bearer())):
                started = time.monotonic()
                response = httpx.get(f"{base}{path}", headers=headers, timeout=30)
                assert time.monotonic() - started < 5, path
                assert response.status_code == 503, (path, response.text)
            down = httpx.post(f"{base}/api/v1/jobs", json={"kind": "noop"}, headers=bearer())
            assert down.status_code == 503 and down.json()["code"] == "DATABASE_UNAVAILABLE"
            assert httpx.get(f"{base}/healthz").status_code == 200
            # Not a wait: the outage being simulated goes on (see DB_OUTAGE_SECONDS).
            time.sleep(DB_OUTAGE_SECONDS)
            server.start()
            deadline = time.monotonic() + 30
            while httpx.get(f"{base}/readyz").status_code != 200:
                assert time.monotonic() < deadline, "not ready again"
                time.sleep(0.2)
            started = time.monotonic()
            created = httpx.post(f"{base}/api/v1/jobs", json={"kind": "noop"}, headers=bearer())
            assert created.status_code == 202, created.text
            assert time.monotonic() - started < 2
    finally:
        server.stop()
