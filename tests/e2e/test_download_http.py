"""Downloads over real HTTP: `exportd worker` + `exportd web` processes, real
clients (curl, wget, aria2c), a client that hangs up, expiry while a
response streams, and nginx in front with X-Accel-Redirect."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.api_helpers import SECRET, bearer, token
from tests.e2e.processes import EXPORTD, free_port, wait_until_up, web, worker, worker_env

pytestmark = pytest.mark.slow
SIZE = 4_000_000
# Larger than loopback's socket buffers (up to 4 MiB each way): a client that
# hangs up after one chunk really leaves the response unfinished.
ABORTED_SIZE = 32_000_000


@dataclass
class Served:
    base: str
    job_id: str
    sha256: str
    size: int
    storage: Path

    @property
    def url(self) -> str:
        return f"{self.base}/api/v1/jobs/{self.job_id}/download"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} is not installed (`make test` installs it)"
    return path


def completed_package(base: str, size: int = SIZE) -> tuple[str, dict[str, Any]]:
    created = httpx.post(
        f"{base}/api/v1/jobs", json={"kind": "blob", "params": {"size": size}}, headers=bearer()
    )
    assert created.status_code == 202, created.text
    job_id = created.json()["data"]["job_id"]
    deadline = time.monotonic() + 60
    while True:
        job = httpx.get(f"{base}/api/v1/jobs/{job_id}", headers=bearer()).json()["data"]
        if job["status"] == "completed":
            return job_id, job["package"]
        assert job["status"] in ("pending", "in_progress"), job
        assert time.monotonic() < deadline, "export did not complete"
        time.sleep(0.1)


@contextmanager
def serving(db_url: str, tmp_path: Path, size: int = SIZE, **extra: str) -> Iterator[Served]:
    storage = tmp_path / "packages"
    env = worker_env(db_url, storage, EXPORTD_JWT_SECRET=SECRET, EXPORTD_RATE_LIMIT="off", **extra)
    with worker(env, tmp_path, "worker"), web(env, tmp_path) as base:
        job_id, package = completed_package(base, size)
        yield Served(base, job_id, package["sha256"], package["size_bytes"], storage)


def download_count(db_url: str, job_id: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT download_count FROM exportd.jobs WHERE job_id = %s", (job_id,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def later(db_url: str, job_id: str) -> None:
    """Move the last completed download an hour back: the next is a new download."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE exportd.jobs SET last_downloaded_at = last_downloaded_at - interval '1 hour'"
            " WHERE job_id = %s",
            (job_id,),
        )


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_resuming_clients_get_the_exact_package(db_url: str, tmp_path: Path) -> None:
    auth = f"Authorization: Bearer {token()}"
    with serving(db_url, tmp_path) as served:
        # curl: a first piece, then `-C -` continues where the file ends.
        out = tmp_path / "curl.tar.gz"
        curl = tool("curl")
        subprocess.run(
            [curl, "-sf", "-H", auth, "-r", "0-999999", "-o", out, served.url], check=True
        )
        assert out.stat().st_size == 1_000_000
        assert download_count(db_url, served.job_id) == 0
        subprocess.run([curl, "-sf", "-H", auth, "-C", "-", "-o", out, served.url], check=True)
        assert sha256_of(out) == served.sha256
        assert download_count(db_url, served.job_id) == 1
        later(db_url, served.job_id)

        # wget -c on a partial file.
        partial = tmp_path / "wget.tar.gz"
        partial.write_bytes(out.read_bytes()[:1_234_567])
        subprocess.run(
            [tool("wget"), "-q", "-c", "--header", auth, "-O", partial, served.url], check=True
        )
        assert sha256_of(partial) == served.sha256
        assert download_count(db_url, served.job_id) == 2
        later(db_url, served.job_id)

        # aria2c with eight connections: eight ranged responses, one download.
        subprocess.run(
            [
                tool("aria2c"),
                "-q",
                "-x8",
                "-s8",
                "-k1M",
                "--allow-overwrite=true",
                "--auto-file-renaming=false",
                f"--header={auth}",
                "-d",
                tmp_path,
                "-o",
                "aria.tar.gz",
                served.url,
            ],
            check=True,
        )
        assert sha256_of(tmp_path / "aria.tar.gz") == served.sha256
        assert download_count(db_url, served.job_id) == 3
        with psycopg.connect(db_url) as conn:
            rows = conn.execute(
                "SELECT count(*) FILTER (WHERE status_code = 206),"
                "       count(*) FILTER (WHERE completed)"
                "  FROM exportd.downloads WHERE job_id = %s",
                (served.job_id,),
            ).fetchone()
        # curl's two pieces and wget's resume were ranged; aria2c splits the
        # file over several connections when they open before the first one
        # is done (on loopback it may not need to). However many responses
        # reached the end, each of the three downloads counted once.
        assert rows is not None and rows[0] >= 3 and rows[1] >= 3


