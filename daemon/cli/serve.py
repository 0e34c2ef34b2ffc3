"""Serving the HTTP API: `exportd web` (uvicorn) and `exportd up` (uvicorn + worker).

The app comes from the `web` package through the entry point group
`exportd.api` (pyproject.toml), so `daemon` never imports `web`.

uvicorn and procrastinate both want SIGTERM; in `up` one handler stops both:
uvicorn's own handling is kept for the server, and the worker is stopped
when the server shuts down.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from importlib.metadata import entry_points
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn
from starlette.types import ASGIApp

from daemon.config import Settings
from daemon.errors import ConfigError
from daemon.kinds.registry import KindRegistry

if TYPE_CHECKING:
    from daemon.worker.process import WorkerDaemon

API_GROUP = "exportd.api"


def create_app(settings: Settings, database_url: str, registry: KindRegistry) -> ASGIApp:
    """The HTTP API's ASGI app, from the package that provides it."""
    found = [e for e in entry_points(group=API_GROUP) if e.name == "app"]
    if not found:
        raise ConfigError("exportd web", "the HTTP API (package `web`) is not installed")
    app: ASGIApp = found[0].load()(settings, database_url, registry)
    return app


def server(
    settings: Settings,
    database_url: str,
    registry: KindRegistry,
    *,
    host: str | None = None,
    port: int | None = None,
) -> uvicorn.Server:
    app = create_app(settings, database_url, registry)
    config = uvicorn.Config(
        app,
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,  # exportd's logging (text or JSON) applies
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    return uvicorn.Server(config)


def run_web(
    settings: Settings,
    database_url: str,
    registry: KindRegistry,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int = 1,
) -> int:
    """`exportd web`: serve until SIGTERM/SIGINT (uvicorn's graceful shutdown)."""
    if workers > 1:
        # Several processes: uvicorn's supervisor imports the app by name and
        # each process builds it from the same environment.
        if not settings.database_url:
            raise ConfigError("EXPORTD_DATABASE_URL", "--workers > 1 needs a configured database")
        uvicorn.run(
            "web.asgi:build",
            factory=True,
            host=host or settings.host,
            port=port or settings.port,
            workers=workers,
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=10,
        )
        return 0
    srv = server(settings, database_url, registry, host=host, port=port)
    _quiet_after_shutdown()
    srv.run()
    return 0


def _quiet_after_shutdown(on_signal: Callable[[], None] | None = None) -> None:
    """uvicorn re-raises the signal that stopped it once it has shut down; with
    the default handlers that kills the process (status 143) — or, in `up`, the
    worker before it drained. These handlers make that last signal harmless."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if on_signal is not None:
            on_signal()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)


async def serve_with_worker(
    settings: Settings,
    database_url: str,
    registry: KindRegistry,
    srv: uvicorn.Server,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """`exportd up`: the API and a worker in one event loop, stopped together.

    `on_ready` runs once the API listens and the worker fetches jobs, so what
    it prints (the curl commands of `exportd up`) works when pasted at once.
    """
    # Only `up` runs a worker: `exportd web` never loads the worker package.
    from daemon.worker.process import WorkerDaemon

    worker: WorkerDaemon = WorkerDaemon(settings, database_url, registry)
    loop = asyncio.get_running_loop()

    def stop_worker() -> None:
        loop.call_soon_threadsafe(worker.stop)

    _quiet_after_shutdown(stop_worker)
    worker_task = asyncio.create_task(worker.run())
    serve_task = asyncio.create_task(srv.serve())  # ends after SIGINT/SIGTERM
    try:
        while not (srv.started and worker.ready.is_set()):
            if serve_task.done() or worker_task.done():
                break
            await asyncio.sleep(0.02)
        else:
            if on_ready is not None:
                on_ready()
        await serve_task
    finally:
        worker.stop()
        await worker_task
    return 0
