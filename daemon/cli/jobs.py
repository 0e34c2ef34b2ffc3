"""`exportd jobs ls|show|retry|cancel`: inspect and act on jobs from a shell.

Same rules as the API; they work on the host that runs exportd, with the
operator's configuration, through the database seam (`daemon.db`).

Ids are printed whole (a cut id cannot be pasted back), and `show`, `retry`
and `cancel` take any unique prefix of one (at least 4 hex digits), as `ls`
prints it or as far as one cares to type.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any
from uuid import UUID

from rich.table import Column, Table

from daemon.actions import cancel_export, retry_export
from daemon.cli.output import EXIT_OK, console
from daemon.config import Settings
from daemon.db import attempts
from daemon.db import jobs as job_store
from daemon.db.connect import Connection, aconnect, database_url
from daemon.errors import ExportdError, JobNotFound
from daemon.kinds.catalog import load_kinds
from daemon.models import Job, JobStatus

ID_WIDTH = 36  # a UUID in its text form


class AmbiguousJobId(ExportdError):
    """A job id prefix matches more than one job."""


def add_command(commands: Any) -> None:
    jobs = commands.add_parser("jobs", help="list, show, retry or cancel jobs")
    actions = jobs.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("ls", help="list jobs, newest first")
    ls.add_argument("--owner", default=None)
    ls.add_argument("--status", choices=[s.value for s in JobStatus], default=None)
    ls.add_argument("--kind", default=None)
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(handler=cmd_jobs_ls)
    for name, handler, text in (
        ("show", cmd_jobs_show, "one job with its attempts"),
        ("retry", cmd_jobs_retry, "start a new run of a finished job"),
        ("cancel", cmd_jobs_cancel, "cancel a pending or running job"),
    ):
        sub = actions.add_parser(name, help=text)
        sub.add_argument(
            "job_id", type=job_ref, metavar="JOB_ID", help="a job id, or a unique prefix of one"
        )
        sub.set_defaults(handler=handler)


def job_ref(text: str) -> str:
    """argparse type: a whole job id or a prefix of at least MIN_ID_PREFIX hex digits."""
    if job_store.id_prefix_bounds(text) is None:
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not a job id (a UUID, or at least "
            f"{job_store.MIN_ID_PREFIX} of its leading hex digits)"
        )
    return text.strip().lower()


async def find_job(conn: Connection, ref: str) -> Job:
    """The job `ref` names: by its whole id, or by a prefix matching only it."""
    try:
        return await job_store.get_job(conn, UUID(ref))
    except ValueError:
        pass  # not a whole UUID: a prefix
    found = await job_store.find_by_id_prefix(conn, ref)
    if not found:
        raise JobNotFound(f"no job {ref}")
    if len(found) > 1:
        raise AmbiguousJobId(
            f"job id prefix {ref} is ambiguous: it matches several jobs "
            f"({found[0].job_id}, {found[1].job_id}, …); type more of it"
        )
    return found[0]


def _run(settings: Settings, coro_factory: Any) -> int:
    with database_url(settings) as url:
        result: int = asyncio.run(coro_factory(url))
        return result


def cmd_jobs_ls(args: argparse.Namespace, settings: Settings) -> int:
    async def go(url: str) -> int:
        async with aconnect(url) as conn:
            jobs = await job_store.list_jobs(
                conn,
                owner_id=args.owner,
                status=JobStatus(args.status) if args.status else None,
                kind=args.kind,
                limit=max(1, min(args.limit, job_store.MAX_PAGE)),
            )
        # Whole ids at any width (they are pasted back into show/retry/cancel):
        # in a narrow terminal the other columns are cut instead.
        table = Table(
            Column("job id", no_wrap=True, min_width=ID_WIDTH),
            "kind",
            "owner",
            "status",
            "progress",
            "attempts",
            "created",
        )
        for job in jobs:
            table.add_row(
                str(job.job_id),
                job.kind,
                job.owner_id or "-",
                job.status.value,
                f"{job.progress_percentage}%",
                f"{job.attempts}/{job.max_attempts}",
                job.created_at.isoformat(timespec="seconds"),
            )
        console.print(table)
        return EXIT_OK

    return _run(settings, go)


def cmd_jobs_show(args: argparse.Namespace, settings: Settings) -> int:
    async def go(url: str) -> int:
        async with aconnect(url) as conn:
            job = await find_job(conn, args.job_id)
            history_rows = await attempts.attempts_of_job(conn, job.job_id)
        details = Table(show_header=False)
        for key, value in _describe(job):
            details.add_row(key, value)
        console.print(details)
        history = Table(
            "run", "attempt", "from step", "worker", "started", "finished", "outcome", "error"
        )
        for row in history_rows:
            history.add_row(
                str(row.run),
                str(row.attempt),
                # A resumed attempt started past the steps its run kept (DESIGN §14).
                str(row.resumed_from_step or 1),
                str(row.worker or "-"),
                row.started_at.isoformat(timespec="seconds"),
                row.finished_at.isoformat(timespec="seconds") if row.finished_at else "-",
                str(row.outcome or "running"),
                str(row.error or ""),
            )
        console.print(history)
        return EXIT_OK

    return _run(settings, go)


def _describe(job: Job) -> list[tuple[str, str]]:
    rows = [
        ("job id", str(job.job_id)),
        ("kind", job.kind),
        ("owner", job.owner_id or "-"),
        ("status", job.status.value),
        ("params", json.dumps(job.params)),
        ("progress", f"{job.progress_percentage}% ({job.steps_completed}/{job.steps_total})"),
        ("current step", job.current_step or "-"),
        ("attempts", f"{job.attempts}/{job.max_attempts} (run {job.run})"),
        ("error", job.error_message or "-"),
        ("created", job.created_at.isoformat(timespec="seconds")),
    ]
    if job.package_sha256:
        rows += [
            ("package", f"{job.package_size_bytes} bytes, sha256 {job.package_sha256}"),
            ("expires", job.package_expires_at.isoformat() if job.package_expires_at else "-"),
            ("deleted", job.package_deleted_at.isoformat() if job.package_deleted_at else "-"),
            ("downloads", str(job.download_count)),
        ]
    return rows


def cmd_jobs_retry(args: argparse.Namespace, settings: Settings) -> int:
    async def go(url: str) -> int:
        registry = load_kinds(settings, url)
        async with aconnect(url) as conn:
            job = await retry_export(conn, registry, (await find_job(conn, args.job_id)).job_id)
        console.print(f"job {job.job_id}: run {job.run} is {job.status.value}")
        return EXIT_OK

    return _run(settings, go)


def cmd_jobs_cancel(args: argparse.Namespace, settings: Settings) -> int:
    async def go(url: str) -> int:
        async with aconnect(url) as conn:
            job = await cancel_export(conn, (await find_job(conn, args.job_id)).job_id)
        console.print(f"job {job.job_id} is {job.status.value}")
        return EXIT_OK

    return _run(settings, go)
