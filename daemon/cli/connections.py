"""HTTP connections of the API: uvicorn's h11 protocol with two limits it lacks.

uvicorn closes a kept-alive connection that stays idle after a response
(`timeout_keep_alive`), but nothing else: a connection that never sends a
byte, or trickles a request head one byte at a time (slowloris), stays open
forever, and a few hundred of them exhaust the process's file descriptors —
legitimate requests then fail. `GuardedH11Protocol` adds:

- a head timeout: a connection that has not sent a complete request head
  `header_timeout` seconds after it opened, or after its previous response,
  is closed (`EXPORTD_HEADER_TIMEOUT_SECONDS`);
- a connection limit: beyond `max_connections` open connections, a new one is
  closed as it arrives, so descriptors stay within the process's limit
  (`EXPORTD_MAX_CONNECTIONS`, the web unit's `LimitNOFILE`).

The values travel in `ServerConfig`, a uvicorn Config (picklable, as the
processes of `exportd web --workers N` need).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

log = logging.getLogger(__name__)


class ServerConfig(uvicorn.Config):
    """uvicorn's Config, serving with `GuardedH11Protocol` and its limits."""

    def __init__(
        self, app: Any, *, header_timeout: float, max_connections: int, **kwargs: Any
    ) -> None:
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        super().__init__(app, http=GuardedH11Protocol, **kwargs)


class GuardedH11Protocol(H11Protocol):
    """One HTTP/1.1 connection, closed when its request head is too slow."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        guarded = config if isinstance(config, ServerConfig) else None
        self.header_timeout = guarded.header_timeout if guarded else None
        self.max_connections = guarded.max_connections if guarded else None
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(  # type: ignore[override]  # as uvicorn's own
        self, transport: asyncio.Transport
    ) -> None:
        # (uvloop's transports are no asyncio.Transport subclasses: no isinstance.)
        super().connection_made(transport)
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            log.warning(
                "connection limit (%d) reached: closing a new connection",
                self.max_connections,
                extra={"action": "http.connection_limit"},
            )
            transport.close()
            return
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            # The head is complete (or the connection failed): its request
            # runs as long as it needs.
            self._disarm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Kept alive and waiting for the next request: its head is timed from
        # now (uvicorn's keep-alive timer closes it sooner if nothing comes).
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        if self.header_timeout is not None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        log.debug("no request head in time: closing", extra={"action": "http.head_timeout"})
        with contextlib.suppress(h11.LocalProtocolError):
            self.conn.send(h11.ConnectionClosed())
        self.transport.close()
