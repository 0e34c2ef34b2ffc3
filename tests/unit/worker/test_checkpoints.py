"""A run's checkpoint on the local backend: what a step leaves is kept with
hard links and put back into a new work directory; `PackageFile` is
serialised field by field, so fields added to it later travel too."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

from daemon.kinds.context import ExportContext, JobInfo, PackageFile
from daemon.kinds.registry import Kind
from daemon.models import JobStatus
from daemon.storage.backend import Attempt, RunId
from daemon.storage.local import LocalStorage
from daemon.worker.checkpoints import RunCheckpoint, decode_file, encode_file


@dataclass(frozen=True)
class WiderFile(PackageFile):
    """PackageFile as a later version may have it: more paths, more values."""

    gzip_member: Path | None = None
    content_size: int | None = None
    sha256: str | None = None
    extra: dict[str, list[int]] | None = None


async def _sink(
    job_id: UUID, done: int, total: int, current_step: str | None, percentage: int
) -> JobStatus | None:
    return JobStatus.IN_PROGRESS


def two_step_kind(*, second_title: str = "Second") -> Kind:
    kind = Kind("kept")

    @kind.step("First", resumable=True)
    async def first(ctx: ExportContext) -> None: ...

    @kind.step(second_title, resumable=True)
    async def second(ctx: ExportContext) -> None: ...

    return kind


def context(storage: LocalStorage, kind: Kind, job_id: UUID, attempt: int) -> ExportContext:
    info = JobInfo(job_id, "kept", "alice", {}, 1, attempt, datetime.now(UTC))
    work = storage.make_work_dir(Attempt(info.job_id, 1, attempt))
    return ExportContext(info, kind, work, _sink)


def test_every_field_of_a_wider_package_file_round_trips(tmp_path: Path) -> None:
    work, other = tmp_path / "work-1", tmp_path / "work-2"
    member = WiderFile(
        source=work / "a" / "orders.csv",
        arcname="a/orders.csv",
        rows=7,
        gzip_member=work / "a" / "orders.csv.gz",
        content_size=123,
        sha256="ab" * 32,
        extra={"parts": [1, 2]},
    )
    encoded = encode_file(member, work)
    assert encoded["gzip_member"] == {"work": "a/orders.csv.gz"}
    moved = decode_file(encoded, other, WiderFile)
    assert moved == WiderFile(
        source=other / "a" / "orders.csv",
        arcname="a/orders.csv",
        rows=7,
        gzip_member=other / "a" / "orders.csv.gz",
        content_size=123,
        sha256="ab" * 32,
        extra={"parts": [1, 2]},
    )
    # A path outside the work directory (the files kind's) is kept as it is.
    outside = PackageFile(Path("/srv/uploads/alice/x.pdf"), "x.pdf")
    assert decode_file(encode_file(outside, work), other) == outside


def test_kept_files_are_linked_and_put_back_in_a_new_work_directory(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    storage.ensure()
    kind = two_step_kind()
    job_id = uuid4()
    first = context(storage, kind, job_id, 1)
    checkpoint = RunCheckpoint(storage.checkpoints, RunId(job_id, 1), first.work_dir)
    first.file("one.csv", rows=2).write_text("n\n1\n2\n")
    first.result["rows"] = {"one": 2}
    first.state["token"] = "t-1"
    first.state["not json"] = object()
    checkpoint.save(first, 0, kind.steps[0])
    [kept] = (storage.root / ".checkpoints").rglob("files/*")
    # A hard link: the kept file costs no copy.
    assert os.stat(kept).st_ino == os.stat(first.work_dir / "one.csv").st_ino

    second = context(storage, kind, job_id, 2)
    again = RunCheckpoint(storage.checkpoints, RunId(job_id, 1), second.work_dir)
    assert again.restore(second, kind.steps) == 1
    assert second.files == [PackageFile(second.work_dir / "one.csv", "one.csv", 2)]
    assert (second.work_dir / "one.csv").read_text() == "n\n1\n2\n"
    assert second.result == {"rows": {"one": 2}}
    assert second.state == {"token": "t-1"}

    # Another run of the job never sees it; a changed kind starts over.
    third = context(storage, kind, job_id, 3)
    assert (
        RunCheckpoint(storage.checkpoints, RunId(job_id, 2), third.work_dir).restore(
            third, kind.steps
        )
        == 0
    )
    renamed = two_step_kind()
    renamed.steps[0].title = "First, renamed"
    assert (
        RunCheckpoint(storage.checkpoints, RunId(job_id, 1), third.work_dir).restore(
            third, renamed.steps
        )
        == 0
    )

    assert storage.checkpoints.runs() == [RunId(job_id, 1)]
    again.delete()
    assert storage.checkpoints.runs() == []
