"""Webhooks (DESIGN §12): endpoints and their secrets, the SSRF guard, signing,
payloads and the HTTP sender. The outbox itself is SQL (migration 0010); the
procrastinate task that delivers is `daemon.maintenance.webhooks`.

Nothing here imports procrastinate or the worker: the API validates a job's
`notify_url` with `daemon.webhooks.addresses` too.
"""
