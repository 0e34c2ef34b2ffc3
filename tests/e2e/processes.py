"""Running real exportd processes from tests: environment, readiness via a
$NOTIFY_SOCKET stand-in, waiting on job states with deadlines."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg

EXPORTD = str(Path(sys.executable).with_name("exportd"))
ROOT = Path(__file__).resolve().parents[2]


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
def worker(
    env: dict[str, str], tmp_path: Path, name: str, *args: str
) -> Iterator[subprocess.Popen[str]]:
    """Start `exportd worker [args]`, wait for READY=1, and make sure it is gone afterwards."""
    notify = NotifySocket(tmp_path / f"{name}.sock")
    log = (tmp_path / f"{name}.log").open("w")
    proc = subprocess.Popen(
        [EXPORTD, "worker", *args],
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


def poll_until(predicate: Callable[[], bool], what: str, *, timeout: float = 30) -> None:
    """Check `predicate` until it holds; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, "the server exited"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer"
        time.sleep(0.05)


@contextmanager
def web(env: dict[str, str], tmp_path: Path, name: str = "web") -> Iterator[str]:
    """Start `exportd web` on a free loopback port; yields its base URL, which
    is also its public URL (the signed links it hands out are absolute)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / f"{name}.log").open("w")
    proc = subprocess.Popen(
        [EXPORTD, "web", "--host", "127.0.0.1", "--port", str(port)],
        env={"EXPORTD_PUBLIC_URL": base, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_up(f"{base}/healthz", proc)
        yield base
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait(timeout=30)
        log.close()
