"""GET /api/v1/admin/dashboard: the queue's health for the admin page (admins only).

One answer holds what an operator would otherwise read with psql (DESIGN
§15): per kind, how many exports wait, run and failed in the last hour, how
old the oldest waiting one is and whether the kind is paused; the workers
and their heartbeats; the running exports with the worker that holds each;
the stalled ones; the last 50 failures with their errors; the webhook
endpoints whose receivers keep failing (their URLs without query string or
fragment, where an application may have put a token). All of it comes
from one database snapshot (`daemon.db.dashboard`). Every kind this server
knows is listed, with zeros when nothing of it is active; a kind that is no
longer configured but still has active jobs is listed too (`known: false`).

Acting on what it shows goes through the existing endpoints: pause and
resume a kind (`web.kinds`), retry a failed job (`POST /api/v1/jobs/{id}/retry`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import JSONResponse

from daemon.db import dashboard as dashboard_store
from daemon.db.dashboard import Dashboard, KindFigures
from daemon.kinds.registry import KindRegistry
from web.context import api_context
from web.errors import ApiError
from web.job_json import iso

JSON = "application/json"
NOT_ADMIN = "only admins may read the queue dashboard"


async def dashboard(request: Request) -> JSONResponse:
    ctx = api_context(request)
    principal = ctx.principal(request)
    if not principal.admin:
        raise ApiError(403, "FORBIDDEN", NOT_ADMIN)
    unknown = sorted(request.query_params)
    if unknown:
        raise ApiError(
            400, "VALIDATION_ERROR", f"unknown parameter {unknown[0]!r}", field=unknown[0]
        )
    async with ctx.connection() as conn:
        figures = await dashboard_store.read_dashboard(conn)
    return JSONResponse(
        {"data": dashboard_json(figures, ctx.registry)}, headers={"Cache-Control": "no-store"}
    )


def dashboard_json(figures: Dashboard, registry: KindRegistry) -> dict[str, Any]:
    return {
        "taken_at": iso(figures.taken_at),
        "kinds": _kinds(figures.kinds, registry),
        "workers": [_plain(asdict(w)) for w in figures.workers],
        "running": [_plain(asdict(j)) for j in figures.running],
        "stalled": [_plain(asdict(j)) for j in figures.stalled],
        "failures": [_plain(asdict(j)) for j in figures.failures],
        "webhooks": [{**_plain(asdict(w)), "url": _without_query(w.url)} for w in figures.webhooks],
    }


def _without_query(url: str) -> str:
    """Scheme, host and path: a query string or fragment may carry a receiver's token."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _kinds(rows: list[KindFigures], registry: KindRegistry) -> list[dict[str, Any]]:
    """Every configured kind (zeros when idle), then any other kind the rows name."""
    found = {row.kind: row for row in rows}
    names = registry.names() + sorted(set(found) - set(registry.names()))
    kinds = []
    for name in names:
        row = found.get(name) or KindFigures(name, 0, 0, 0, 0, None, False, None, None)
        title = registry.get(name).title if name in registry else None
        kinds.append({**_plain(asdict(row)), "title": title, "known": name in registry})
    return kinds


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """JSON values: ids as strings, times as ISO 8601 with Z."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        if name == "job_id":
            value = str(value)
        elif hasattr(value, "isoformat"):
            value = iso(value)
        out[name] = value
    return out


# -- OpenAPI -------------------------------------------------------------------

_TIMESTAMP = {"type": "string", "format": "date-time"}
_NULLABLE_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}
_SECONDS = {"type": ["number", "null"], "minimum": 0}
_COUNT = {"type": "integer", "minimum": 0}
_JOB_FIELDS: dict[str, dict[str, Any]] = {
    "job_id": {"type": "string", "format": "uuid"},
    "kind": {"type": "string"},
    "owner_id": {"type": ["string", "null"]},
    "status": {"type": "string"},
    "attempts": {"type": "integer", "minimum": 0},
    "max_attempts": {"type": "integer", "minimum": 1},
}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(properties),
        "additionalProperties": False,
        "properties": properties,
    }


def schemas() -> dict[str, Any]:
    """The `Dashboard` schema of /openapi.json and its parts."""
    ref = {name: {"$ref": f"#/components/schemas/{name}"} for name in _PARTS}
    return {
        "Dashboard": _object(
            {
                "taken_at": {**_TIMESTAMP, "description": "The moment every figure describes"},
                "kinds": {"type": "array", "items": ref["DashboardKind"]},
                "workers": {"type": "array", "items": ref["DashboardWorker"]},
                "running": {"type": "array", "items": ref["DashboardRunningJob"]},
                "stalled": {"type": "array", "items": ref["DashboardStalledJob"]},
                "failures": {"type": "array", "items": ref["DashboardFailure"]},
                "webhooks": {"type": "array", "items": ref["DashboardFailingWebhook"]},
            }
        ),
        "DashboardKind": _object(
            {
                "kind": {"type": "string"},
                "title": {"type": ["string", "null"]},
                "known": {
                    "type": "boolean",
                    "description": "Configured on this server (false: only its jobs remain)",
                },
                "pending": {**_COUNT, "description": "Waiting, due now"},
                "scheduled_later": {**_COUNT, "description": "Waiting, not due yet"},
                "running": {**_COUNT, "description": "in_progress or cancelling"},
                "failed_last_hour": {
                    **_COUNT,
                    "description": "Ended failed or rolled_back in the last hour",
                },
                "oldest_pending_seconds": {
                    **_SECONDS,
                    "description": "Age of the oldest due pending job; null: none",
                },
                "paused": {"type": "boolean"},
                "paused_at": _NULLABLE_TIMESTAMP,
                "paused_by": {"type": ["string", "null"]},
            }
        ),
        "DashboardWorker": _object(
            {
                "worker_id": {"type": "integer", "description": "procrastinate's worker id"},
                "last_heartbeat": _NULLABLE_TIMESTAMP,
                "heartbeat_age_seconds": _SECONDS,
                "running_jobs": _COUNT,
            }
        ),
        "DashboardRunningJob": _object(
            {
                **_JOB_FIELDS,
                "progress_percentage": {"type": "integer", "minimum": 0, "maximum": 100},
                "current_step": {"type": ["string", "null"]},
                "started_at": _NULLABLE_TIMESTAMP,
                "worker_id": {"type": ["integer", "null"]},
                "worker": {
                    "type": ["string", "null"],
                    "description": "The process of the open attempt: exportd-worker host:pid#id",
                },
                "heartbeat_age_seconds": _SECONDS,
            }
        ),
        "DashboardStalledJob": _object(
            {
                **_JOB_FIELDS,
                "started_at": _NULLABLE_TIMESTAMP,
                "worker_id": {"type": ["integer", "null"]},
                "heartbeat_age_seconds": {
                    **_SECONDS,
                    "description": "null: the worker is gone altogether",
                },
            }
        ),
        "DashboardFailure": _object(
            {
                **_JOB_FIELDS,
                "error_message": {"type": ["string", "null"]},
                "failed_at": _TIMESTAMP,
            }
        ),
        "DashboardFailingWebhook": _object(
            {
                "url": {
                    "type": "string",
                    "description": "The endpoint, without query string or fragment",
                },
                "configured": {
                    "type": "boolean",
                    "description": "Configured by the operator (false: a job's notify_url)",
                },
                "pending": {**_COUNT, "description": "Events queued for delivery"},
                "failing": {
                    **_COUNT,
                    "description": "Events not delivered after at least one attempt",
                },
                "last_error": {"type": ["string", "null"]},
                "last_error_at": _NULLABLE_TIMESTAMP,
                "oldest_undelivered_seconds": _SECONDS,
            }
        ),
    }


_PARTS = (
    "DashboardKind",
    "DashboardWorker",
    "DashboardRunningJob",
    "DashboardStalledJob",
    "DashboardFailure",
    "DashboardFailingWebhook",
)


def openapi_paths(
    secured: list[dict[str, list[str]]],
    common: dict[str, Any],
    error: Callable[..., dict[str, Any]],
) -> dict[str, Any]:
    """The path item of /openapi.json; `common` and `error` from web.openapi."""
    body = {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"$ref": "#/components/schemas/Dashboard"}},
    }
    return {
        "/api/v1/admin/dashboard": {
            "get": {
                "operationId": "adminDashboard",
                "summary": (
                    "Queue health per kind, workers, running and stalled exports,"
                    " the last 50 failures, failing webhook endpoints: one snapshot"
                ),
                "security": secured,
                "responses": {
                    "200": {
                        "description": "The figures the admin page shows",
                        "headers": {"Cache-Control": {"schema": {"const": "no-store"}}},
                        "content": {JSON: {"schema": body}},
                    },
                    "400": error("Unknown query parameter", "VALIDATION_ERROR"),
                    "403": error("Only admins may read the dashboard", "FORBIDDEN"),
                    **common,
                },
            }
        }
    }
