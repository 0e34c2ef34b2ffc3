"""The Starlette application, built from the settings by `create_app`.

Routes are listed here, one module per resource; errors are mapped in
`web.errors`. The pool opens in the lifespan, so a process serves requests
only once its database pool exists (requests fail fast with 503 while the
database is down, never hang).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route

from daemon.config import Settings
from daemon.db.pools import Database
from daemon.errors import ExportdError
from daemon.kinds.registry import KindRegistry
from daemon.storage.select import open_storage
from daemon.tokens import load_link_secret
from web import (
    admin,
    admin_keys,
    events,
    health,
    jobs,
    kinds,
    links,
    me,
    metrics,
    openapi,
    package_download,
    pages,
)
from web.auth import Authenticator
from web.context import ApiContext
from web.errors import ApiError, handle_exception, handle_http_exception
from web.job_json import API
from web.key_auth import KeyAuthMiddleware, KeyVerifier

POOL_TIMEOUT_SECONDS = 3.0  # a request waits this long for a connection, then 503


def routes() -> list[Route]:
    api = API
    return [
        Route(f"{api}/jobs", jobs.create_job, methods=["POST"]),
        Route(f"{api}/jobs", jobs.list_jobs, methods=["GET"]),
        Route(f"{api}/jobs/{{job_id}}", jobs.get_job, methods=["GET"]),
        Route(f"{api}/jobs/{{job_id}}/retry", jobs.retry_job, methods=["POST"]),
        Route(f"{api}/jobs/{{job_id}}/cancel", jobs.cancel_job, methods=["POST"]),
        Route(
            f"{api}/jobs/{{job_id}}/download", package_download.download, methods=["GET", "HEAD"]
        ),
        Route(f"{api}/jobs/{{job_id}}/links", links.create_link, methods=["POST"]),
        Route(f"{api}/links/{{token}}", links.follow_link, methods=["GET", "HEAD"]),
        Route(f"{api}/jobs/{{job_id}}/events", events.job_events, methods=["GET"]),
        Route(f"{api}/kinds", kinds.list_kinds, methods=["GET"]),
        Route(f"{api}/me", me.whoami, methods=["GET"]),
        Route(f"{api}/admin/dashboard", admin.dashboard, methods=["GET"]),
        Route(f"{api}/admin/kinds/{{kind}}/pause", kinds.pause_kind, methods=["POST"]),
        Route(f"{api}/admin/kinds/{{kind}}/resume", kinds.resume_kind, methods=["POST"]),
        Route(f"{api}/admin/keys", admin_keys.list_keys, methods=["GET"]),
        Route(f"{api}/admin/keys", admin_keys.create_key, methods=["POST"]),
        Route(f"{api}/admin/keys/{{prefix}}/revoke", admin_keys.revoke_key, methods=["POST"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", metrics.metrics, methods=["GET"]),
        Route("/openapi.json", openapi.openapi_json, methods=["GET"]),
    ]


def create_app(settings: Settings, database_url: str, registry: KindRegistry) -> Starlette:
    auth = Authenticator(settings)  # refuses to build without a way to verify tokens
    database = Database(database_url, role="web", max_size=10, timeout=POOL_TIMEOUT_SECONDS)
    keys = KeyVerifier(database)
    ctx = ApiContext(
        settings=settings,
        registry=registry,
        database=database,
        auth=auth,
        storage=open_storage(settings),
        link_secret=load_link_secret(settings),
        database_url=database_url,
        keys=keys,
    )

    hub = events.EventHub(database_url)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await database.open()
        hub.start()
        try:
            yield
        finally:
            await hub.stop()
            await database.close()

    app = Starlette(
        # The web pages and their assets after the API (web/pages.py).
        routes=[*routes(), *pages.routes()],
        # Metrics before keys: a request's time includes checking its API key.
        # Security headers (CSP, nosniff, no-referrer) on every answer.
        middleware=[
            Middleware(pages.SecurityHeadersMiddleware),
            Middleware(metrics.MetricsMiddleware),
            Middleware(KeyAuthMiddleware, verifier=keys),
        ],
        lifespan=lifespan,
        # Known errors are answered by ExceptionMiddleware; anything else goes to
        # the Exception handler (a logged 500 without details).
        exception_handlers={
            ApiError: handle_exception,
            ExportdError: handle_exception,
            HTTPException: handle_http_exception,
            Exception: handle_exception,
        },
    )
    app.state.ctx = ctx
    app.state.events = hub
    return app
