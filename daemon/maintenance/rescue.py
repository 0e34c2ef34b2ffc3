"""Rescue of stalled attempts: a worker that stopped heartbeating lost its job.

procrastinate lists the jobs whose worker's heartbeat is older than
`EXPORTD_STALLED_AFTER_SECONDS`; `exportd.rescue_lost()` (migration 0003)
records each such attempt as `lost` and retries the job with backoff, fails
it when no attempt is left, or ends a pending cancellation. It runs as a
periodic task every half of that threshold, and for an attempt that ended
without being settled. The same tick queues again the webhook deliveries
a stalled worker was making (`daemon.maintenance.webhooks.retry_stalled`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from procrastinate import manager

from daemon.config import Settings
from daemon.db import attempts
from daemon.db.pools import Pool
from daemon.maintenance import webhooks
from daemon.tasks import EXPORT_TASK

log = logging.getLogger(__name__)


async def rescue(pool: Pool, settings: Settings, queue_job_id: int, *, attempt: int) -> str:
    """Record one lost attempt and retry (or fail) its job."""
    retry_at = datetime.now(UTC) + timedelta(seconds=settings.retry_delay(attempt))
    return await attempts.rescue_lost(pool, queue_job_id, retry_at=retry_at)


async def rescue_stalled(jobs: manager.JobManager, pool: Pool, settings: Settings) -> int:
    """Retry (or fail) exports whose worker stopped heartbeating."""
    stalled = await jobs.get_stalled_jobs(
        task_name=EXPORT_TASK, seconds_since_heartbeat=settings.stalled_after_seconds
    )
    rescued = 0
    for job in stalled:
        assert job.id is not None
        outcome = await rescue(pool, settings, job.id, attempt=job.attempts + 1)
        rescued += outcome in ("retried", "failed", "cancelled")
    if rescued:
        log.warning("rescued %d stalled export(s)", rescued, extra={"action": "rescue"})
    await webhooks.retry_stalled(jobs, settings)
    return rescued
