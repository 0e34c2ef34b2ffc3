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
  uvicorn with the same settings (one process, no access log). The same
  exportd route is measured twice, with the JWT and with an API key
  (`Authorization: Bearer exk_…`, made by `exportd keys create`): the
  difference is what key authentication costs per request.
- Download: `curl -o /dev/null` of a `--size-mib` package (random bytes) from
  `exportd web` (Starlette FileResponse, with download tracking) and from
  nginx (`sendfile on`) serving the same file; MB/s and, for exportd, the
  process's peak RSS (VmHWM) before and after the downloads.

Needs wrk, curl and nginx (Debian: wrk, curl, nginx-light). Prints Markdown
tables (median, min, max over the rounds) for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path

import httpx
import psycopg

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
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


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
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="exportd-bench-http-"))
    try:
        run(base, args.size_mib << 20, args.rounds, args.seconds)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run(base: Path, size: int, rounds: int, seconds: int) -> None:
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
        bare_args = [
            str(VENV_BIN / "uvicorn"),
            "bench.bare_app:app",
            "--port",
            str(bare_port),
            "--no-access-log",
            "--no-server-header",
            "--log-level",
            "warning",
        ]
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
    report(api, dl, rss_before, rss_after, size, seconds)


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


if __name__ == "__main__":
    main()
