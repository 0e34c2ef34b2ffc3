"""What a power loss may leave of a checkpoint on the local backend: the kept
files and their directory reach the disk before the step's record names
them; the record itself is not flushed (a lost record only runs its step
again), so a record the disk kept torn, or bytes that are not this run's
record, count as no record."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from uuid import uuid4

import pytest

from daemon.storage.backend import RunId
from daemon.storage.local import LocalStorage
from daemon.worker.checkpoints import RunCheckpoint
from tests.unit.worker.test_checkpoints import context, two_step_kind


def test_kept_files_reach_the_disk_before_the_record_that_names_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LocalStorage(tmp_path / "root")
    storage.ensure()
    kind = two_step_kind()
    job_id = uuid4()
    ctx = context(storage, kind, job_id, 1)
    checkpoint = RunCheckpoint(storage.checkpoints, RunId(job_id, 1), ctx.work_dir)
    ctx.file("one.csv", rows=1).write_text("n\n1\n")

    # The real calls, in the order they were made.
    calls: list[tuple[str, str]] = []
    real_fsync, real_replace, real_link = os.fsync, os.replace, os.link

    def fsync(fd: int) -> None:
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls.append(("replace", str(dst)))
        real_replace(src, dst)

    def link(src: str | os.PathLike[str], dst: str | os.PathLike[str], **kw: bool) -> None:
        calls.append(("link", str(dst)))
        real_link(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "link", link)
    checkpoint.save(ctx, 0, kind.steps[0])
    monkeypatch.undo()

    [kept] = (storage.checkpoints.area(RunId(job_id, 1)) / "files").iterdir()
    record = storage.checkpoints.area(RunId(job_id, 1)) / "step-0.json"
    assert calls == [
        ("link", str(kept)),
        ("fsync", str(kept)),  # the file's bytes
        ("fsync", str(kept.parent)),  # its name in files/
        ("replace", str(record)),  # then the record, unflushed: two flushes per step
    ]


def test_a_torn_or_foreign_record_is_no_record(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    storage.ensure()
    kind = two_step_kind()
    job_id = uuid4()
    ctx = context(storage, kind, job_id, 1)
    run = RunId(job_id, 1)
    checkpoint = RunCheckpoint(storage.checkpoints, run, ctx.work_dir)
    ctx.file("one.csv", rows=1).write_text("n\n1\n")
    checkpoint.save(ctx, 0, kind.steps[0])
    checkpoint.save(ctx, 1, kind.steps[1])
    area = storage.checkpoints.area(run)
    second = (area / "step-1.json").read_bytes()

    def kept_steps(attempt: int) -> int:
        again = context(storage, kind, job_id, attempt)
        return RunCheckpoint(storage.checkpoints, run, again.work_dir).restore(again, kind.steps)

    assert kept_steps(2) == 2
    (area / "step-1.json").write_bytes(second[: len(second) // 2])  # short
    assert kept_steps(3) == 1
    (area / "step-1.json").write_bytes(bytes(len(second)))  # zero-filled
    assert kept_steps(4) == 1
    (area / "step-1.json").write_bytes(b"\xff" * len(second))  # not even text
    assert kept_steps(5) == 1
    # Bytes of another record: of another step of the run, of another run.
    shutil.copyfile(area / "step-0.json", area / "step-1.json")
    assert kept_steps(6) == 1
    other = RunId(job_id, 2)
    other_ctx = context(storage, kind, job_id, 7)
    RunCheckpoint(storage.checkpoints, other, other_ctx.work_dir).save(other_ctx, 0, kind.steps[0])
    shutil.copyfile(storage.checkpoints.area(other) / "step-0.json", area / "step-0.json")
    assert kept_steps(8) == 0
