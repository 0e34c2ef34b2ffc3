"""HTTP benchmarks: the status API vs a bare Starlette route, and a package
download vs nginx `sendfile` serving the same file.

Run: .venv/bin/python -m bench.http --size-mib 1024 --rounds 3 --seconds 10

Everything runs on this machine, in one script, against one embedded
PostgreSQL server, alternating the systems round by round so that noise hits
both sides alike:

- API: `wrk --latency -t2 -c16` for `--seconds` against
  `GET /api/v1/jobs/{id}` of `exportd web` (HS256 JWT verified, rate limit
  off, one row read from PostgreSQL, job JSON) and against the same path on
  `bench/bare_app.py` (a constant JSON document, no token, no database) under
  uvicorn with the settings `exportd web` serves with (one process, its HTTP
  protocol class, no access log, no proxy headers). The same
  exportd route is measured twice, with the JWT and with an API key
  (`Authorization: Bearer exk_…`, made by `exportd keys create`): the
  difference is what key authentication costs per request.
- Download: `curl -o /dev/null` of a `--size-mib` package (random bytes) from
  `exportd web` (Starlette FileResponse, with download tracking) and from
  nginx (`sendfile on`) serving the same file; MB/s and, for exportd, the
  process's peak RSS (VmHWM) before and after the downloads.
- Event streams: `--watchers` clients (5,000) follow one pending job on one
  fresh `exportd web` process (`GET /api/v1/jobs/{id}/events`, opened in
  batches, each batch waiting for its first event); once all are open the
  job is started and completed by two UPDATEs (the worker's notifications).
  Reported: how many clients received the final `completed` event, how long
  after the last UPDATE the last one did, and the web process's RSS (idle,
  with every stream open, peak).

Needs wrk, curl and nginx (Debian: wrk, curl, nginx-light). Prints Markdown
tables (median, min, max over the rounds) for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.results import record
from daemon.db.embedded import EmbeddedPostgres
from daemon.db.migrations import Migrator
from daemon.tokens import mint_token

SECRET = secrets.token_hex(32)  # HS256 key of this run only
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


@contextmanager
def process(
    args: list[str], env: dict[str, str], log: Path, *, stop_seconds: float = 30
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a process until the block ends; stopped by pid (SIGTERM, then SIGKILL
    after `stop_seconds`: a worker may be finishing a large upload)."""
    with log.open("w") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=stop_seconds)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def write_package(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(left, 64 << 20))
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def register_job(url: str, relative: str, size: int, sha: str) -> str:
    """A completed job of 'bench' whose package is the file at `relative`."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO exportd.jobs (kind, owner_id) VALUES ('bench', 'bench') RETURNING job_id"
        ).fetchone()
        assert row is not None
        conn.execute(
            "UPDATE exportd.jobs SET status = 'in_progress', started_at = now(), attempts = 1"
            " WHERE job_id = %s",
            (row[0],),
        )
        conn.execute(
            """UPDATE exportd.jobs SET status = 'completed', completed_at = now(),
                      steps_completed = 1, steps_total = 1, progress_percentage = 100,
                      package_path = %s, package_size_bytes = %s, package_sha256 = %s,
                      package_expires_at = now() + interval '1 day'
                WHERE job_id = %s""",
            (relative, size, sha, row[0]),
        )
    return str(row[0])


def pending_job(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO exportd.jobs (kind, owner_id) VALUES ('bench', 'bench') RETURNING job_id"
        ).fetchone()
    assert row is not None
    return str(row[0])


def finish_job(url: str, job_id: str) -> None:
    """What a worker's run does to the row: started, then completed (each
    UPDATE notifies the event streams)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE exportd.jobs SET status = 'in_progress', started_at = now(), attempts = 1"
            " WHERE job_id = %s",
            (job_id,),
        )
        conn.execute(
            "UPDATE exportd.jobs SET status = 'completed', completed_at = now(),"
            " steps_completed = 1, steps_total = 1, progress_percentage = 100"
            " WHERE job_id = %s",
            (job_id,),
        )


