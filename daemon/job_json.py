"""The job object (DESIGN §6): its JSON and its OpenAPI schema, from one table.

Each field is written once, with its schema and how to read it from a `Job`;
`job_json()` and the `Job`/`Progress`/`Package` schemas of /openapi.json are
both built from these tables, so the document cannot drift from what the
handlers send (tests/integration/web/test_openapi.py checks real responses too).
Here, not in `web`: the API answers with it, and the worker's webhooks
(`daemon.maintenance.webhooks`) send the same object.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any

from daemon.models import Job, JobStatus

API = "/api/v1"

Getter = Callable[[Job], Any]
Fields = dict[str, tuple[dict[str, Any], Getter]]

_TIMESTAMP = {"type": "string", "format": "date-time"}
_NULLABLE_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}


# Timestamps already written, by (instant, zone): a job's timestamps repeat
# on every read of it (a client polling its status, the event streams), and
# `isoformat` was the most expensive part of the job JSON (seven of them,
# each several times the cost of a lookup). Bounded: cleared when full.
_ISO: dict[tuple[datetime, Any, int], str] = {}
_ISO_MAX = 8192


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    # Zone and fold are part of the key: datetimes compare equal across
    # zones (same instant) and across folds (same zone, same wall time),
    # yet are written with different offsets.
    key = (value, value.tzinfo, value.fold)
    text = _ISO.get(key)
    if text is None:
        if len(_ISO) >= _ISO_MAX:
            _ISO.clear()
        text = _ISO[key] = value.isoformat().replace("+00:00", "Z")
    return text


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


PROGRESS: Fields = {
    "steps_completed": ({"type": "integer", "minimum": 0}, lambda j: j.steps_completed),
    "steps_total": ({"type": "integer", "minimum": 0}, lambda j: j.steps_total),
    "current_step": ({"type": ["string", "null"]}, lambda j: j.current_step),
    "percentage": (
        {"type": "integer", "minimum": 0, "maximum": 100},
        lambda j: j.progress_percentage,
    ),
}

PACKAGE: Fields = {
    "size_bytes": ({"type": "integer", "minimum": 0}, lambda j: j.package_size_bytes),
    "sha256": ({"type": "string", "pattern": "^[0-9a-f]{64}$"}, lambda j: j.package_sha256),
    "expires_at": (_NULLABLE_TIMESTAMP, lambda j: iso(j.package_expires_at)),
    "deleted_at": (_NULLABLE_TIMESTAMP, lambda j: iso(j.package_deleted_at)),
    "download_url": ({"type": "string"}, lambda j: f"{API}/jobs/{j.job_id}/download"),
    "download_count": ({"type": "integer", "minimum": 0}, lambda j: j.download_count),
    "last_downloaded_at": (_NULLABLE_TIMESTAMP, lambda j: iso(j.last_downloaded_at)),
}


def _read(fields: Fields, job: Job) -> dict[str, Any]:
    return {name: get(job) for name, (_, get) in fields.items()}


def _package(job: Job) -> dict[str, Any] | None:
    return _read(PACKAGE, job) if job.package_sha256 is not None else None


JOB: Fields = {
    "job_id": ({"type": "string", "format": "uuid"}, lambda j: str(j.job_id)),
    "kind": ({"type": "string"}, lambda j: j.kind),
    "status": ({"enum": [s.value for s in JobStatus]}, lambda j: j.status.value),
    "owner_id": ({"type": ["string", "null"]}, lambda j: j.owner_id),
    "params": ({"type": "object"}, lambda j: j.params),
    "priority": ({"type": "integer"}, lambda j: j.priority),
    "attempts": ({"type": "integer", "minimum": 0}, lambda j: j.attempts),
    "max_attempts": ({"type": "integer", "minimum": 1}, lambda j: j.max_attempts),
    "progress": (ref("Progress"), lambda j: _read(PROGRESS, j)),
    "result": ({"description": "What the kind returned (row counts, …)"}, lambda j: j.result),
    "error_message": ({"type": ["string", "null"]}, lambda j: j.error_message),
    "package": ({"oneOf": [ref("Package"), {"type": "null"}]}, _package),
    "scheduled_at": (_TIMESTAMP, lambda j: iso(j.scheduled_at)),
    "created_at": (_TIMESTAMP, lambda j: iso(j.created_at)),
    "updated_at": (_TIMESTAMP, lambda j: iso(j.updated_at)),
    "started_at": (_NULLABLE_TIMESTAMP, lambda j: iso(j.started_at)),
    "completed_at": (_NULLABLE_TIMESTAMP, lambda j: iso(j.completed_at)),
    "notify_url": (
        {
            "type": ["string", "null"],
            "format": "uri",
            "description": "Webhook endpoint of this job (DESIGN §12), as it was given",
        },
        lambda j: j.notify_url,
    ),
}


# Not a column: whether the job waits on a paused kind (DESIGN §13). The
# handler knows which kinds are paused (daemon.kinds.pauses.waiting_on_pause).
PAUSED_SCHEMA = {
    "type": "boolean",
    "description": "Pending, and its kind is paused: it starts once the kind is resumed",
}


def job_json(job: Job, paused_kinds: Collection[str] = ()) -> dict[str, Any]:
    """The job object of DESIGN §6; `paused_kinds`: the kinds paused now."""
    paused = job.status is JobStatus.PENDING and job.kind in paused_kinds
    return {**_read(JOB, job), "paused": paused}


def _schema(fields: Fields) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(fields),
        "properties": {name: dict(schema) for name, (schema, _) in fields.items()},
    }


def schemas() -> dict[str, Any]:
    """The OpenAPI component schemas of the job object."""
    job = _schema(JOB)
    job["required"].append("paused")
    job["properties"]["paused"] = dict(PAUSED_SCHEMA)
    return {"Progress": _schema(PROGRESS), "Package": _schema(PACKAGE), "Job": job}
