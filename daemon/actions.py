"""Creating, cancelling and retrying exports: the rules shared by the CLI and the API.

Validation happens before anything is written: an unknown kind or a bad
parameter never leaves a row or a queue entry behind.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from daemon.db import jobs as job_store
from daemon.errors import ExportdError, IdempotencyConflict, ParamError, TooManyExports
from daemon.kinds.registry import KindRegistry
from daemon.models import ACTIVE_STATUSES, Job, JobStatus, NewJob
from daemon.tasks import EXPORT_TASK
from daemon.webhooks.addresses import check_notify_url

# One year of 365 days (31 536 000 s), as docs/api.md and the OpenAPI schema say.
MAX_DELAY_SECONDS = 365 * 24 * 3600
MAX_ATTEMPTS_LIMIT = 100
PRIORITY_RANGE = range(-1000, 1001)


class NotRetryable(ExportdError):
    """The job cannot start a new run in its current state."""


class NotCancellable(ExportdError):
    """The job has already finished."""


class RequestError(ParamError):
    """A field of the request itself (priority, delay_seconds, max_attempts) is
    wrong — not one of the kind's params. Names the field as it is in the body
    (`priority: …`, not `params.priority: …`); a ParamError still, for callers
    that catch any invalid input to create_export."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        ExportdError.__init__(self, f"{field}: {problem}")


@dataclass(frozen=True)
class ExportRequest:
    kind: str
    params: Any = None
    priority: int = 0
    delay_seconds: float = 0
    max_attempts: int | None = None
    # Webhook endpoint of this job (DESIGN §12); its host must be allowed.
    notify_url: Any = None


def request_hash(request: ExportRequest) -> str:
    """sha256 of the request as the client sent it, in canonical JSON (sorted
    keys, no spaces; params exactly as sent, before defaults and conversions).

    An Idempotency-Key replay compares this, not the stored job: what is
    stored is normalised (a float 1e23 comes back from jsonb as another
    number) or not stored at all (delay_seconds). `request` must have passed
    `_check_request`, so every number in it is finite.
    """
    canonical = {
        "kind": request.kind,
        "params": request.params if request.params is not None else {},
        "priority": request.priority,
        "delay_seconds": float(request.delay_seconds),
        "max_attempts": request.max_attempts,
    }
    if request.notify_url is not None:
        # Only when given: the hashes of requests without one stay as they were.
        canonical["notify_url"] = request.notify_url
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _check_request(request: ExportRequest) -> None:
    if isinstance(request.priority, bool) or not isinstance(request.priority, int):
        raise RequestError("priority", "must be an integer")
    if request.priority not in PRIORITY_RANGE:
        raise RequestError("priority", "must be between -1000 and 1000")
    delay = request.delay_seconds
    if (
        isinstance(delay, bool)
        or not isinstance(delay, int | float)
        or not math.isfinite(delay)
        or delay < 0
    ):
        raise RequestError("delay_seconds", "must be a number >= 0")
    if delay > MAX_DELAY_SECONDS:
        raise RequestError("delay_seconds", f"must be at most {MAX_DELAY_SECONDS} (365 days)")
    attempts = request.max_attempts
    if attempts is not None and (
        isinstance(attempts, bool)
        or not isinstance(attempts, int)
        or not 1 <= attempts <= MAX_ATTEMPTS_LIMIT
    ):
        raise RequestError("max_attempts", f"must be an integer between 1 and {MAX_ATTEMPTS_LIMIT}")


def _notify_url(request: ExportRequest, allowed_hosts: tuple[str, ...]) -> str | None:
    """The job's webhook endpoint, checked against EXPORTD_WEBHOOK_ALLOWED_HOSTS
    (daemon.webhooks.addresses); every delivery is checked again."""
    if request.notify_url is None:
        return None
    try:
        return check_notify_url(request.notify_url, allowed_hosts)
    except ValueError as exc:
        raise RequestError("notify_url", str(exc)) from None


