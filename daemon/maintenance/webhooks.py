"""Delivering webhooks (DESIGN §12): the procrastinate task of the outbox.

The trigger of migration 0010 writes each event and queues one delivery per
endpoint (task `exportd.deliver_webhook`, queue `webhooks`) in the
transaction of the job change. One run of the task is one attempt: read the
event, build the body, sign it, POST it through the SSRF guard
(`daemon.webhooks.sender`), record the attempt. A failed attempt raises, and
`WebhookRetry` schedules the next one with exponential backoff —
EXPORTD_WEBHOOK_RETRY_BASE_SECONDS doubled each time, at most an hour —
until EXPORTD_WEBHOOK_RETRY_HOURS after the event (or the redelivery) was
queued; then procrastinate marks the entry failed and `exportd webhooks ls
--failed` shows it. A destination the guard refuses is not retried: only a
change of configuration can help, then `exportd webhooks redeliver`.

A worker SIGKILLed mid-attempt leaves the entry `doing`; the periodic rescue
(`retry_stalled`) puts it back in the queue once the worker's heartbeat is
stale. The receiver may then see the event twice: the same `webhook-id`
tells it so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from procrastinate import App, JobContext, manager
from procrastinate import jobs as pjobs
from procrastinate.retry import BaseRetryStrategy, RetryDecision

from daemon.config import Settings
from daemon.db import webhooks as store
from daemon.db.connect import Connection
from daemon.db.pools import Pool
from daemon.errors import ConfigError
from daemon.models import Job
from daemon.tasks import WEBHOOK_QUEUE, WEBHOOK_TASK
from daemon.tokens import load_link_secret
from daemon.webhooks import payload, sender, signing
from daemon.webhooks.endpoints import secret_bytes

log = logging.getLogger(__name__)

MAX_RETRY_DELAY_SECONDS = 3600.0


class DeliveryFailed(Exception):
    """The attempt did not get a 2xx: retried while the window is open."""


class DeliveryAbandoned(Exception):
    """Retrying cannot help (the guard refused the destination, no secret)."""


class WebhookRetry(BaseRetryStrategy):
    """Exponential backoff until the delivery's window closes."""

    def __init__(self, settings: Settings) -> None:
        self.base = settings.webhook_retry_base_seconds
        self.window = timedelta(hours=settings.webhook_retry_hours)

    def delay(self, attempts: int) -> float:
        """Seconds before the next attempt, after `attempts` earlier ones
        (procrastinate's count: 0 after the first attempt failed)."""
        return float(min(MAX_RETRY_DELAY_SECONDS, self.base * 2 ** min(attempts, 30)))

    def get_retry_decision(
        self, *, exception: BaseException, job: pjobs.Job
    ) -> RetryDecision | None:
        if isinstance(exception, DeliveryAbandoned):
            return None
        retry_at = datetime.now(UTC) + timedelta(seconds=self.delay(job.attempts))
        since = datetime.fromisoformat(str(job.task_kwargs.get("since")))
        if retry_at > since + self.window:
            log.warning(
                "webhook not delivered within the retry window; given up",
                extra={"event_id": job.task_kwargs.get("event_id"), "action": "webhook.given_up"},
            )
            return None
        return RetryDecision(retry_at=retry_at)


class Deliverer:
    """One attempt of one event to one endpoint."""

    def __init__(self, settings: Settings, pool: Callable[[], Pool]) -> None:
        self.settings = settings
        self._pool = pool
        self.endpoints = {e.url: e for e in settings.webhook_endpoints}
        self._link_secret: str | None = None
        self._link_secret_known = False

    async def deliver(self, event_id: UUID, url: str, queue_job_id: int) -> None:
        extra: dict[str, Any] = {"event_id": str(event_id), "action": "webhook.deliver"}
        pool = self._pool()
        delivery = await store.delivery(pool, event_id, url, queue_job_id)
        if delivery is None:
            log.info("webhook event no longer exists (pruned with its job)", extra=extra)
            return
        extra["job_id"] = str(delivery.job.job_id)
        if delivery.already_delivered:
            return
        secret = self._secret(url, delivery.job.notify_url)
        attempted_at = datetime.now(UTC)
        if secret is None:
            result = sender.AttemptResult(
                "refused", None, 0, "no secret for this endpoint in this worker's configuration"
            )
        else:
            link = None
            if delivery.event_type == "export.completed" and delivery.package_live:
                link = self._link(delivery.job, attempted_at)
            body = payload.body(delivery.event_type, delivery.event_created_at, delivery.job, link)
            headers = signing.headers(secret_bytes(secret), str(event_id), int(time.time()), body)
            result = await sender.post(
                url,
                body,
                headers,
                private_hosts=self.settings.webhook_private_hosts,
                timeout=self.settings.webhook_timeout_seconds,
            )
        attempt = await store.record_attempt(
            pool,
            event_id=event_id,
            url=url,
            queue_job_id=queue_job_id,
            outcome=result.outcome,
            status_code=result.status_code,
            duration_ms=result.duration_ms,
            error=result.error,
            attempted_at=attempted_at,
        )
        if result.delivered:
            log.info("webhook %s delivered (attempt %s)", delivery.event_type, attempt, extra=extra)
            return
        log.warning(
            "webhook %s not delivered (attempt %s): %s",
            delivery.event_type,
            attempt,
            result.error,
            extra=extra,
        )
        if result.outcome == "refused":
            raise DeliveryAbandoned(result.error)
        raise DeliveryFailed(result.error)

    def _secret(self, url: str, notify_url: str | None) -> str | None:
        endpoint = self.endpoints.get(url)
        if endpoint is not None:
            return endpoint.secret
        if url == notify_url:
            return self.settings.webhook_secret
        return None

    def _link(self, job: Job, now: datetime) -> payload.SignedLink | None:
        if not self._link_secret_known:
            self._link_secret_known = True
            try:
                self._link_secret = load_link_secret(self.settings)
            except ConfigError as exc:
                log.warning("export.completed webhooks carry no download link: %s", exc)
        if self._link_secret is None:
            return None
        try:
            return payload.download_link(
                job, secret=self._link_secret, base_url=self.settings.base_url, now=now
            )
        except ValueError:  # an owner id too long to sign
            return None


def register(app: App, settings: Settings, pool: Callable[[], Pool]) -> None:
    """Register the delivery task on the worker's procrastinate app."""
    deliverer = Deliverer(settings, pool)

    @app.task(
        name=WEBHOOK_TASK, queue=WEBHOOK_QUEUE, pass_context=True, retry=WebhookRetry(settings)
    )
    async def deliver_webhook(context: JobContext, /, event_id: str, url: str, since: str) -> None:
        assert context.job.id is not None
        await deliverer.deliver(UUID(event_id), url, context.job.id)


async def sync_endpoints(conn: Connection, settings: Settings) -> None:
    """Write this worker's configured endpoints for the outbox trigger to read."""
    await store.sync_endpoints(conn, settings.webhook_endpoints)


async def retry_stalled(jobs: manager.JobManager, settings: Settings) -> int:
    """Queue again the deliveries whose worker stopped heartbeating."""
    stalled = await jobs.get_stalled_jobs(
        task_name=WEBHOOK_TASK, seconds_since_heartbeat=settings.stalled_after_seconds
    )
    count = 0
    for job in stalled:
        await jobs.retry_job(job, retry_at=datetime.now(UTC))
        count += 1
    if count:
        log.warning("requeued %d stalled webhook deliveries", count, extra={"action": "rescue"})
    return count
