"""`exportd export` and `exportd jobs …`: working with exports from a shell.

They talk to the database directly (same rules as the API: validation before
any row is written), so they work on the host that runs exportd, with the
operator's configuration. `export --wait` follows the job through the same
NOTIFY channel the API's live progress uses, and copies the package out of
storage, checking its sha256.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from daemon import store
from daemon.catalog import load_kinds
from daemon.config import Settings
from daemon.database import database_url
from daemon.exports import ExportRequest, cancel_export, create_export, retry_export
from daemon.kinds import Kind, KindRegistry, ParamError
from daemon.models import ACTIVE_STATUSES, Job, JobStatus
from daemon.sqlfiles import named_queries
from daemon.storage import PackageStorage

EXIT_OK = 0
EXIT_FAILED = 1

console = Console()


def add_commands(commands: Any) -> None:
    export = commands.add_parser(
        "export",
        help="create an export job (and optionally wait for its package)",
        description="Create a job of KIND as --owner (default: the current user).",
    )
    export.add_argument("kind")
    export.add_argument("--owner", default=None, help="owner id (default: current user)")
    export.add_argument(
        "--param", action="append", default=[], metavar="K=V", help="a declared parameter"
    )
    export.add_argument("--priority", type=int, default=0)
    export.add_argument("--delay", type=float, default=0, metavar="SECONDS")
    export.add_argument("--max-attempts", type=int, default=None)
    export.add_argument("--wait", action="store_true", help="show progress until it finishes")
    export.add_argument("--output", type=Path, default=None, help="with --wait: write the package")
    export.set_defaults(handler=cmd_export)

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
        sub.add_argument("job_id", type=UUID)
        sub.set_defaults(handler=handler)


# -- export --------------------------------------------------------------------


def parse_params(kind: Kind, pairs: list[str]) -> dict[str, Any]:
    """`k=v` strings → JSON values typed by the kind's declaration."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ParamError(pair, "must look like NAME=VALUE")
        spec = kind.params.get(key)
        value: Any = text
        if spec is not None and spec.type == "int":
            try:
                value = int(text)
            except ValueError:
                raise ParamError(key, "must be an integer") from None
        elif spec is not None and spec.type == "float":
            try:
                value = float(text)
            except ValueError:
                raise ParamError(key, "must be a number") from None
        elif spec is not None and spec.type == "bool":
            lowered = text.lower()
            if lowered not in {"true", "false", "1", "0", "yes", "no"}:
                raise ParamError(key, "must be true or false")
            value = lowered in {"true", "1", "yes"}
        params[key] = value
    return params


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    with database_url(settings) as url:
        registry = load_kinds(settings, url)
        return asyncio.run(_export(args, settings, url, registry))


async def _export(
    args: argparse.Namespace, settings: Settings, url: str, registry: KindRegistry
) -> int:
    kind = registry.get(args.kind)
    request = ExportRequest(
        kind=kind.name,
        params=parse_params(kind, args.param),
        priority=args.priority,
        delay_seconds=args.delay,
        max_attempts=args.max_attempts,
    )
    owner = args.owner or getpass.getuser()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        job, _ = await create_export(conn, registry, request, owner_id=owner)
        console.print(f"created job {job.job_id} ({job.kind} for {owner})")
        if not args.wait:
            return EXIT_OK
        final = await _follow(conn, job)
    return _report(final, settings, args.output)


async def _follow(conn: psycopg.AsyncConnection[Any], job: Job) -> Job:
    """Render progress from NOTIFY events until the job reaches a final status."""
    await conn.execute("LISTEN exportd_job_events")
    progress = Progress(
        TextColumn("{task.fields[status]:<12}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[step]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    with progress:
        bar = progress.add_task("export", total=100, status=job.status.value, step="")
        while True:
            job = await store.get_job(conn, job.job_id)
            progress.update(
                bar,
                completed=job.progress_percentage,
                status=job.status.value,
                step=job.current_step or "",
            )
            if job.status not in ACTIVE_STATUSES and job.status is not JobStatus.FAILED:
                return job
            if job.status is JobStatus.FAILED and job.completed_at is not None:
                return job
            await _next_event(conn, job.job_id)


async def _next_event(conn: psycopg.AsyncConnection[Any], job_id: UUID) -> None:
    """Wait for this job's next notification (or 2 s, as a safety net)."""
    async for note in conn.notifies(timeout=2.0):
        try:
            if json.loads(note.payload).get("job_id") == str(job_id):
                return
        except ValueError:
            continue


def _report(job: Job, settings: Settings, output: Path | None) -> int:
    if job.status is not JobStatus.COMPLETED:
        print(
            f"exportd: job {job.job_id} ended {job.status.value}: {job.error_message or ''}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    size = job.package_size_bytes or 0
    console.print(f"completed: {size} bytes, sha256 {job.package_sha256}")
    if output is not None and job.package_path:
        source = PackageStorage(settings.storage_dir).resolve(job.package_path)
        shutil.copyfile(source, output)
        digest = hashlib.sha256(output.read_bytes()).hexdigest()
        if digest != job.package_sha256:
            print(
                f"exportd: {output}: sha256 mismatch (package changed while copying?)",
                file=sys.stderr,
            )
            return EXIT_FAILED
        console.print(f"wrote {output}")
    return EXIT_OK


# -- jobs ----------------------------------------------------------------------


def _run(settings: Settings, coro_factory: Any) -> int:
    with database_url(settings) as url:
        result: int = asyncio.run(coro_factory(url))
        return result


def cmd_jobs_ls(args: argparse.Namespace, settings: Settings) -> int:
    async def go(url: str) -> int:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            jobs = await store.list_jobs(
                conn,
                owner_id=args.owner,
                status=JobStatus(args.status) if args.status else None,
                kind=args.kind,
                limit=max(1, min(args.limit, store.MAX_PAGE)),
            )
        table = Table("job id", "kind", "owner", "status", "progress", "attempts", "created")
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
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            job = await store.get_job(conn, args.job_id)
            cur = await conn.execute(
                named_queries("attempts")["attempts_of_job"], {"job_id": job.job_id}
            )
            attempts = await cur.fetchall()
        details = Table(show_header=False)
        for key, value in _describe(job):
            details.add_row(key, value)
        console.print(details)
        history = Table("run", "attempt", "worker", "started", "finished", "outcome", "error")
        for _, run, number, _, worker, started, finished, outcome, error in attempts:
            history.add_row(
                str(run),
                str(number),
                str(worker or "-"),
                started.isoformat(timespec="seconds"),
                finished.isoformat(timespec="seconds") if finished else "-",
                str(outcome or "running"),
                str(error or ""),
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
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            job = await retry_export(conn, registry, args.job_id)
        console.print(f"job {job.job_id}: run {job.run} is {job.status.value}")
        return EXIT_OK

    return _run(settings, go)


def cmd_jobs_cancel(args: argparse.Namespace, settings: Settings) -> int:
    async def go(url: str) -> int:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            job = await cancel_export(conn, args.job_id)
        console.print(f"job {job.job_id} is {job.status.value}")
        return EXIT_OK

    return _run(settings, go)
