"""PostgreSQL outages under load: every exportd connection (worker, web pool,
the SSE LISTEN connection) terminated mid-run, then the server stopped for
10 s and started again. During the outage the API answers 503 within
seconds (never hangs, never 500); afterwards every job finishes, and a
client following a job over SSE still receives its final status."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from daemon.db.embedded import EmbeddedPostgres
from daemon.db.migrations import Migrator
from tests.api_helpers import SECRET, bearer
from tests.conftest import TEST_SERVER_OPTIONS
from tests.e2e.processes import poll_until, web, worker, worker_env

pytestmark = pytest.mark.slow
OUTAGE_SECONDS = 10.0


class Follower(threading.Thread):
    """Follows one job's events; records the statuses and how the stream ended."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.statuses: list[str] = []
        self.ended_cleanly = False
        self.error: str | None = None

    def run(self) -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(10, read=60)) as client,
                client.stream("GET", self.url, headers=bearer()) as response,
            ):
                event = None
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                    elif line.startswith("data:") and event == "status":
                        self.statuses.append(json.loads(line[5:])["status"])
            self.ended_cleanly = True
        except httpx.HTTPError as exc:
            self.error = repr(exc)


def all_statuses(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT status::text, count(*) FROM exportd.jobs GROUP BY 1").fetchall()
    return {str(s): int(n) for s, n in rows}


def listening(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name LIKE 'exportd-web-events%' AND datname = current_database()"
        ).fetchone()
    return row is not None and row[0] >= 1


def test_outages_lose_nothing(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg", server_options=TEST_SERVER_OPTIONS)
    url = server.start().url()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            Migrator(conn).upgrade()
        env = worker_env(url, tmp_path / "packages", EXPORTD_JWT_SECRET=SECRET)
        env["EXPORTD_RATE_LIMIT"] = "off"
        with worker(env, tmp_path, "worker"), web(env, tmp_path) as base:
            api = httpx.Client(base_url=base, headers=bearer(), timeout=30)
            followed = api.post(
                "/api/v1/jobs", json={"kind": "slow", "params": {"seconds": 6}}
            ).json()["data"]["job_id"]
            for _ in range(20):
                created = api.post(
                    "/api/v1/jobs", json={"kind": "three-steps", "params": {"pause": 0.3}}
                )
                assert created.status_code == 202
            follower = Follower(f"{base}/api/v1/jobs/{followed}/events")
            follower.start()
            # The connections are killed once the follower is streaming (its
            # first status is sent after subscribing) and the LISTEN is up.
            poll_until(
                lambda: bool(follower.statuses) and listening(url),
                "the follower's first status, with the LISTEN connection up",
            )

            # 1. Every exportd connection killed at once.
            with psycopg.connect(url, autocommit=True) as conn:
                killed = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name LIKE 'exportd-%'"
                ).fetchone()
            assert killed is not None and killed[0] >= 3  # worker pool, web pool, LISTEN
            deadline = time.monotonic() + 15
            while api.get("/api/v1/jobs").status_code != 200:
                assert time.monotonic() < deadline, "the API did not recover"
                time.sleep(0.2)

            # 2. The server stops for a while.
            server.stop()
            stopped = time.monotonic()
            while time.monotonic() - stopped < OUTAGE_SECONDS:
                for path in ("/api/v1/jobs", f"/api/v1/jobs/{followed}", "/readyz"):
                    started = time.monotonic()
                    answer = api.get(path)
                    assert time.monotonic() - started < 5, path
                    assert answer.status_code == 503, (path, answer.status_code, answer.text)
                assert api.get("/healthz").status_code == 200
                time.sleep(0.5)  # probe cadence for as long as the outage lasts
            server.start()

            deadline = time.monotonic() + 90
            while (counts := all_statuses(url)).get("completed", 0) < 21:
                assert time.monotonic() < deadline, f"jobs did not finish: {counts}"
                time.sleep(0.5)
            follower.join(timeout=60)
            assert not follower.is_alive(), "the SSE stream did not end"
            api.close()
        assert follower.ended_cleanly, follower.error
        assert follower.statuses[0] in ("pending", "in_progress")
        assert follower.statuses[-1] == "completed"
    finally:
        server.stop()
