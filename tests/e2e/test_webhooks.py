"""Webhooks end to end (DESIGN §12): real `exportd worker` and `exportd web`
processes, a real receiver on loopback that verifies every delivery with the
`standardwebhooks` package (tests/webhook_receiver.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest

from daemon import __version__
from tests import helpers
from tests.api_helpers import SECRET as JWT_SECRET
from tests.api_helpers import bearer
from tests.e2e.processes import (
    EXPORTD,
    create,
    poll_until,
    wait_status,
    web,
    worker,
    worker_env,
)
from tests.webhook_receiver import HANG, Receiver

pytestmark = pytest.mark.slow

HOOK_SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
LINK_SECRET = "a-link-secret-for-the-webhook-tests-0123456789abcdef"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hooks = Receiver(HOOK_SECRET)
    try:
        yield hooks
    finally:
        hooks.close()


def hook_env(db_url: str, tmp_path: Path, receiver: Receiver, **extra: str) -> dict[str, str]:
    settings = {
        "EXPORTD_JWT_SECRET": JWT_SECRET,
        "EXPORTD_LINK_SECRET": LINK_SECRET,
        "EXPORTD_RATE_LIMIT": "off",
        "EXPORTD_WEBHOOK_URL": receiver.url,
        "EXPORTD_WEBHOOK_SECRET": HOOK_SECRET,
        "EXPORTD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "EXPORTD_WEBHOOK_PRIVATE_HOSTS": "127.0.0.1",
        "EXPORTD_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
        "EXPORTD_WEBHOOK_TIMEOUT_SECONDS": "1",
    }
    return worker_env(db_url, tmp_path / "packages", **{**settings, **extra})


def rows(db_url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(query, params).fetchall()


def deliveries(db_url: str, job_id: UUID) -> list[tuple[Any, ...]]:
    """(attempt, outcome, status_code, error, delivered) of the job's attempts, in order."""
    return rows(
        db_url,
        "SELECT attempt, outcome, status_code, error, delivered_at IS NOT NULL "
        "FROM exportd.webhook_deliveries WHERE job_id = %s ORDER BY delivery_id",
        job_id,
    )


def queue_idle(db_url: str) -> bool:
    """No webhook delivery waits or runs."""
    return not rows(
        db_url,
        "SELECT 1 FROM procrastinate_jobs WHERE queue_name = 'webhooks' "
        "AND status IN ('todo', 'doing')",
    )


