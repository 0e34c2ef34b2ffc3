"""`exportd export`: create an export from a shell, and optionally wait for it.

Same rules as the API (validation before any row is written), as `--owner`
(default: the current user). `--wait` follows the job through the job
events channel the API's live progress uses (`daemon.db.listen`) and copies
the package out of storage, checking its sha256.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import hashlib
import json
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from daemon.actions import ExportRequest, create_export
from daemon.cli.output import EXIT_FAILED, EXIT_OK, console
from daemon.config import Settings
from daemon.db import jobs as job_store
from daemon.db.connect import Connection, aconnect, database_url
from daemon.db.listen import JobEventListener
from daemon.errors import ParamError
from daemon.kinds.catalog import load_kinds
from daemon.kinds.registry import Kind, KindRegistry
from daemon.models import Job, JobStatus
from daemon.storage.backend import Storage
from daemon.storage.select import open_storage


def add_command(commands: Any) -> None:
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
    async with aconnect(url) as conn:
        job, _ = await create_export(
            conn,
            registry,
            request,
            owner_id=owner,
            max_pending=settings.owner_max_pending or None,
        )
        console.print(f"created job {job.job_id} ({job.kind} for {owner})")
        if not args.wait:
            return EXIT_OK
        listener = await JobEventListener.connect(url, role="cli")
        try:
            final = await _follow(conn, listener, job)
        finally:
            await listener.close()
    return _report(final, settings, args.output)


async def _follow(conn: Connection, listener: JobEventListener, job: Job) -> Job:
    """Render progress from job events until the job reaches a final status."""
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
            job = await job_store.get_job(conn, job.job_id)
            progress.update(
                bar,
                completed=job.progress_percentage,
                status=job.status.value,
                step=job.current_step or "",
            )
            if job.is_finished:
                return job
            await _next_event(listener, job.job_id)


async def _next_event(listener: JobEventListener, job_id: UUID) -> None:
    """Wait for this job's next notification (or 2 s, as a safety net)."""
    async for payload in listener.payloads(wait_seconds=2.0):
        try:
            if json.loads(payload).get("job_id") == str(job_id):
                return
        except ValueError:
            continue


def _copy_package(storage: Storage, relative: str, output: Path) -> str:
    """Write the package to `output` chunk by chunk (from a file or from the
    bucket); its sha256."""
    digest = hashlib.sha256()
    with output.open("wb") as target:
        for chunk in storage.read(relative):
            digest.update(chunk)
            target.write(chunk)
    return digest.hexdigest()


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
        digest = _copy_package(open_storage(settings), job.package_path, output)
        if digest != job.package_sha256:
            print(
                f"exportd: {output}: sha256 mismatch (package changed while copying?)",
                file=sys.stderr,
            )
            return EXIT_FAILED
        console.print(f"wrote {output}")
    return EXIT_OK
