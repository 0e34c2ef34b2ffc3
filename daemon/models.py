"""The job record as Python sees it: one frozen dataclass per table row."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID


class JobStatus(StrEnum):
    """Mirror of the `exportd.job_status` enum (DESIGN §3 state machine)."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_STATUSES


ACTIVE_STATUSES = frozenset({JobStatus.PENDING, JobStatus.IN_PROGRESS, JobStatus.CANCELLING})
# Statuses after which nothing more happens without a manual retry. `failed`
# is one of them only once settled (see `Job.is_finished`).
FINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.ROLLED_BACK, JobStatus.CANCELLED})


def package_name(kind: str, created_at: datetime) -> str:
    """`export-{kind}-{YYYY-MM-DD}.tar.gz`: the file name offered to browsers,
    and (without `.tar.gz`) the top directory inside the package. The date is
    the job's creation day in UTC, known before the package is built."""
    return f"export-{kind}-{created_at.astimezone(UTC).date().isoformat()}.tar.gz"


@dataclass(frozen=True)
class Job:
    """A row of `exportd.jobs`; field names are the column names."""

    job_id: UUID
    kind: str
    owner_id: str | None
    params: dict[str, Any]
    status: JobStatus
    priority: int
    run: int
    attempts: int
    max_attempts: int
    steps_completed: int
    steps_total: int
    current_step: str | None
    progress_percentage: int
    result: Any
    error_message: str | None
    idempotency_key: str | None
    queue_job_id: int | None
    package_path: str | None
    package_size_bytes: int | None
    package_sha256: str | None
    package_expires_at: datetime | None
    package_deleted_at: datetime | None
    download_count: int
    last_downloaded_at: datetime | None
    scheduled_at: datetime
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    # Webhook endpoint of this job (migration 0010; DESIGN §12).
    notify_url: str | None = None

    def __post_init__(self) -> None:
        # psycopg hands the enum over as text; keep the typed value.
        object.__setattr__(self, "status", JobStatus(self.status))

    @property
    def is_finished(self) -> bool:
        """Nothing more will happen to this job until someone retries it.

        `failed` is also the status while a final failure rolls back; the
        settle that ends the rollback (or the rescue of a lost attempt) sets
        `completed_at`, so a `failed` job with `completed_at` is finished.
        """
        if self.status in FINAL_STATUSES:
            return True
        return self.status is JobStatus.FAILED and self.completed_at is not None

    @property
    def package_name(self) -> str:
        return package_name(self.kind, self.created_at)


@dataclass(frozen=True)
class NewJob:
    """What a caller supplies to create a job; the database fills the rest."""

    kind: str
    owner_id: str | None
    params: dict[str, Any]
    priority: int = 0
    max_attempts: int = 3
    idempotency_key: str | None = None
    scheduled_at: datetime | None = None  # None: now
    notify_url: str | None = None  # webhook endpoint, checked by daemon.actions
