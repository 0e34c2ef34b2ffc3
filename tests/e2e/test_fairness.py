"""Fairness and limits with real `exportd worker` processes (DESIGN §13): one
owner cannot fill every slot, a kind's max_running holds across workers,
deadlines cancel the running query, oversized packages leave nothing, and a
paused kind waits — across a worker restart — until it is resumed.

`exportd.jobs` is sampled every 50 ms while the workers run; a cap must hold
at every sample."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

from daemon.actions import ExportRequest, create_export
from daemon.kinds.catalog import load_kinds
from daemon.kinds.registry import KindRegistry
from tests.e2e.processes import EXPORTD, outcomes, poll_until, wait_status, worker, worker_env
from tests.helpers import fast_settings

KINDS = "tests.kinds_for_tests,tests.fairness_kinds"
SAMPLE_SECONDS = 0.05


def registry(tmp_path: Path, db_url: str, exports_file: Path | None = None) -> KindRegistry:
    settings = fast_settings(tmp_path, kinds=tuple(KINDS.split(",")), exports_file=exports_file)
    return load_kinds(settings, db_url)


def create_jobs(
    db_url: str,
    kinds: KindRegistry,
    jobs: list[tuple[str, str, dict[str, Any]]],
    **request: Any,
) -> list[UUID]:
    """Create (owner, kind, params) jobs in order, as the API would."""

    async def go() -> list[UUID]:
        created = []
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            for owner, kind, params in jobs:
                job, _ = await create_export(
                    conn, kinds, ExportRequest(kind, params, **request), owner_id=owner
                )
                created.append(job.job_id)
        return created

    # In a thread of its own: this test's thread may already have an event
    # loop (another test's), and asyncio.run refuses to nest.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result()


def sample_until(
    db_url: str,
    query: str,
    check: Callable[[list[tuple[Any, ...]]], bool],
    what: str,
    *,
    timeout: float = 60,
) -> list[list[tuple[Any, ...]]]:
    """Run `query` every 50 ms until `check(rows)` holds; every sample's rows."""
    samples = []
    deadline = time.monotonic() + timeout
    with psycopg.connect(db_url, autocommit=True) as conn:
        while True:
            rows = conn.execute(query).fetchall()
            samples.append(rows)
            if check(rows):
                return samples
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout} s: {what}; last sample {rows}")
            time.sleep(SAMPLE_SECONDS)


def running_per_owner(samples: list[list[tuple[Any, ...]]], owner: str) -> list[int]:
    return [sum(n for o, state, n in rows if (o, state) == (owner, "running")) for rows in samples]


BY_OWNER = """
    SELECT owner_id,
           CASE WHEN status IN ('in_progress', 'cancelling') THEN 'running'
                ELSE status::text END,
           count(*)
      FROM exportd.jobs GROUP BY 1, 2"""


def all_completed(total: int) -> Callable[[list[tuple[Any, ...]]], bool]:
    return lambda rows: sum(n for _, status, n in rows if status == "completed") == total


def test_one_owner_cannot_starve_another(db_url: str, tmp_path: Path) -> None:
    """Alice asks for 30 one-second exports, then Bob for one: two workers of
    concurrency 2 start Bob's at once, and never run more than 2 of Alice's."""
    env = worker_env(db_url, tmp_path / "packages", EXPORTD_KINDS=KINDS)
    assert "EXPORTD_OWNER_MAX_RUNNING" not in env  # the default: 2
    kinds = registry(tmp_path, db_url)
    with worker(env, tmp_path, "w1"), worker(env, tmp_path, "w2"):
        create_jobs(db_url, kinds, [("alice", "busy", {"seconds": 1.0})] * 30)
        (bob,) = create_jobs(db_url, kinds, [("bob", "busy", {"seconds": 1.0})])
        samples = sample_until(db_url, BY_OWNER, all_completed(31), "all 31 completed")
    alice = running_per_owner(samples, "alice")
    assert max(alice) == 2, alice  # the cap, reached and never passed
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM started_at - created_at) FROM exportd.jobs"
            " WHERE job_id = %s",
            (bob,),
        ).fetchone()
    assert row is not None and row[0] < 3.0, f"Bob's export waited {row} s"


def test_a_kind_with_max_running_1_runs_alone_on_three_workers(db_url: str, tmp_path: Path) -> None:
    env = worker_env(db_url, tmp_path / "packages", EXPORTD_KINDS=KINDS)
    kinds = registry(tmp_path, db_url)
    owners = ["alice", "bob", "carol", "dave", "erin", "frank"]
    with worker(env, tmp_path, "w1"), worker(env, tmp_path, "w2"), worker(env, tmp_path, "w3"):
        create_jobs(db_url, kinds, [(o, "single", {"seconds": 0.3}) for o in owners])
        samples = sample_until(
            db_url,
            "SELECT count(*) FILTER (WHERE status IN ('in_progress', 'cancelling')),"
            "       count(*) FILTER (WHERE status = 'completed')"
            "  FROM exportd.jobs WHERE kind = 'single'",
            lambda rows: rows[0][1] == len(owners),
            "every single export completed",
        )
    in_progress = [rows[0][0] for rows in samples]
    assert max(in_progress) == 1, in_progress


