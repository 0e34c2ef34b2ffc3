"""Pausing a kind, and kinds as they are listed: the rules shared by
`exportd kinds …` and the API (DESIGN §13, §16).

While a kind is paused its pending jobs stay pending — every worker's fetch
passes over them — and running ones finish; new jobs may still be created
(they wait too). The pause is a row in PostgreSQL (`daemon.db.pauses`), so it
survives restarts and holds on every host at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from daemon.db import pauses
from daemon.db.connect import Connection
from daemon.kinds.registry import KindRegistry
from daemon.models import Job, JobStatus


async def pause_kind(
    conn: Connection, registry: KindRegistry, name: str, *, by: str | None
) -> dict[str, Any]:
    """Pause a known kind (UnknownKind otherwise); returns its description.
    Pausing a paused kind changes nothing."""
    kind = registry.get(name)
    await pauses.pause_kind(conn, kind.name, paused_by=by)
    return kind.describe(paused=True)


async def resume_kind(conn: Connection, registry: KindRegistry, name: str) -> dict[str, Any]:
    """Resume a known kind (UnknownKind otherwise); its waiting jobs start at
    once. Resuming a kind that is not paused changes nothing."""
    kind = registry.get(name)
    await pauses.resume_kind(conn, kind.name, queue=kind.queue)
    return kind.describe(paused=False)


async def describe_kinds(conn: Connection, registry: KindRegistry) -> list[dict[str, Any]]:
    """Every kind as `GET /api/v1/kinds` lists it, with whether it is paused."""
    return registry.describe(paused=set(await pauses.paused_kinds(conn)))


async def waiting_on_pause(conn: Connection, jobs: Iterable[Job]) -> frozenset[str]:
    """The kinds among `jobs` that are paused while one of their jobs is
    pending (the job JSON's `paused`); no query when none of them is pending."""
    pending = {job.kind for job in jobs if job.status is JobStatus.PENDING}
    if not pending:
        return frozenset()
    return frozenset(pending & set(await pauses.paused_kinds(conn)))
