"""The body of a webhook: the Standard Webhooks envelope around the job JSON.

    {"type": "export.completed",
     "timestamp": "2026-…Z",                 when the event happened
     "data": {"job": {…the job JSON of GET /api/v1/jobs/{id}…},
              "link": {"url": "…/api/v1/links/…", "expires_at": "…Z"}}}

`data.job` is the job as the change that caused the event committed it.
Only `export.completed` has `data.link`: a download link (DESIGN §11) signed
when the attempt is made, valid LINK_SECONDS or until the package expires
if that is sooner — null if the package is gone by then (or no link secret
is configured). The subject the link's downloads are recorded under is the
job's owner.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from daemon import links
from daemon.job_json import API, iso, job_json
from daemon.models import Job

LINK_SECONDS = 24 * 3600
LINK_SUBJECT_WITHOUT_OWNER = "webhook"


@dataclass(frozen=True)
class SignedLink:
    url: str
    expires_at: datetime


def download_link(job: Job, *, secret: str, base_url: str, now: datetime) -> SignedLink | None:
    """A fresh link to the job's package; None if the job has no package."""
    if job.package_sha256 is None:
        return None
    expires = now + timedelta(seconds=LINK_SECONDS)
    if job.package_expires_at is not None:
        expires = min(expires, job.package_expires_at)
    if expires <= now:
        return None
    token = links.sign(
        secret,
        links.Link(
            job.job_id,
            job.package_sha256,
            int(expires.timestamp()),
            job.owner_id or LINK_SUBJECT_WITHOUT_OWNER,
        ),
    )
    return SignedLink(
        f"{base_url}{API}/links/{token}", datetime.fromtimestamp(int(expires.timestamp()), UTC)
    )


def body(event_type: str, created_at: datetime, job: Job, link: SignedLink | None) -> bytes:
    """The JSON body of one event (the same bytes are signed and sent)."""
    data: dict[str, Any] = {"job": job_json(job)}
    if event_type == "export.completed":
        data["link"] = (
            None if link is None else {"url": link.url, "expires_at": iso(link.expires_at)}
        )
    envelope = {"type": event_type, "timestamp": iso(created_at), "data": data}
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
