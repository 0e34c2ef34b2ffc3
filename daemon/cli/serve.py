"""Serving the HTTP API: `exportd web` (uvicorn) and `exportd up` (uvicorn + worker).

The app comes from the `web` package through the entry point group
`exportd.api` (pyproject.toml), so `daemon` never imports `web`.

The listening socket is bound first, before the embedded server or anything
else starts (`listen`): a taken port is one line and a non-zero exit at once,
with nothing to stop. uvicorn then serves on that socket.

Signals belong to exportd (`daemon.cli.stop`), not to uvicorn: its handler
re-raises the signal once it has shut down (which killed `up`'s worker before
it drained), and it `sys.exit`s from inside a task when its startup fails
(which left `up` cancelling a worker that was still starting, deaf to
SIGTERM). `ApiServer` drops the former; `_serve` turns the latter into an
error.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Generator
from contextlib import contextmanager
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.supervisors import Multiprocess

from daemon.cli import stop
from daemon.cli.connections import ServerConfig
from daemon.config import Settings
from daemon.errors import ConfigError, ExportdError
from daemon.kinds.registry import KindRegistry

if TYPE_CHECKING:
    from daemon.worker.process import WorkerDaemon

API_GROUP = "exportd.api"
# An idle kept-alive connection is closed after this long (uvicorn's default).
KEEP_ALIVE_SECONDS = 5
# On SIGTERM, open requests may finish for this long.
GRACEFUL_SHUTDOWN_SECONDS = 10
# How often `up` checks whether both the API and the worker are ready.
READY_POLL_SECONDS = 0.02


class ServeError(ExportdError):
    """The API could not listen or start."""


def create_app(settings: Settings, database_url: str, registry: KindRegistry) -> ASGIApp:
    """The HTTP API's ASGI app, from the package that provides it."""
    found = [e for e in entry_points(group=API_GROUP) if e.name == "app"]
    if not found:
        raise ConfigError("exportd web", "the HTTP API (package `web`) is not installed")
    app: ASGIApp = found[0].load()(settings, database_url, registry)
    return app


def listen(host: str, port: int) -> socket.socket:
    """Bind the API's address now, or raise ServeError naming it in one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn does: a port whose old connections linger in TIME_WAIT is
    # free; one another program listens on is not.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = (exc.strerror or str(exc) or type(exc).__name__).lower()
        raise ServeError(f"cannot listen on {where}: {reason}") from None
    sock.set_inheritable(True)  # `--workers N` processes serve on it too
    return sock


def server_config(app: ASGIApp | str, settings: Settings, **kwargs: Any) -> ServerConfig:
    """uvicorn's settings for exportd, the same for `web`, `web --workers N` and `up`."""
    return ServerConfig(
        app,
        header_timeout=settings.header_timeout_seconds,
        max_connections=settings.max_connections,
        log_config=None,  # exportd's logging (text or JSON) applies
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        **kwargs,
    )


class ApiServer(uvicorn.Server):
    """uvicorn's Server, leaving SIGINT/SIGTERM to exportd."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    def stop_on_signal(self) -> None:
        """A signal's stop: graceful the first time, at once the second."""
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


def server(settings: Settings, database_url: str, registry: KindRegistry) -> ApiServer:
    app = create_app(settings, database_url, registry)
    return ApiServer(server_config(app, settings))


async def _serve(srv: uvicorn.Server, sock: socket.socket) -> None:
    try:
        await srv.serve(sockets=[sock])
    except SystemExit:
        # uvicorn exits when the app's startup fails; it has logged why.
        raise ServeError("the HTTP API did not start (see the log above)") from None


def run_web(
    settings: Settings,
    database_url: str,
    registry: KindRegistry,
    sock: socket.socket,
    *,
    workers: int = 1,
) -> int:
    """`exportd web`: serve on `sock` until SIGTERM/SIGINT (graceful shutdown)."""
    if workers > 1:
        # Several processes: uvicorn's supervisor imports the app by name and
        # each process builds it from the same environment.
        if not settings.database_url:
            raise ConfigError("EXPORTD_DATABASE_URL", "--workers > 1 needs a configured database")
        config = server_config("web.asgi:build", settings, factory=True, workers=workers)
        Multiprocess(config, sockets=[sock]).run()  # handles the signals itself
        return 0
    srv = server(settings, database_url, registry)

    async def serve() -> None:
        with stop.on_signals(srv.stop_on_signal):
            await _serve(srv, sock)

    with asyncio.Runner(loop_factory=srv.config.get_loop_factory()) as runner:
        runner.run(serve())
    return 0


async def serve_with_worker(
    settings: Settings,
    database_url: str,
    registry: KindRegistry,
    srv: ApiServer,
    sock: socket.socket,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """`exportd up`: the API and a worker in one event loop, stopped together.

    `on_ready` runs once the API listens and the worker fetches jobs, so what
    it prints (the curl commands of `exportd up`) works when pasted at once.
    A signal at any moment stops both; so does either one ending (an error
    of one is raised once the other has stopped too).
    """
    # Only `up` runs a worker: `exportd web` never loads the worker package.
    from daemon.worker.process import WorkerDaemon

    worker: WorkerDaemon = WorkerDaemon(settings, database_url, registry)

    def stop_both() -> None:
        srv.should_exit = True
        worker.stop()

    def on_signal() -> None:
        srv.stop_on_signal()
        worker.stop()

    with stop.on_signals(on_signal):
        worker_task = asyncio.create_task(worker.run(), name="worker")
        serve_task = asyncio.create_task(_serve(srv, sock), name="api")
        both = {worker_task, serve_task}
        try:
            while not (srv.started and worker.ready.is_set()):
                if any(task.done() for task in both) or srv.should_exit:
                    break
                await asyncio.sleep(READY_POLL_SECONDS)
            else:
                if on_ready is not None:
                    on_ready()
            await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_both()
            await asyncio.wait(both)
        for task in (worker_task, serve_task):
            task.result()  # the error that ended it, if any
    return 0