async def create_export(
    conn: job_store.Connection,
    registry: KindRegistry,
    request: ExportRequest,
    *,
    owner_id: str,
    idempotency_key: str | None = None,
    now: datetime | None = None,
    max_pending: int | None = None,
    notify_hosts: tuple[str, ...] = (),
) -> tuple[Job, bool]:
    """Validate and enqueue; returns (job, created). A replayed idempotency key
    with the same request returns the existing job with created=False.
    TooManyExports when the owner already has `max_pending` jobs waiting
    (EXPORTD_OWNER_MAX_PENDING; None: no limit) — a replay is still answered.
    A `notify_url` must name one of `notify_hosts` (EXPORTD_WEBHOOK_ALLOWED_HOSTS)."""
    kind = registry.get(request.kind)
    _check_request(request)
    notify_url = _notify_url(request, notify_hosts)
    params = kind.validate_params(request.params)
    max_attempts = request.max_attempts or kind.max_attempts or 3
    scheduled_at = None
    if request.delay_seconds:
        scheduled_at = (now or datetime.now(UTC)) + timedelta(seconds=request.delay_seconds)
    new = NewJob(
        kind=kind.name,
        owner_id=owner_id,
        params=params,
        priority=request.priority,
        max_attempts=max_attempts,
        idempotency_key=idempotency_key,
        scheduled_at=scheduled_at,
        notify_url=notify_url,
    )
    fingerprint = request_hash(request)
    try:
        job = await job_store.create_job(
            conn,
            new,
            queue=kind.queue,
            task=EXPORT_TASK,
            now=now,
            request_hash=fingerprint,
            max_pending=max_pending,
        )
    except (IdempotencyConflict, TooManyExports) as exc:
        # A replay of the key is answered even once the owner's queue is full.
        if idempotency_key is None:
            raise
        stored = await job_store.find_stored_request(conn, owner_id, idempotency_key)
        if stored is None and isinstance(exc, TooManyExports):
            raise
        if stored is not None and (
            stored.request_hash == fingerprint
            if stored.request_hash is not None
            else _same_request(stored.job, new)
        ):
            return stored.job, False
        raise IdempotencyConflict(
            "this Idempotency-Key was already used for a different request"
        ) from None
    return job, True


def _same_request(job: Job, new: NewJob) -> bool:
    """The comparison for jobs created before migration 0005 (no request_hash):
    the stored, normalised values. delay_seconds is not among them."""
    return (job.kind, job.params, job.priority, job.max_attempts) == (
        new.kind,
        new.params,
        new.priority,
        new.max_attempts,
    )


async def cancel_export(conn: job_store.Connection, job_id: UUID) -> Job:
    """pending → cancelled at once; in_progress → cancelling (the worker stops at its
    next check and rolls back); a job already cancelling is returned as it is;
    a finished job raises NotCancellable."""
    current = await job_store.get_job(conn, job_id)
    if current.status is JobStatus.CANCELLING:
        return current
    if current.status not in ACTIVE_STATUSES:
        raise NotCancellable(f"this job has already finished ({current.status.value})")
    job = await job_store.request_cancel(conn, job_id)
    if job.status not in (JobStatus.CANCELLED, JobStatus.CANCELLING):
        raise NotCancellable(f"this job has already finished ({job.status.value})")
    return job


async def retry_export(
    conn: job_store.Connection, registry: KindRegistry, job_id: UUID, *, now: datetime | None = None
) -> Job:
    """Start a new run; NotRetryable unless failed, rolled back, cancelled, or
    completed with its package gone — deleted, found missing by a download,
    or past its expiry though not deleted yet: whenever the download answers
    410, a re-export is allowed."""
    current = await job_store.get_job(conn, job_id)
    queue = registry.get(current.kind).queue if current.kind in registry else "exports"
    job = await job_store.retry_job(conn, job_id, queue=queue, task=EXPORT_TASK, now=now)
    if job is None:
        latest = await job_store.get_job(conn, job_id)
        if latest.status is JobStatus.COMPLETED:
            raise NotRetryable("this job's package still exists; download it instead")
        raise NotRetryable(f"a {latest.status.value} job cannot be retried")
    return job