def statement_of(kind: str) -> str:
    return (
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
        f" AND application_name = 'exportd export {kind}' AND query LIKE '%pg_sleep%'"
    )


def test_a_deadline_cancels_the_running_query_and_retries(db_url: str, tmp_path: Path) -> None:
    exports = tmp_path / "exports.toml"
    exports.write_text(
        '[exports.sleepy]\ntimeout = "2s"\nmax_attempts = 2\n'
        '[[exports.sleepy.queries]]\nname = "slept"\n'
        'sql = "SELECT 1 AS slept FROM pg_sleep(10)"\n'
    )
    env = worker_env(
        db_url, tmp_path / "packages", EXPORTD_KINDS=KINDS, EXPORTD_EXPORTS_FILE=str(exports)
    )
    kinds = registry(tmp_path, db_url, exports)
    with worker(env, tmp_path, "w1"), psycopg.connect(db_url, autocommit=True) as conn:
        (job,) = create_jobs(db_url, kinds, [("alice", "sleepy", {})])

        def active() -> int:
            row = conn.execute(statement_of("sleepy")).fetchone()
            return int(row[0]) if row else 0

        for attempt in (1, 2):
            poll_until(lambda: active() == 1, f"attempt {attempt}'s query runs")
            started = time.monotonic()
            poll_until(lambda: active() == 0, f"attempt {attempt}'s query is cancelled")
            gone_after = time.monotonic() - started
            assert gone_after < 3.0, f"attempt {attempt}: query ran {gone_after:.1f} s"
        wait_status(db_url, job, "rolled_back", timeout=20)
    tried = outcomes(db_url, job)
    assert [outcome for outcome, _ in tried] == ["failed", "failed"]
    for _, error in tried:
        assert error is not None and "deadline exceeded" in error, error
        assert "2s" in error


def test_an_oversized_package_fails_clearly_and_leaves_no_file(db_url: str, tmp_path: Path) -> None:
    storage = tmp_path / "packages"
    env = worker_env(db_url, storage, EXPORTD_KINDS=KINDS)
    kinds = registry(tmp_path, db_url)
    with worker(env, tmp_path, "w1"):
        (job,) = create_jobs(db_url, kinds, [("alice", "too-big", {})], max_attempts=3)
        wait_status(db_url, job, "rolled_back", "failed")
    tried = outcomes(db_url, job)
    assert len(tried) == 1, tried  # the same export would be as large: not retried
    outcome, error = tried[0]
    assert outcome == "failed"
    assert error is not None and error.startswith("PackageTooLarge: ")
    assert "max_package_bytes (50000 bytes)" in error
    assert [p for p in storage.rglob("*") if p.is_file()] == []


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXPORTD, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_paused_kind_waits_across_a_restart_until_resumed(db_url: str, tmp_path: Path) -> None:
    env = worker_env(db_url, tmp_path / "packages", EXPORTD_KINDS=KINDS)
    kinds = registry(tmp_path, db_url)
    paused = cli(env, "kinds", "pause", "noop")
    assert paused.returncode == 0, paused.stderr
    assert "noop is paused" in paused.stdout
    held_query = "SELECT kind, status::text, count(*) FROM exportd.jobs GROUP BY 1, 2"

    def counts(rows: list[tuple[Any, ...]], kind: str, status: str) -> int:
        return sum(n for k, s, n in rows if k == kind and s == status)

    with worker(env, tmp_path, "w1"):
        held = create_jobs(db_url, kinds, [("alice", "noop", {})] * 3)
        create_jobs(db_url, kinds, [("bob", "three-steps", {})] * 3)
        # For 5 s: the other kind runs to the end, the paused one never starts.
        window = time.monotonic() + 5.0
        samples = sample_until(
            db_url, held_query, lambda rows: time.monotonic() > window, "the 5 s window"
        )
        assert all(counts(rows, "noop", "pending") == 3 for rows in samples)
        assert counts(samples[-1], "three-steps", "completed") == 3
    listed = cli(env, "kinds", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    shown = {k["kind"]: k["paused"] for k in json.loads(listed.stdout)["data"]}
    assert shown["noop"] is True and shown["three-steps"] is False
    with worker(env, tmp_path, "w2"):
        # A new worker process still holds it.
        window = time.monotonic() + 1.0
        samples = sample_until(
            db_url, held_query, lambda rows: time.monotonic() > window, "the 1 s window"
        )
        assert all(counts(rows, "noop", "pending") == 3 for rows in samples)
        resumed = cli(env, "kinds", "resume", "noop")
        assert resumed.returncode == 0, resumed.stderr
        for job in held:
            wait_status(db_url, job, "completed", timeout=10)


def test_pausing_an_unknown_kind_is_one_line(db_url: str, tmp_path: Path) -> None:
    env = worker_env(db_url, tmp_path / "packages", EXPORTD_KINDS=KINDS)
    for action in ("pause", "resume"):
        result = cli(env, "kinds", action, "no-such-kind")
        assert result.returncode == 1, result.stdout
        assert result.stderr.count("\n") == 1, result.stderr
        assert "unknown kind 'no-such-kind'" in result.stderr and "noop" in result.stderr
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM exportd.paused_kinds").fetchone() == (0,)