def event_ids(db_url: str, job_id: UUID) -> dict[str, str]:
    found = rows(
        db_url, "SELECT type, event_id::text FROM exportd.webhook_events WHERE job_id = %s", job_id
    )
    return {str(t): str(e) for t, e in found}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXPORTD, *args],
        env={**env, "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_each_event_is_delivered_once_with_its_payload(
    db_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    own = Receiver(HOOK_SECRET)  # a job's notify_url
    try:
        env = hook_env(db_url, tmp_path, receiver)
        with web(env, tmp_path) as base, worker({**env, "EXPORTD_PUBLIC_URL": base}, tmp_path, "w"):
            answer = httpx.post(
                f"{base}/api/v1/jobs",
                json={"kind": "blob", "params": {"size": 50_000}, "notify_url": own.url},
                headers=bearer("alice"),
            )
            assert answer.status_code == 202, answer.text
            done = UUID(answer.json()["data"]["job_id"])
            assert answer.json()["data"]["notify_url"] == own.url
            failing = create(db_url, "flaky", fail_times=5, max_attempts=1)
            running = create(db_url, "slow", seconds=30)
            assert wait_status(db_url, done, "completed") == "completed"
            assert wait_status(db_url, failing, "rolled_back") == "rolled_back"
            wait_status(db_url, running, "in_progress")
            assert cli(env, "jobs", "cancel", str(running)).returncode == 0
            wait_status(db_url, running, "cancelled")
            poll_until(lambda: len(receiver.of_type("export.completed")) == 1, "completed sent")

            # The link of export.completed downloads the package, no header needed.
            sent = receiver.of_type("export.completed")[0].payload
            link = sent["data"]["link"]
            package = httpx.get(link["url"])
            assert package.status_code == 200
            assert (
                hashlib.sha256(package.content).hexdigest()
                == sent["data"]["job"]["package"]["sha256"]
            )
            assert link["expires_at"].endswith("Z")

            # Retention expires the package: export.expired.
            with psycopg.connect(db_url, autocommit=True) as conn:
                conn.execute(
                    "UPDATE exportd.jobs SET package_expires_at = now() - interval '1 second' "
                    "WHERE job_id = %s",
                    (done,),
                )
            assert cli(env, "cleanup").returncode == 0
            poll_until(lambda: receiver.count() == 4 and own.count() == 2, "all four sent")
            poll_until(lambda: queue_idle(db_url), "nothing left to deliver")
    finally:
        own.close()

    by_type = {r.payload["type"]: r for r in receiver.received}
    assert sorted(by_type) == [
        "export.cancelled",
        "export.completed",
        "export.expired",
        "export.failed",
    ]
    assert receiver.count() == 4  # exactly one each
    assert all(r.verified for r in receiver.received + own.received)
    assert [r.payload["type"] for r in own.received] == ["export.completed", "export.expired"]
    for event_type, job, status in (
        ("export.completed", done, "completed"),
        ("export.failed", failing, "rolled_back"),
        ("export.cancelled", running, "cancelled"),
        ("export.expired", done, "completed"),
    ):
        got = by_type[event_type]
        assert got.webhook_id == event_ids(db_url, job)[event_type]
        assert got.headers["user-agent"] == f"exportd/{__version__}"
        assert got.headers["webhook-signature"].startswith("v1,")
        assert got.payload["data"]["job"]["job_id"] == str(job)
        assert got.payload["data"]["job"]["status"] == status
        assert got.payload["timestamp"].endswith("Z")
        assert ("link" in got.payload["data"]) == (event_type == "export.completed")
    assert by_type["export.failed"].payload["data"]["job"]["error_message"]
    assert by_type["export.expired"].payload["data"]["job"]["package"]["deleted_at"]
    assert by_type["export.completed"].payload["data"]["job"]["package"]["deleted_at"] is None


def test_retried_until_2xx_with_the_same_webhook_id(
    db_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.plan.extend([500, 500])
    env = hook_env(db_url, tmp_path, receiver)
    with worker(env, tmp_path, "w"):
        job = create(db_url, "noop")
        poll_until(lambda: receiver.count() == 3, "three attempts")
        poll_until(lambda: len(deliveries(db_url, job)) == 3, "three rows")
    assert [r.answered for r in receiver.received] == [500, 500, 200]
    assert len({r.webhook_id for r in receiver.received}) == 1
    assert all(r.verified for r in receiver.received)
    assert [(a, o, s, d) for a, o, s, _, d in deliveries(db_url, job)] == [
        (1, "rejected", 500, False),
        (2, "rejected", 500, False),
        (3, "delivered", 200, True),
    ]
    assert deliveries(db_url, job)[0][3] == "HTTP 500"
    # Each attempt is signed afresh (its own timestamp and a fresh link);
    # the event is the same.
    assert len({r.headers["webhook-timestamp"] for r in receiver.received}) >= 2
    assert len({str(r.payload["data"]["job"]) for r in receiver.received}) == 1


def test_a_receiver_down_for_a_while_gets_it_when_back(
    db_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.stop()
    env = hook_env(db_url, tmp_path, receiver)
    with worker(env, tmp_path, "w"):
        job = create(db_url, "noop")
        poll_until(lambda: len(deliveries(db_url, job)) >= 2, "two attempts while down")
        receiver.start()
        poll_until(lambda: any(row[4] for row in deliveries(db_url, job)), "delivered")
    outcomes = [row[1] for row in deliveries(db_url, job)]
    assert set(outcomes[:-1]) == {"unreachable"} and outcomes[-1] == "delivered"
    assert receiver.count() == 1 and receiver.received[0].verified


def test_a_hanging_receiver_times_out_and_is_retried(
    db_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.plan.append(HANG)
    env = hook_env(db_url, tmp_path, receiver)
    with worker(env, tmp_path, "w"):
        job = create(db_url, "noop")
        poll_until(lambda: any(row[4] for row in deliveries(db_url, job)), "delivered")
    first, second = deliveries(db_url, job)
    assert first[1:4] == ("timeout", None, "no answer within 1 s")
    assert second[1:3] == ("delivered", 200)
    assert receiver.received[0].webhook_id == receiver.received[1].webhook_id


def test_events_outlive_a_sigkilled_worker(db_url: str, tmp_path: Path, receiver: Receiver) -> None:
    env = hook_env(db_url, tmp_path, receiver)
    # Killed after the state change, before the delivery ran: a worker that
    # does not serve the webhooks queue completes the export, then dies.
    with worker(env, tmp_path, "exports-only", "--queue", "exports") as first:
        queued = create(db_url, "noop")
        wait_status(db_url, queued, "completed")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    assert receiver.count() == 0
    with worker(env, tmp_path, "a") as second:
        poll_until(lambda: receiver.count() == 1, "the committed event delivered")
        # Killed in the middle of a delivery: the receiver holds the request.
        receiver.plan.append(HANG)
        running = create(db_url, "noop")
        poll_until(lambda: receiver.count() == 2, "the second delivery under way")
        second.send_signal(signal.SIGKILL)
        second.wait(timeout=10)
    with worker(env, tmp_path, "b"):
        poll_until(lambda: any(row[4] for row in deliveries(db_url, running)), "redelivered")
    first_event = event_ids(db_url, queued)["export.completed"]
    second_event = event_ids(db_url, running)["export.completed"]
    assert [(r.webhook_id, r.answered) for r in receiver.received] == [
        (first_event, 200),
        (second_event, HANG),
        (second_event, 200),
    ]
    assert all(r.verified for r in receiver.received)


def create_at_once(db_url: str, count: int) -> list[UUID]:
    """`count` noop exports created in one go (no process start between them)."""

    async def go() -> list[UUID]:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            return [(await helpers.create(conn, "noop")).job_id for _ in range(count)]

    return asyncio.run(go())


def pickup_seconds(db_url: str, jobs: list[UUID]) -> list[float]:
    """Seconds from each job's creation to its start."""
    found = rows(
        db_url,
        "SELECT extract(epoch FROM started_at - created_at)::float8 FROM exportd.jobs "
        "WHERE job_id = ANY(%s)",
        jobs,
    )
    return [float(r[0]) for r in found]


def test_a_slow_receiver_does_not_slow_exports(
    db_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    env = hook_env(db_url, tmp_path, receiver, EXPORTD_WEBHOOK_TIMEOUT_SECONDS="10")

    def one_by_one(count: int) -> list[float]:
        jobs = []
        for _ in range(count):
            (job,) = create_at_once(db_url, 1)
            wait_status(db_url, job, "completed")
            jobs.append(job)
        return pickup_seconds(db_url, jobs)

    with worker(env, tmp_path, "w"):
        quick = one_by_one(5)
        poll_until(lambda: queue_idle(db_url), "quick deliveries done")
        # Every delivery now takes 5 s; a burst of exports queues more of
        # them than there are webhook slots (4), and more than export slots (2).
        receiver.delay = 5.0
        before = receiver.count()
        for job in create_at_once(db_url, 6):
            wait_status(db_url, job, "completed")
        poll_until(lambda: receiver.count() >= before + 2, "slow deliveries under way")
        loaded = one_by_one(5)
        assert not queue_idle(db_url)  # the slow deliveries are still going on
    print(f"pickup latency, quick receiver: {quick}; slow receiver: {loaded}")
    assert max(loaded) < max(quick) + 1.0  # without the separate worker: 5 s and more


def test_failed_deliveries_are_listed_and_redelivered(
    db_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.default = 503
    # A retry window of about a second: given up after a few attempts.
    env = hook_env(db_url, tmp_path, receiver, EXPORTD_WEBHOOK_RETRY_HOURS="0.0003")
    with worker(env, tmp_path, "w"):
        job = create(db_url, "noop")
        poll_until(lambda: len(deliveries(db_url, job)) >= 1 and queue_idle(db_url), "given up")
        event = event_ids(db_url, job)["export.completed"]
        listed = cli(env, "webhooks", "ls", "--failed")
        assert listed.returncode == 0 and event in listed.stdout and "failed" in listed.stdout
        health = cli(env, "webhooks", "health")
        assert receiver.url in health.stdout and "HTTP 503" in health.stdout

        receiver.default = 200
        again = cli(env, "webhooks", "redeliver", event)
        assert again.returncode == 0, again.stderr
        assert "1 delivery queued" in again.stdout
        poll_until(lambda: any(row[4] for row in deliveries(db_url, job)), "redelivered")
    assert event not in cli(env, "webhooks", "ls", "--failed").stdout
    assert event in cli(env, "webhooks", "ls").stdout
    missing = cli(env, "webhooks", "redeliver", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1 and "no webhook event" in missing.stdout
    assert {r.webhook_id for r in receiver.received} == {event}
    assert receiver.received[-1].answered == 200
    totals = dict(rows(db_url, "SELECT outcome, total FROM exportd.webhook_totals"))
    assert totals["delivered"] == 1 and totals["rejected"] >= 1


def test_worker_serves_only_the_queues_asked_for(
    db_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    """`--queue exports` runs exports and delivers nothing; `--queue webhooks`
    the reverse."""
    env = hook_env(db_url, tmp_path, receiver)
    with worker(env, tmp_path, "exports", "--queue", "exports"):
        jobs = [create(db_url, "noop") for _ in range(3)]
        for job in jobs:
            wait_status(db_url, job, "completed")
    assert receiver.count() == 0  # three exports ran, no delivery did
    with worker(env, tmp_path, "hooks", "--queue", "webhooks"):
        poll_until(lambda: receiver.count() == 3, "delivered by the webhooks-only worker")
        other = create(db_url, "noop")
        event = event_ids(db_url, jobs[0])["export.completed"]
        assert cli(env, "webhooks", "redeliver", event).returncode == 0
        poll_until(lambda: receiver.count() == 4, "a delivery queued after the export")
        assert wait_status(db_url, other, "pending") == "pending"  # no export ran here
