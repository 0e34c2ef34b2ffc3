"""The packaging step shows the package bytes written while it runs."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.kinds.context import ExportContext, JobInfo, PackageFile
from daemon.kinds.registry import Kind
from daemon.models import JobStatus
from daemon.storage.backend import Attempt
from daemon.storage.local import LocalStorage
from daemon.worker import packaging

pytestmark = pytest.mark.anyio


class Recording:
    def __init__(self) -> None:
        self.steps: list[str | None] = []

    async def __call__(
        self, job_id: uuid.UUID, done: int, total: int, current_step: str | None, percentage: int
    ) -> JobStatus | None:
        self.steps.append(current_step)
        return JobStatus.IN_PROGRESS


async def test_packaging_reports_the_bytes_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read the counter on every turn of the loop: the first turn comes before
    # the thread can have finished, so at least one report is certain.
    monkeypatch.setattr(packaging, "PROGRESS_SECONDS", 0)
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(4 * 1024 * 1024))
    job = JobInfo(uuid.uuid4(), "k", "alice", {}, 1, 1, datetime.now(UTC))
    sink = Recording()
    ctx = ExportContext(job, Kind("k"), tmp_path / "work", sink, progress_interval=0)
    ctx.files = [PackageFile(data, "data.bin")]
    await ctx.reporter.enter_step(0, "Packaging")
    storage = LocalStorage(tmp_path / "packages")
    storage.ensure()
    relative, built, interrupted = await packaging.package_with_progress(
        ctx,
        lambda: storage.open_writer(Attempt(job.job_id, 1, 1)),
        packaging.PackagingRun(),
        top_dir="export",
        manifest_header={},
    )
    assert interrupted is None and built.size_bytes > 4 * 1024 * 1024
    assert storage.size(relative) == built.size_bytes
    reported = [step for step in sink.steps if step and step.startswith("Packaging: ")]
    assert reported and all(step.endswith(" MB written") for step in reported), sink.steps