def test_disconnect_is_recorded_and_expiry_does_not_break_a_stream(
    db_url: str, tmp_path: Path
) -> None:
    with serving(db_url, tmp_path, ABORTED_SIZE) as served:
        # A client that hangs up after the first chunk: an aborted download.
        with (
            httpx.Client(timeout=10) as client,
            client.stream("GET", served.url, headers=bearer()) as response,
        ):
            assert response.status_code == 200
            next(response.iter_raw())
        deadline = time.monotonic() + 10
        while True:
            with psycopg.connect(db_url) as conn:
                row = conn.execute(
                    "SELECT finished_at IS NOT NULL, completed, bytes_sent FROM exportd.downloads"
                    " WHERE job_id = %s",
                    (served.job_id,),
                ).fetchone()
            if row is not None and row[0]:
                break
            assert time.monotonic() < deadline, "the aborted download was not closed"
            time.sleep(0.1)
        assert row[1] is False and 0 < row[2] < ABORTED_SIZE
        assert download_count(db_url, served.job_id) == 0

        # Expiry while a response streams: it completes intact; the next is 410.
        with (
            httpx.Client(timeout=30) as client,
            client.stream("GET", served.url, headers=bearer()) as response,
        ):
            chunks = iter(response.iter_raw())
            body = [next(chunks)]
            with psycopg.connect(db_url, autocommit=True) as conn:
                conn.execute(
                    "UPDATE exportd.jobs SET package_expires_at = now() - interval '1 second'"
                    " WHERE job_id = %s",
                    (served.job_id,),
                )
            # The real retention run, while the response is still streaming.
            expired = subprocess.run(
                [EXPORTD, "cleanup"],
                env=worker_env(db_url, served.storage),
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            assert not list(served.storage.rglob("*.tar.gz")), expired.stdout
            body.extend(chunks)
        assert hashlib.sha256(b"".join(body)).hexdigest() == served.sha256
        after = httpx.get(served.url, headers=bearer())
        assert after.status_code == 410 and after.json()["code"] == "PACKAGE_EXPIRED"


NGINX_CONF = """
worker_processes 1;
{user}
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    sendfile on;
    server {{
        listen 127.0.0.1:{port};
        location /protected/ {{
            internal;
            alias {storage}/;
            add_header X-Package-Size $upstream_http_x_package_size;
            add_header Cache-Control $upstream_http_cache_control;
        }}
        location / {{
            proxy_pass http://{upstream};
            proxy_buffering off;
        }}
    }}
}}
"""


@contextmanager
def nginx(tmp_path: Path, upstream: str, storage: Path) -> Iterator[str]:
    directory = tmp_path / "nginx"
    directory.mkdir()
    port = free_port()
    conf = directory / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(
        NGINX_CONF.format(
            user=user, dir=directory, port=port, upstream=upstream, storage=storage.resolve()
        )
    )
    # Find nginx before opening anything: a missing tool must fail the test,
    # not leak an open log file into the next one (filterwarnings = error).
    command = [tool("nginx"), "-p", str(directory), "-c", str(conf)]
    command += ["-e", str(directory / "error.log")]
    with (directory / "out.log").open("w") as out:
        proc = subprocess.Popen(command, stderr=subprocess.STDOUT, stdout=out)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(f"{base}/healthz", proc)
            yield base
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_nginx_offload_with_x_accel_redirect(db_url: str, tmp_path: Path) -> None:
    with serving(db_url, tmp_path, EXPORTD_ACCEL_REDIRECT="/protected/") as served:
        upstream = served.base.removeprefix("http://")
        with nginx(tmp_path, upstream, served.storage) as front:
            url = served.url.replace(served.base, front)
            direct = httpx.get(served.url, headers=bearer())
            assert direct.status_code == 200 and direct.content == b""
            assert direct.headers["x-accel-redirect"].startswith("/protected/")

            full = httpx.get(url, headers=bearer())
            assert full.status_code == 200
            assert hashlib.sha256(full.content).hexdigest() == served.sha256
            assert full.headers["content-type"] == "application/gzip"
            assert full.headers["content-disposition"].startswith(
                'attachment; filename="export-blob-'
            )
            assert full.headers["content-length"] == str(served.size)
            assert full.headers["x-package-size"].endswith("MB")

            part = httpx.get(url, headers={**bearer(), "Range": "bytes=100-199"})
            assert part.status_code == 206 and part.content == full.content[100:200]
            assert part.headers["content-range"] == f"bytes 100-199/{served.size}"

            other = httpx.get(url, headers=bearer("bob"))
            assert other.status_code == 403 and other.json()["code"] == "DOWNLOAD_UNAUTHORIZED"
            # The internal location is not reachable from outside.
            relative = direct.headers["x-accel-redirect"]
            assert httpx.get(front + relative).status_code == 404

        with psycopg.connect(db_url) as conn:
            rows = conn.execute(
                "SELECT status_code, range_header, completed FROM exportd.downloads"
                " WHERE job_id = %s ORDER BY download_id",
                (served.job_id,),
            ).fetchall()
        assert rows == [(200, None, True), (200, None, True), (206, "bytes=100-199", False)]
        # Both whole-file requests came seconds apart: one download.
        assert download_count(db_url, served.job_id) == 1
