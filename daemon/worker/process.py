"""`exportd worker`: the long-running process that executes exports.

Around procrastinate's Worker it adds what an operator of a daemon expects:

- a clear one-line error and exit status 1 when the database is unreachable
  or not migrated at start;
- reconnection with backoff when the database goes away later (the
  procrastinate worker stops when its listener or heartbeat fails; we start
  a new one once the database answers again);
- SIGTERM/SIGINT: stop fetching, let running exports finish for
  EXPORTD_SHUTDOWN_GRACE_SECONDS, then cancel them (they roll back and are
  retried elsewhere). Heartbeats continue while they drain: procrastinate
  stops its own heartbeat before waiting (its issue #1585), which would let
  another worker's rescue re-run a job that is still running here;
- systemd notifications: READY=1 once registered, WATCHDOG=1 at half the
  watchdog interval, STOPPING=1 on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterable

from procrastinate import exceptions as pexceptions
from procrastinate.worker import Worker

from daemon.config import Settings
from daemon.db.connect import translated_errors
from daemon.db.migrations import schema_is_current
from daemon.errors import DatabaseUnavailable, MigrationError
from daemon.kinds.registry import KindRegistry
from daemon.worker.runtime import ExportRuntime
from daemon.worker.sdnotify import SystemdNotifier

log = logging.getLogger(__name__)

MAX_RECONNECT_DELAY = 30.0


def check_database(url: str) -> None:
    """Fail fast, in one line, when the database is unreachable or not migrated."""
    if not schema_is_current(url):
        raise MigrationError("the database schema is not up to date; run `exportd migrate`")


class WorkerDaemon:
    """Runs procrastinate workers until asked to stop, reconnecting as needed."""

    def __init__(
        self,
        settings: Settings,
        database_url: str,
        registry: KindRegistry,
        *,
        concurrency: int | None = None,
        queues: Iterable[str] | None = None,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.settings = settings
        self.database_url = database_url
        self.concurrency = concurrency or settings.worker_concurrency
        self.queues = list(queues) if queues else None
        self.notifier = notifier or SystemdNotifier()
        self.runtime = ExportRuntime(
            settings, database_url, registry, pool_size=self.concurrency + 4
        )
        self.stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self._worker: Worker | None = None

    def stop(self) -> None:
        """Begin a graceful shutdown (idempotent; safe from a signal handler)."""
        if self.stopping.is_set():
            return
        log.info("stop requested: finishing running exports", extra={"action": "worker.stop"})
        self.notifier.notify("STOPPING=1")
        self.stopping.set()
        if self._worker is not None:
            self._worker.stop()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        # SIGHUP too: a closed terminal or a stray `kill -HUP` drains like SIGTERM
        # instead of dropping running exports (there is nothing to reload).
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self.stop)

    async def run(self) -> int:
        await asyncio.to_thread(check_database, self.database_url)
        await asyncio.to_thread(self.runtime.storage.ensure)
        watchdog = asyncio.create_task(self._watchdog())
        delay = 1.0
        try:
            while not self.stopping.is_set():
                try:
                    with translated_errors():
                        await self._run_once()
                    delay = 1.0
                except (DatabaseUnavailable, pexceptions.ConnectorException, OSError) as exc:
                    if self.stopping.is_set():
                        break
                    log.warning(
                        "database connection lost (%s); reconnecting in %.0f s",
                        str(exc).strip().splitlines()[0]
                        if str(exc).strip()
                        else type(exc).__name__,
                        delay,
                        extra={"action": "worker.reconnect"},
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stopping.wait(), timeout=delay)
                    delay = min(delay * 2, MAX_RECONNECT_DELAY)
        finally:
            watchdog.cancel()
        log.info("worker stopped", extra={"action": "worker.stopped"})
        return 0

    async def _run_once(self) -> None:
        settings = self.settings
        async with self.runtime.app.open_async():
            worker = Worker(
                self.runtime.app,
                queues=self.queues,
                name="exportd",
                concurrency=self.concurrency,
                wait=True,
                fetch_job_polling_interval=settings.poll_seconds,
                abort_job_polling_interval=min(5.0, settings.poll_seconds),
                shutdown_graceful_timeout=settings.shutdown_grace_seconds,
                listen_notify=True,
                install_signal_handlers=False,
                update_heartbeat_interval=settings.heartbeat_seconds,
                stalled_worker_timeout=settings.stalled_after_seconds,
            )
            self._worker = worker
            run = asyncio.create_task(worker.run(), name="procrastinate worker")
            announce = asyncio.create_task(self._announce_ready(worker))
            drain_heartbeat: asyncio.Task[None] | None = None
            try:
                stop = asyncio.create_task(self.stopping.wait())
                await asyncio.wait({run, stop}, return_when=asyncio.FIRST_COMPLETED)
                if self.stopping.is_set():
                    drain_heartbeat = asyncio.create_task(self._heartbeat_while_draining(worker))
                    worker.stop()
                stop.cancel()
                await run  # drains running exports; raises if the database went away
            finally:
                announce.cancel()
                if drain_heartbeat is not None:
                    drain_heartbeat.cancel()
                self._worker = None

    async def _announce_ready(self, worker: Worker) -> None:
        # procrastinate offers no event for "registered"; poll its attribute.
        while worker.worker_id is None:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if not self.ready.is_set():
            self.ready.set()
            self.notifier.notify("READY=1")
        log.info(
            "worker %s ready (concurrency %d, queues %s)",
            worker.worker_id,
            self.concurrency,
            ", ".join(self.queues or ["all"]),
            extra={"action": "worker.ready"},
        )

    async def _heartbeat_while_draining(self, worker: Worker) -> None:
        """Keep this worker visibly alive while its running exports finish."""
        while True:
            worker_id = worker.worker_id
            if worker_id is not None:
                try:
                    await self.runtime.app.job_manager.update_heartbeat(worker_id)
                except Exception as exc:
                    log.warning("heartbeat failed while draining: %s", exc)
            await asyncio.sleep(self.settings.heartbeat_seconds)

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        while True:
            self.notifier.notify("WATCHDOG=1")
            await asyncio.sleep(interval)


async def run_worker(
    settings: Settings,
    database_url: str,
    registry: KindRegistry,
    *,
    concurrency: int | None = None,
    queues: Iterable[str] | None = None,
) -> int:
    """Entry point of `exportd worker` (signals installed here)."""
    daemon = WorkerDaemon(settings, database_url, registry, concurrency=concurrency, queues=queues)
    daemon.install_signal_handlers()
    return await daemon.run()
