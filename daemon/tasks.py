"""Names of exportd's procrastinate tasks and queues.

Shared by the API (which defers an export when it creates the job, without
loading the worker) and the worker (which registers the tasks under these
names). A renamed task would strand every queued job: these are a contract
with the rows already in `procrastinate_jobs`.
"""

from __future__ import annotations

EXPORT_TASK = "exportd.run_export"
RESCUE_TASK = "exportd.rescue_stalled"
CLEANUP_TASK = "exportd.cleanup"
DEFAULT_QUEUE = "exports"
# Webhook deliveries (DESIGN §12) run on a queue of their own, served by a
# worker of their own (daemon/worker/process.py): a slow receiver never
# takes an export's slot. Also named in sql/migrations/0010_webhooks.up.sql,
# whose trigger defers them.
WEBHOOK_TASK = "exportd.deliver_webhook"
WEBHOOK_QUEUE = "webhooks"
