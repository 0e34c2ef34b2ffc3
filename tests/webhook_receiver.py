"""A real webhook receiver on loopback for the tests.

Every request is verified with the `standardwebhooks` package — an
independent implementation of the Standard Webhooks scheme — so exportd's
signatures are never checked by exportd's own code alone. What it answers
is programmable: a queue of planned answers (a status code, or HANG: hold
the request until the test releases it), then `default`; a delay per
request for the slow-receiver test. It can be stopped and started again on
the same port (a receiver that is down for a while).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

HANG = -1


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a killed worker, a timed-out attempt) is
        part of the tests, not a failure to print."""


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it."""

    headers: dict[str, str]
    body: bytes
    verified: bool
    answered: int  # the status code it answered (HANG: none)

    @property
    def payload(self) -> Any:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    """An HTTP server in a thread that records and verifies deliveries."""

    def __init__(self, secret: str, port: int = 0) -> None:
        self.verifier = Webhook(secret)
        self.plan: deque[int] = deque()
        self.default = 200
        self.delay = 0.0
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.released = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self.port = port
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    receiver.verifier.verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    verified = False
                with receiver.lock:
                    answer = receiver.plan.popleft() if receiver.plan else receiver.default
                    receiver.received.append(Received(headers, body, verified, answer))
                if receiver.delay:
                    time.sleep(receiver.delay)
                if answer == HANG:
                    receiver.released.wait(60)
                    return
                self.send_response(answer)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = _Server(("127.0.0.1", self.port), Handler)
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def close(self) -> None:
        self.released.set()
        self.stop()

    def of_type(self, event_type: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.payload["type"] == event_type]

    def count(self) -> int:
        with self.lock:
            return len(self.received)
