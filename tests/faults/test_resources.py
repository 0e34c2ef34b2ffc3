"""Resource limits of `exportd web`: 200 concurrent ranged downloads (some
abandoned half-way) plus job churn leave no file descriptor behind, and
memory stays bounded."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import httpx
import pytest

from tests.api_helpers import SECRET, bearer
from tests.e2e.processes import poll_until, web, worker, worker_env

pytestmark = pytest.mark.slow
CLIENTS = 200
SIZE = 2_000_000


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def web_pid(port: int) -> int:
    """The process listening on `port` (the `exportd web` child)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
            inode = fields[9]
    assert inode is not None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if f"socket:[{inode}]" in links:
            return int(pid)
    raise AssertionError("no process listens on the port")


def held_downloads(pid: int, port: int, storage: Path) -> list[str]:
    """What `pid` still holds of the downloads: connections on `port`, package files."""
    connections = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" and int(fields[1].split(":")[1], 16) == port:
                connections.add(f"socket:[{fields[9]}]")
    held = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target in connections or target.startswith(f"{storage.resolve()}/"):
            held.append(target)
    return held


def wait_downloads_released(pid: int, port: int, storage: Path) -> None:
    """Until the server has closed every client connection and package file."""
    try:
        poll_until(
            lambda: not held_downloads(pid, port, storage), "the web process closing the downloads"
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still open: {held_downloads(pid, port, storage)}") from None


async def load(base: str, download_url: str, size: int) -> None:
    rng = random.Random(7)  # noqa: S311 - a reproducible load, not a secret
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=base, headers=bearer(), limits=limits, timeout=60
    ) as client:

        async def download(i: int) -> None:
            start = rng.randrange(size)
            headers = {"Range": f"bytes={start}-"}
            async with client.stream("GET", download_url, headers=headers) as response:
                assert response.status_code == 206
                if i % 3 == 0:
                    async for _ in response.aiter_raw():
                        break  # abandoned half-way: the client hangs up
                else:
                    body = await response.aread()
                    assert len(body) == size - start

        async def churn(i: int) -> None:
            created = await client.post(
                "/api/v1/jobs", json={"kind": "slow", "params": {"seconds": 2}}
            )
            assert created.status_code == 202
            job_id = created.json()["data"]["job_id"]
            answer = await client.post(f"/api/v1/jobs/{job_id}/cancel")
            assert answer.status_code in (202, 409)

        await asyncio.gather(*(download(i) for i in range(CLIENTS)), *(churn(i) for i in range(50)))


def test_no_descriptor_leak_and_bounded_memory(db_url: str, tmp_path: Path) -> None:
    storage = tmp_path / "packages"
    env = worker_env(db_url, storage, EXPORTD_JWT_SECRET=SECRET)
    env["EXPORTD_RATE_LIMIT"] = "off"
    with worker(env, tmp_path, "worker"), web(env, tmp_path) as base:
        created = httpx.post(
            f"{base}/api/v1/jobs", json={"kind": "blob", "params": {"size": SIZE}}, headers=bearer()
        )
        job_id = created.json()["data"]["job_id"]
        deadline = time.monotonic() + 30
        while (job := httpx.get(f"{base}/api/v1/jobs/{job_id}", headers=bearer()).json()["data"])[
            "status"
        ] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        port = int(base.rsplit(":", 1)[1])
        pid = web_pid(port)
        url = job["package"]["download_url"]
        size = job["package"]["size_bytes"]
        asyncio.run(load(base, url, size))  # warm up: pool connections, imports, caches
        wait_downloads_released(pid, port, storage)
        fds_before, rss_before = open_fds(pid), rss_mib(pid)
        for _ in range(2):
            asyncio.run(load(base, url, size))
        wait_downloads_released(pid, port, storage)
        fds_after, rss_after = open_fds(pid), rss_mib(pid)
    print(f"fds {fds_before} -> {fds_after}, RSS {rss_before:.0f} -> {rss_after:.0f} MiB")
    assert fds_after <= fds_before + 2
    assert rss_after - rss_before < 50
