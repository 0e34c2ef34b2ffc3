"""The job object of the API (DESIGN §6): its JSON and its OpenAPI schema.

One field table, in `daemon.job_json`: the worker's webhooks send the same
object, and `daemon` never imports `web`.
"""

from __future__ import annotations

from daemon.job_json import API, PAUSED_SCHEMA, iso, job_json, ref, schemas

__all__ = ["API", "PAUSED_SCHEMA", "iso", "job_json", "ref", "schemas"]