@dataclass
class Watchers:
    watchers: int
    received_final: int
    seconds_to_last: float  # from the completing UPDATE to the last client's final event
    rss_idle_mib: float
    rss_open_mib: float  # VmRSS with every stream open
    rss_peak_mib: float  # VmHWM at the end


FINAL = b'"status":"completed"'


async def _watch(port: int, path: str, token: str, opened: asyncio.Event) -> float | None:
    """Follow one event stream until the job's final status; when it came
    (None: refused, cut, or ended without it — counted as not received)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        opened.set()  # its batch does not wait for it
        return None
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            print(f"event stream refused: {head[:40]!r}", file=sys.stderr)
            return None
        seen = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return None  # closed before the final event
            seen = seen[-64:] + chunk
            if b"event: status" in seen:
                opened.set()
            if FINAL in seen:
                return time.monotonic()
    except (OSError, asyncio.IncompleteReadError):
        return None
    finally:
        opened.set()
        writer.close()


async def _watchers(port: int, path: str, token: str, count: int, batch: int) -> list[Any]:
    """`count` streams opened `batch` at a time (each batch open before the
    next starts: a burst of thousands would only measure the listen backlog)."""
    tasks: list[asyncio.Task[float | None]] = []
    for start in range(0, count, batch):
        flags = [asyncio.Event() for _ in range(min(batch, count - start))]
        tasks += [asyncio.create_task(_watch(port, path, token, flag)) for flag in flags]
        waiting = [asyncio.create_task(flag.wait()) for flag in flags]
        await asyncio.wait_for(asyncio.gather(*waiting), timeout=120)
    return tasks


def sse_watchers(env: dict[str, str], base: Path, token: str, count: int, batch: int) -> Watchers:
    """`count` clients following one job on one fresh `exportd web` process."""
    url = env["EXPORTD_DATABASE_URL"]
    job_id = pending_job(url)
    port = free_port()
    sse_env = {**env, "EXPORTD_MAX_CONNECTIONS": str(count + 100)}
    args = [str(VENV_BIN / "exportd"), "web", "--port", str(port)]
    with process(args, sse_env, base / "web-sse.log") as web:
        wait_up(f"http://127.0.0.1:{port}/healthz")
        idle = rss_mib(web.pid, "VmRSS")

        async def follow() -> Watchers:
            path = f"/api/v1/jobs/{job_id}/events"
            tasks = await _watchers(port, path, token, count, batch)
            opened = rss_mib(web.pid, "VmRSS")
            await asyncio.to_thread(finish_job, url, job_id)
            finished = time.monotonic()
            done, _ = await asyncio.wait(tasks, timeout=120)
            for task in tasks:
                task.cancel()
            times = [t.result() for t in done if t.exception() is None]
            received = [t for t in times if t is not None]
            last = max(received) - finished if received else float("nan")
            return Watchers(count, len(received), last, idle, opened, rss_mib(web.pid, "VmHWM"))

        return asyncio.run(follow())


def wrk(url: str, seconds: int, token: str | None) -> tuple[float, float]:
    """Requests/s and p99 latency (ms)."""
    args = ["wrk", "--latency", "-t2", "-c16", f"-d{seconds}s", url]
    if token:
        args[1:1] = ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    if "Non-2xx" in out:
        raise RuntimeError(f"errors while benchmarking {url}:\n{out}")
    return rps, float(p99) * scale


def curl_mbps(url: str, token: str | None) -> float:
    args = ["curl", "-sf", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url]
    if token:
        args[1:1] = ["-H", f"Authorization: Bearer {token}"]
    size, seconds = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
    return int(size) / float(seconds) / 1e6


def peak_rss_mib(pid: int) -> float:
    return rss_mib(pid, "VmHWM")


def rss_mib(pid: int, field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


NGINX = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location /files/ {{ alias {storage}/; }}
    }}
}}
"""


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} | {min(values):,.0f} | {max(values):,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--watchers", type=int, default=5000, help="event stream clients")
    parser.add_argument("--watcher-batch", type=int, default=250)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="exportd-bench-http-"))
    try:
        run(
            base,
            args.size_mib << 20,
            args.rounds,
            args.seconds,
            watchers=args.watchers,
            batch=args.watcher_batch,
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run(base: Path, size: int, rounds: int, seconds: int, *, watchers: int, batch: int) -> None:
    storage = base / "packages"
    relative = "be/bench/package.tar.gz"
    sha = write_package(storage / relative, size)
    with EmbeddedPostgres(base / "pg") as server:
        url = server.url()
        with psycopg.connect(url, autocommit=True) as conn:
            Migrator(conn).upgrade()
        job_id = register_job(url, relative, size, sha)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXPORTD_")}
        env.update(
            EXPORTD_DATABASE_URL=url,
            EXPORTD_STORAGE_DIR=str(storage),
            EXPORTD_JWT_SECRET=SECRET,
            EXPORTD_RATE_LIMIT="off",
            EXPORTD_LOG_FORMAT="json",
        )
        from daemon.config import load_settings

        token = mint_token(load_settings(env), subject="bench", ttl_seconds=3600)
        api_key = subprocess.run(
            [str(VENV_BIN / "exportd"), "keys", "create", "--owner", "bench", "--name", "bench"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        ours_port, bare_port, nginx_port = free_port(), free_port(), free_port()
        nginx_dir = base / "nginx"
        nginx_dir.mkdir()
        conf = nginx_dir / "nginx.conf"
        conf.write_text(
            NGINX.format(
                dir=nginx_dir,
                port=nginx_port,
                storage=storage,
                user="user root;" if os.geteuid() == 0 else "",
            )
        )
        web_args = [str(VENV_BIN / "exportd"), "web", "--port", str(ours_port)]
        # Served with the uvicorn settings of `exportd web` (bench/bare_app.py).
        bare_args = [sys.executable, "-m", "bench.bare_app", "--port", str(bare_port)]
        nginx_args = ["nginx", "-p", str(nginx_dir), "-c", str(conf), "-e", str(nginx_dir / "e")]
        with (
            process(web_args, env, base / "web.log") as web,
            process(bare_args, env, base / "bare.log"),
            process(nginx_args, env, base / "nginx.log"),
        ):
            ours = f"http://127.0.0.1:{ours_port}/api/v1/jobs/{job_id}"
            bare = f"http://127.0.0.1:{bare_port}/api/v1/jobs/{job_id}"
            files = f"http://127.0.0.1:{nginx_port}/files/{relative}"
            for target in (f"http://127.0.0.1:{ours_port}/healthz", bare, files):
                wait_up(target)
            for credential in (token, api_key):
                answer = httpx.get(ours, headers={"Authorization": f"Bearer {credential}"})
                assert answer.status_code == 200
            api: dict[str, list[tuple[float, float]]] = {"exportd": [], "key": [], "bare": []}
            for _ in range(rounds):
                api["exportd"].append(wrk(ours, seconds, token))
                api["key"].append(wrk(ours, seconds, api_key))
                api["bare"].append(wrk(bare, seconds, None))
            rss_before = peak_rss_mib(web.pid)
            dl: dict[str, list[float]] = {"exportd": [], "nginx": []}
            for _ in range(rounds):
                dl["exportd"].append(curl_mbps(ours + "/download", token))
                dl["nginx"].append(curl_mbps(files, None))
            rss_after = peak_rss_mib(web.pid)
        sse = sse_watchers(env, base, token, watchers, batch)
    report(api, dl, rss_before, rss_after, size, seconds)
    report_sse(sse)
    record_figures(api, dl, rss_before, rss_after, sse)


def report(
    api: dict[str, list[tuple[float, float]]],
    dl: dict[str, list[float]],
    rss_before: float,
    rss_after: float,
    size: int,
    seconds: int,
) -> None:
    ours_rps = [r for r, _ in api["exportd"]]
    bare_rps = [r for r, _ in api["bare"]]
    print(f"API: wrk -t2 -c16 -d{seconds}s, {len(ours_rps)} rounds\n")
    print("| server | req/s median | min | max | p99 ms (median) |")
    print("|---|---|---|---|---|")
    for name, rows in (
        ("exportd GET /api/v1/jobs/{id}", api["exportd"]),
        ("exportd GET /api/v1/jobs/{id}, API key", api["key"]),
        ("bare Starlette route", api["bare"]),
    ):
        rps = [r for r, _ in rows]
        p99 = statistics.median(p for _, p in rows)
        print(f"| {name} | {summary(rps)} | {p99:.1f} |")
    key_rps = [r for r, _ in api["key"]]
    print(
        f"\nratio exportd / bare: {statistics.median(ours_rps) / statistics.median(bare_rps):.2f}"
    )
    print(f"ratio API key / JWT: {statistics.median(key_rps) / statistics.median(ours_rps):.2f}\n")
    print(f"Download of a {size / 2**20:,.0f} MiB package, curl -o /dev/null, one client\n")
    print("| server | MB/s median | min | max |")
    print("|---|---|---|---|")
    print(f"| exportd (FileResponse) | {summary(dl['exportd'])} |")
    print(f"| nginx sendfile | {summary(dl['nginx'])} |")
    ratio = statistics.median(dl["exportd"]) / statistics.median(dl["nginx"])
    print(f"\nratio exportd / nginx: {ratio:.2f}")
    print(f"exportd web peak RSS: {rss_before:.0f} MiB before downloads, {rss_after:.0f} MiB after")


def report_sse(sse: Watchers) -> None:
    print(f"\nEvent streams: {sse.watchers:,} clients following one job, one web process\n")
    print(
        "| clients | received the final event | last one after (s)"
        " | web RSS MiB: idle | all open | peak |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| {sse.watchers:,} | {sse.received_final:,} | {sse.seconds_to_last:.2f} |"
        f" {sse.rss_idle_mib:.0f} | {sse.rss_open_mib:.0f} | {sse.rss_peak_mib:.0f} |"
    )


def record_figures(
    api: dict[str, list[tuple[float, float]]],
    dl: dict[str, list[float]],
    rss_before: float,
    rss_after: float,
    sse: Watchers,
) -> None:
    """The figures above under stable names (bench/results.py)."""

    def rps(name: str) -> float:
        return statistics.median(r for r, _ in api[name])

    def p99(name: str) -> float:
        return statistics.median(p for _, p in api[name])

    all_received = sse.received_final == sse.watchers
    record(
        ratios={
            "api_job_status_vs_bare": rps("exportd") / rps("bare"),
            "api_key_vs_jwt": rps("key") / rps("exportd"),
            "download_vs_nginx": statistics.median(dl["exportd"]) / statistics.median(dl["nginx"]),
        },
        raw={
            "api_job_status_rps": round(rps("exportd")),
            "api_job_status_key_rps": round(rps("key")),
            "api_bare_rps": round(rps("bare")),
            "api_job_status_p99_ms": round(p99("exportd"), 2),
            "api_bare_p99_ms": round(p99("bare"), 2),
            "download_mbps": round(statistics.median(dl["exportd"])),
            "download_nginx_mbps": round(statistics.median(dl["nginx"])),
            "web_peak_rss_before_downloads_mib": round(rss_before, 1),
            "web_peak_rss_after_downloads_mib": round(rss_after, 1),
            "sse_watchers": sse.watchers,
            "sse_received_final": sse.received_final,
            "sse_seconds_to_last_final": round(sse.seconds_to_last, 3),
            "sse_rss_idle_mib": round(sse.rss_idle_mib, 1),
            "sse_rss_open_mib": round(sse.rss_open_mib, 1),
            # The target: every client got the final event, and the peak RSS
            # of the process (none when a client missed it: not met).
            f"sse_{sse.watchers}_rss_mib": round(sse.rss_peak_mib, 1) if all_received else None,
        },
    )


if __name__ == "__main__":
    main()
