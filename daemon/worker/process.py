"""`exportd worker`: the long-running process that executes exports.

Around procrastinate's Worker it adds what an operator of a daemon expects:

- a clear one-line error and exit status 1 when the database is unreachable
  or not migrated at start;
- reconnection with backoff when the database goes away later (the
  procrastinate worker stops when its listener or heartbeat fails; we start
  a new one once the database answers again);
- SIGTERM/SIGINT at any moment: while starting, the start is abandoned at
  once; once running, stop fetching, let running exports finish for
  EXPORTD_SHUTDOWN_GRACE_SECONDS, then cancel them (they roll back and are
  retried elsewhere). Heartbeats continue while they drain: procrastinate
  stops its own heartbeat before waiting (its issue #1585), which would let
  another worker's rescue re-run a job that is still running here;
- systemd notifications: READY=1 once registered, WATCHDOG=1 at half the
  watchdog interval, STOPPING=1 on shutdown;
- webhook deliveries (queue `webhooks`) on a procrastinate Worker of their
  own, with EXPORTD_WEBHOOK_CONCURRENCY slots: a receiver that takes its
  time holds a delivery slot, never an export's. The export Worker serves
  the other queues (`exports` and those of the configured kinds); `--queue`
  picks among both.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TypeVar

from procrastinate import exceptions as pexceptions
from procrastinate.worker import Worker

from daemon.config import Settings
from daemon.db.connect import translated_errors
from daemon.db.copy import close_export_connections
from daemon.db.migrations import schema_is_current
from daemon.db.pools import pooled
from daemon.errors import DatabaseUnavailable, MigrationError
from daemon.kinds.registry import KindRegistry
from daemon.maintenance import webhooks
from daemon.tasks import DEFAULT_QUEUE, WEBHOOK_QUEUE
from daemon.worker.runtime import ExportRuntime
from daemon.worker.sdnotify import SystemdNotifier

log = logging.getLogger(__name__)

MAX_RECONNECT_DELAY = 30.0

T = TypeVar("T")


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
        self.export_queues, self.serves_webhooks = split_queues(self.queues, registry)
        self.notifier = notifier or SystemdNotifier()
        webhook_slots = settings.webhook_concurrency if self.serves_webhooks else 0
        self.runtime = ExportRuntime(
            settings, database_url, registry, pool_size=self.concurrency + webhook_slots + 4
        )
        self.stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self._workers: list[Worker] = []

    def stop(self) -> None:
        """Begin a graceful shutdown (idempotent; safe from a signal handler)."""
        if self.stopping.is_set():
            return
        log.info("stop requested: finishing running exports", extra={"action": "worker.stop"})
        self.notifier.notify("STOPPING=1")
        self.stopping.set()
        for worker in self._workers:
            worker.stop()

    @contextlib.contextmanager
    def signal_handlers(self) -> Iterator[None]:
        """SIGTERM/SIGINT/SIGHUP stop the worker while in the block; then the
        handlers that were there before are back (closing the event loop
        would leave the default ones, which kill at once)."""
        loop = asyncio.get_running_loop()
        # SIGHUP too: a closed terminal or a stray `kill -HUP` drains like SIGTERM
        # instead of dropping running exports (there is nothing to reload).
        signums = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {signum: signal.getsignal(signum) for signum in signums}
        for signum in signums:
            loop.add_signal_handler(signum, self.stop)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                loop.remove_signal_handler(signum)
                if handler is not None:
                    signal.signal(signum, handler)

    async def run(self) -> int:
        # A stop while starting (checking the schema, connecting) ends the
        # start at once: nothing waits for a worker that is not running yet.
        if not await self._unless_stopping(in_daemon_thread(check_database, self.database_url)):
            return 0
        if not await self._unless_stopping(in_daemon_thread(self.runtime.storage.ensure)):
            return 0
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
            # Idle ones only: every export has ended by now.
            await asyncio.to_thread(close_export_connections)
        log.info("worker stopped", extra={"action": "worker.stopped"})
        return 0

    async def _unless_stopping(self, step: Awaitable[object]) -> bool:
        """Await `step`, or cancel it when a stop comes first (False)."""
        task = asyncio.ensure_future(step)
        stopping = asyncio.create_task(self.stopping.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            return False
        task.result()  # raises what the step raised
        return True

    async def _run_once(self) -> None:
        try:
            if await self._unless_stopping(self.runtime.connector.open_async()):
                await self._work()
        finally:
            await self.runtime.connector.close_async()

    async def _work(self) -> None:
        """The procrastinate Workers on the open app (exports, webhook
        deliveries), until they stop or one fails."""
        async with pooled(self.runtime.pool) as conn:
            await webhooks.sync_endpoints(conn, self.settings)
        workers = self._make_workers()
        self._workers = workers
        runs = [asyncio.create_task(w.run(), name="procrastinate worker") for w in workers]
        announce = asyncio.create_task(self._announce_ready(workers))
        drain_heartbeat: asyncio.Task[None] | None = None
        try:
            stop = asyncio.create_task(self.stopping.wait())
            await asyncio.wait({*runs, stop}, return_when=asyncio.FIRST_COMPLETED)
            if self.stopping.is_set():
                drain_heartbeat = asyncio.create_task(self._heartbeat_while_draining(workers))
            for worker in workers:
                worker.stop()  # asked to, or one of them ended: the others end too
            stop.cancel()
            # Drains running exports; raises if the database went away.
            for outcome in await asyncio.gather(*runs, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    raise outcome
        finally:
            announce.cancel()
            if drain_heartbeat is not None:
                drain_heartbeat.cancel()
            self._workers = []

    def _make_workers(self) -> list[Worker]:
        settings = self.settings
        wanted: list[tuple[list[str], int, str]] = []
        if self.export_queues:
            wanted.append((self.export_queues, self.concurrency, "exportd"))
        if self.serves_webhooks:
            wanted.append(([WEBHOOK_QUEUE], settings.webhook_concurrency, "exportd-webhooks"))
        return [
            Worker(
                self.runtime.app,
                queues=queues,
                name=name,
                concurrency=concurrency,
                wait=True,
                fetch_job_polling_interval=settings.poll_seconds,
                abort_job_polling_interval=min(5.0, settings.poll_seconds),
                shutdown_graceful_timeout=settings.shutdown_grace_seconds,
                listen_notify=True,
                install_signal_handlers=False,
                update_heartbeat_interval=settings.heartbeat_seconds,
                stalled_worker_timeout=settings.stalled_after_seconds,
            )
            for queues, concurrency, name in wanted
        ]

    async def _announce_ready(self, workers: list[Worker]) -> None:
        # procrastinate offers no event for "registered"; poll its attribute.
        while any(worker.worker_id is None for worker in workers):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if not self.ready.is_set():
            self.ready.set()
            self.notifier.notify("READY=1")
        log.info(
            "worker %s ready (concurrency %d, queues %s%s)",
            ", ".join(str(worker.worker_id) for worker in workers),
            self.concurrency,
            ", ".join(self.export_queues) or "none",
            f"; webhooks: {self.settings.webhook_concurrency}" if self.serves_webhooks else "",
            extra={"action": "worker.ready"},
        )

    async def _heartbeat_while_draining(self, workers: list[Worker]) -> None:
        """Keep this worker visibly alive while its running exports finish."""
        while True:
            for worker in workers:
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


async def in_daemon_thread(func: Callable[..., T], *args: object) -> T:
    """`func(*args)` in a thread of its own that nobody waits for once the
    await is cancelled. `asyncio.to_thread` would do, but the loop's closing
    joins its threads: a stop during a connect to an unresponsive server
    would wait out the connect timeout."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def target() -> None:
        try:
            result = func(*args)
        except BaseException as exc:
            deliver = functools.partial(settle, functools.partial(future.set_exception, exc))
        else:
            deliver = functools.partial(settle, functools.partial(future.set_result, result))
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(deliver)

    threading.Thread(target=target, name=getattr(func, "__name__", "step"), daemon=True).start()
    return await future


def split_queues(queues: list[str] | None, registry: KindRegistry) -> tuple[list[str], bool]:
    """The export Worker's queues, and whether webhooks are delivered here.
    No `--queue`: every queue an export of this configuration can be on,
    and webhooks."""
    if queues is None:
        return sorted({DEFAULT_QUEUE} | {kind.queue for kind in registry}), True
    return [q for q in queues if q != WEBHOOK_QUEUE], WEBHOOK_QUEUE in queues


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
    with daemon.signal_handlers():
        return await daemon.run()
