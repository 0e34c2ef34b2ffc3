"""`exportd web` closes connections that hold descriptors without a request:
silent ones, slowloris ones trickling a head, idle kept-alive ones, and new
ones beyond EXPORTD_MAX_CONNECTIONS — and keeps answering real requests.

Everything goes to the server on loopback, in loops bounded by count and time.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.api_helpers import SECRET, bearer, token
from tests.e2e.processes import web, worker_env

pytestmark = pytest.mark.slow

HEADER_TIMEOUT = 2.0
# Closed by then at the latest (timeout, timer resolution, a busy machine).
CLOSE_DEADLINE = HEADER_TIMEOUT + 8
SILENT = 60
SLOWLORIS = 5
# How often a slowloris connection sends one more byte of its head: the pace
# of the attack being simulated, well under the header timeout.
TRICKLE_SECONDS = 0.25


def address(base: str) -> tuple[str, int]:
    parts = urlsplit(base)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed `sock` (end of stream or reset); never blocks."""
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def open_connections(stack: ExitStack, server: tuple[str, int], count: int) -> list[socket.socket]:
    """`count` connected sockets, non-blocking (`closed_by_server` never waits)."""
    socks = []
    for _ in range(count):
        sock = stack.enter_context(socket.create_connection(server, timeout=5))
        sock.setblocking(False)
        socks.append(sock)
    return socks


def watch_until_closed(
    silent: list[socket.socket], slow: list[socket.socket], deadline: float
) -> dict[socket.socket, float]:
    """Trickle one header byte per round into each slow connection until every
    connection is closed or the deadline passes; when each one closed."""
    closed: dict[socket.socket, float] = {}
    trickle = b"X-Slow: " + b"a" * 4096
    sent = 0
    everyone = silent + slow
    while len(closed) < len(everyone) and time.monotonic() < deadline:
        open_ones = [s for s in everyone if s not in closed]
        # Wait for a close (readable) at most one trickle period.
        readable, _, _ = select.select(open_ones, [], [], TRICKLE_SECONDS)
        now = time.monotonic()
        for sock in readable:
            if closed_by_server(sock):
                closed[sock] = now
        for sock in slow:
            if sock not in closed and sent < len(trickle):
                try:
                    sock.send(trickle[sent : sent + 1])
                except OSError:
                    closed[sock] = now
        sent += 1
    return closed


def get_healthz(sock: socket.socket) -> bytes:
    """One request on a blocking socket; the whole response (head and body)."""
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: exportd\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


@contextmanager
def guarded_web(db_url: str, tmp_path: Path, **settings: str) -> Iterator[str]:
    env = worker_env(
        db_url,
        tmp_path / "packages",
        EXPORTD_JWT_SECRET=SECRET,
        EXPORTD_RATE_LIMIT="off",
        **settings,
    )
    with web(env, tmp_path) as base:
        yield base


def test_silent_and_slowloris_connections_are_closed(db_url: str, tmp_path: Path) -> None:
    with (
        guarded_web(db_url, tmp_path, EXPORTD_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT)) as base,
        ExitStack() as stack,
    ):
        server = address(base)
        opened = time.monotonic()
        silent = open_connections(stack, server, SILENT)
        slow = open_connections(stack, server, SLOWLORIS)
        for sock in slow:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: exportd\r\n")
        # While they are held, the API answers.
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        closed = watch_until_closed(silent, slow, opened + CLOSE_DEADLINE)
        still_open = len(silent) + len(slow) - len(closed)
        assert still_open == 0, f"{still_open} connections still open after {CLOSE_DEADLINE} s"
        # Closed by the timeout, not at once.
        assert min(closed.values()) - opened >= HEADER_TIMEOUT * 0.5
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200


def test_a_complete_request_is_not_cut_by_the_header_timeout(db_url: str, tmp_path: Path) -> None:
    """The timeout is for the head only: a kept-alive connection serves one
    request after another, and is closed once idle (keep-alive timeout)."""
    with (
        guarded_web(db_url, tmp_path, EXPORTD_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT)) as base,
        socket.create_connection(address(base), timeout=5) as sock,
    ):
        for _ in range(3):
            head = get_healthz(sock)
            assert head.startswith(b"HTTP/1.1 200"), head
        idle_since = time.monotonic()
        sock.settimeout(CLOSE_DEADLINE + 5)
        assert sock.recv(4096) == b""  # the server closed the idle connection
        assert time.monotonic() - idle_since < CLOSE_DEADLINE + 5


def test_connections_beyond_the_limit_are_closed_at_once(db_url: str, tmp_path: Path) -> None:
    limit = 20
    with (
        guarded_web(db_url, tmp_path, EXPORTD_MAX_CONNECTIONS=str(limit)) as base,
        ExitStack() as stack,
    ):
        server = address(base)
        held = open_connections(stack, server, limit)
        # The server has taken them all once one more request on one of them
        # is answered (connections are accepted in order).
        held[0].setblocking(True)
        held[0].settimeout(5)
        assert get_healthz(held[0]).startswith(b"HTTP/1.1 200")
        (extra,) = open_connections(stack, server, 1)
        readable, _, _ = select.select([extra], [], [], 10)
        assert readable and closed_by_server(extra), "a connection beyond the limit stayed open"
        assert not any(closed_by_server(sock) for sock in held[1:])
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 10
        while True:  # the server notices the closes; then a new client is served
            try:
                if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "no request served after the flood ended"
            time.sleep(0.05)


def test_a_long_response_outlives_the_header_timeout(db_url: str, tmp_path: Path) -> None:
    """An event stream of a pending job (no worker runs it) stays open past
    the header timeout: only the head is timed."""
    with guarded_web(db_url, tmp_path, EXPORTD_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT)) as base:
        created = httpx.post(f"{base}/api/v1/jobs", json={"kind": "noop"}, headers=bearer())
        job_id = created.json()["data"]["job_id"]
        with socket.create_connection(address(base), timeout=5) as sock:
            sock.sendall(
                f"GET /api/v1/jobs/{job_id}/events HTTP/1.1\r\nHost: exportd\r\n"
                f"Authorization: Bearer {token()}\r\n\r\n".encode()
            )
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            sock.setblocking(False)
            # The stream's duration is the scenario: well past the header timeout.
            until = time.monotonic() + 2 * HEADER_TIMEOUT + 1
            while (left := until - time.monotonic()) > 0:
                select.select([sock], [], [], left)
                assert not closed_by_server(sock), "the event stream was cut"
