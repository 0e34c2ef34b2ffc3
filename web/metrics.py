"""GET /metrics: Prometheus metrics of this API process and of the job table.

Two kinds of figures:

- counters and histograms this process keeps (requests by route template and
  status, request durations, download bytes) in prometheus-client's default
  registry — per process, like every Prometheus client; sum them across
  processes in the query;
- figures read from PostgreSQL at scrape time (jobs by status, queue depth,
  the duration of recently completed jobs, packages on disk, the cleanup
  totals every worker's retention runs add to, which kinds are paused, the
  webhook delivery attempts by outcome), so
  they are the same whichever process is scraped and need no worker
  endpoint. That read
  has a deadline: with the database down, /metrics still answers at once with
  the process metrics and `exportd_database_up 0`;
- free bytes of the work and storage volumes (`exportd_volume_free_bytes`,
  one statvfs each), read on this process's host: with workers on other
  hosts, their own log warns when they stop starting exports for lack of
  space (docs/operations.md, "A full disk").

/metrics needs no token; keep it on an internal network. So that no request
can grow it, every label value comes from a fixed set: the route template
of the route table (or `unmatched`), one of KNOWN_METHODS (or `other`), the
status code exportd answered, the kinds of this process's configuration,
`work` or `storage`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
)
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from daemon.db.metrics import CLEANUP_TOTALS, WEBHOOK_OUTCOMES, read_figures
from daemon.models import JobStatus
from daemon.storage.volumes import VOLUMES, free_space
from web.context import api_context

SCRAPE_DEADLINE_SECONDS = 2.0
# Upper bounds (seconds) of the job duration buckets.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
# The `method` label values; any other request method is counted as "other"
# (the method is whatever the request line says: it must not mint labels).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})

REQUESTS = Counter(
    "exportd_http_requests",
    "HTTP requests answered, by route template, method and status code",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "exportd_http_request_duration_seconds",
    "Time to the start of the response (downloads: not the transfer), by route template",
    ["route"],
)
# Incremented by web.package_download with the body bytes each download response sent.
DOWNLOAD_BYTES = Counter(
    "exportd_download_bytes", "Package bytes sent by download responses (exportd itself)"
)


class MetricsMiddleware:
    """Counts every request under its route template (bounded label values)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def observing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                _child(REQUEST_SECONDS, (_route(scope),)).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            _child(REQUESTS, (_route(scope), _method(scope), str(status["code"]))).inc()


# The metric of each label set, once looked up: `labels()` takes a lock and
# checks its arguments on every call (twice per request). Bounded like the
# label values themselves.
_CHILDREN: dict[tuple[Any, tuple[str, ...]], Any] = {}


def _child(metric: Counter | Histogram, labels: tuple[str, ...]) -> Any:
    key = (metric, labels)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*labels)
    return child


def _method(scope: Scope) -> str:
    method = scope.get("method")
    return method if method in KNOWN_METHODS else "other"


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class DatabaseFigures(Collector):
    """The figures read from PostgreSQL for one scrape."""

    def __init__(self, rows: dict[str, Any] | None, kinds: Iterable[str] = ()) -> None:
        self.rows = rows
        self.kinds = list(kinds)  # the label values of exportd_kind_paused

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("exportd_database_up", "1 when this scrape could read the database")
        up.add_metric([], 0 if self.rows is None else 1)
        yield up
        if self.rows is None:
            return
        jobs = GaugeMetricFamily(
            "exportd_jobs", "Jobs in exportd.jobs by status", labels=["status"]
        )
        counts = {str(s): int(n) for s, n in self.rows["by_status"]}
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status.value, 0))
        yield jobs
        depth = GaugeMetricFamily(
            "exportd_queue_depth", "Queue entries waiting to run, by queue", labels=["queue"]
        )
        for queue, n in self.rows["queue"]:
            depth.add_metric([str(queue)], int(n))
        yield depth
        oldest = GaugeMetricFamily(
            "exportd_queue_oldest_pending_seconds", "Age of the oldest job waiting to run"
        )
        oldest.add_metric([], float(self.rows["oldest_pending"] or 0.0))
        yield oldest
        yield self._durations(self.rows)
        packages = GaugeMetricFamily("exportd_packages", "Packages in storage")
        packages.add_metric([], int(self.rows["packages"]))
        yield packages
        size = GaugeMetricFamily("exportd_package_bytes", "Bytes of the packages in storage")
        size.add_metric([], int(self.rows["package_bytes"]))
        yield size
        paused = GaugeMetricFamily(
            "exportd_kind_paused",
            "1 while the kind is paused (its pending jobs wait), else 0",
            labels=["kind"],
        )
        for kind in self.kinds:
            paused.add_metric([kind], 1 if kind in self.rows["paused"] else 0)
        yield paused
        # Totals of every cleanup run so far, whichever process ran it.
        totals = self.rows["cleanup"]
        for name, help_text in CLEANUP_TOTALS.items():
            counter = CounterMetricFamily(f"exportd_cleanup_{name}", help_text)
            counter.add_metric([], int(totals.get(name, 0)))
            yield counter
        # Webhook delivery attempts of every worker, by outcome (a fixed set).
        deliveries = CounterMetricFamily(
            "exportd_webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered: a 2xx answer)",
            labels=["outcome"],
        )
        for outcome in WEBHOOK_OUTCOMES:
            deliveries.add_metric([outcome], int(self.rows["webhooks"].get(outcome, 0)))
        yield deliveries

    @staticmethod
    def _durations(rows: dict[str, Any]) -> GaugeHistogramMetricFamily:
        # A gauge histogram: jobs completed in the last hour, recomputed at
        # every scrape (it may go down), not a counter since process start.
        family = GaugeHistogramMetricFamily(
            "exportd_job_duration_seconds",
            "Run time (started_at to completed_at) of jobs completed in the last hour",
        )
        cumulative = [int(n) for n in rows["durations"]]
        buckets = [(str(b), n) for b, n in zip(DURATION_BUCKETS, cumulative, strict=True)]
        buckets.append(("+Inf", int(rows["duration_count"])))
        family.add_metric([], buckets, gsum_value=float(rows["duration_sum"]))
        return family


class VolumeFigures(Collector):
    """Free bytes of the work and storage volumes (`daemon.storage.volumes`),
    as this process's host sees them, and the workers' floor."""

    def __init__(self, free: dict[str, int | None], min_free_bytes: int) -> None:
        self.free = free
        self.min_free_bytes = min_free_bytes

    def collect(self) -> Iterator[Any]:
        free = GaugeMetricFamily(
            "exportd_volume_free_bytes",
            "Bytes still free for exportd on the volume of running steps' files "
            "(work) and of packages (storage; local backend only)",
            labels=["volume"],
        )
        for volume in VOLUMES:
            value = self.free.get(volume)
            if value is not None:
                free.add_metric([volume], value)
        yield free
        floor = GaugeMetricFamily(
            "exportd_min_free_bytes",
            "EXPORTD_MIN_FREE_BYTES: below it on either volume a worker starts no export",
        )
        floor.add_metric([], self.min_free_bytes)
        yield floor


async def _read_free_space(request: Request) -> dict[str, int | None]:
    """statvfs in a thread, with the scrape's deadline (a stalled network
    mount leaves the figures out instead of hanging /metrics)."""
    settings = api_context(request).settings
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(free_space, settings), timeout=SCRAPE_DEADLINE_SECONDS
        )
    except Exception:
        return {}


async def _read_figures(request: Request) -> dict[str, Any] | None:
    ctx = api_context(request)

    async def read() -> dict[str, Any]:
        async with ctx.database.connection(wait_seconds=SCRAPE_DEADLINE_SECONDS) as conn:
            return asdict(await read_figures(conn, DURATION_BUCKETS))

    try:
        return await asyncio.wait_for(read(), timeout=SCRAPE_DEADLINE_SECONDS + 0.5)
    except Exception:
        return None


def _exposition(registries: Iterable[CollectorRegistry]) -> bytes:
    return b"".join(generate_latest(r) for r in registries)


async def metrics(request: Request) -> Response:
    figures = CollectorRegistry()
    kinds = api_context(request).registry.names()
    figures.register(DatabaseFigures(await _read_figures(request), kinds))
    free = await _read_free_space(request)
    figures.register(VolumeFigures(free, api_context(request).settings.min_free_bytes))
    return Response(_exposition((REGISTRY, figures)), media_type=CONTENT_TYPE_LATEST)
