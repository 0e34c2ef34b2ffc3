"""A checkpoint read ahead (in the thread hop that makes the work directory)
is what `restore` applies later, without touching storage again; kept files
are still put back by `restore`, and a failure to read surfaces there,
inside the attempt, as it did unread."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID, uuid4

import pytest

from daemon.kinds.registry import Kind
from daemon.storage.backend import RunId
from daemon.storage.local import LocalStorage
from daemon.storage.local_checkpoints import LocalCheckpoints
from daemon.worker.checkpoints import RunCheckpoint
from tests.helpers import kinds_registry
from tests.unit.worker.test_checkpoints import context, two_step_kind


class UnreadableCheckpoints(LocalCheckpoints):
    """Real checkpoint areas whose records cannot be read (a failing disk)."""

    def records(self, run: RunId) -> dict[int, bytes]:
        raise OSError("I/O error")


def kept_first_step(storage: LocalStorage, job_id: UUID, *, with_file: bool) -> Kind:
    kind = two_step_kind()
    first = context(storage, kind, job_id, 1)
    if with_file:
        first.file("one.csv", rows=1).write_text("n\n1\n")
    first.result["rows"] = {"one": 1}
    RunCheckpoint(storage.checkpoints, RunId(job_id, 1), first.work_dir).save(
        first, 0, kind.steps[0]
    )
    return kind


def test_a_prefetched_checkpoint_is_applied_without_reading_it_again(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    storage.ensure()
    job_id = uuid4()
    kind = kept_first_step(storage, job_id, with_file=False)
    second = context(storage, kind, job_id, 2)
    ahead = RunCheckpoint(storage.checkpoints, RunId(job_id, 1), second.work_dir)
    ahead.prefetch(kind.steps)
    assert ahead.prefetched
    storage.checkpoints.delete(RunId(job_id, 1))  # storage is not read again
    assert ahead.restore(second, kind.steps) == 1
    assert not ahead.prefetched
    assert second.result == {"rows": {"one": 1}}


def test_kept_files_are_put_back_by_the_restore(tmp_path: Path) -> None:
    """A download belongs to the attempt (under its deadline), not to the
    hop that makes the work directory."""
    storage = LocalStorage(tmp_path / "root")
    storage.ensure()
    job_id = uuid4()
    kind = kept_first_step(storage, job_id, with_file=True)
    second = context(storage, kind, job_id, 2)
    ahead = RunCheckpoint(storage.checkpoints, RunId(job_id, 1), second.work_dir)
    ahead.prefetch(kind.steps)
    assert not ahead.prefetched and not (second.work_dir / "one.csv").exists()
    assert ahead.restore(second, kind.steps) == 1
    assert [f.arcname for f in second.files] == ["one.csv"]
    assert (second.work_dir / "one.csv").read_text() == "n\n1\n"


def test_a_kind_whose_first_step_is_not_resumable_reads_nothing(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    storage.ensure()
    kind = kinds_registry().get("noop")
    ctx = context(storage, kind, uuid4(), 1)
    unreadable = UnreadableCheckpoints(storage.root)
    ahead = RunCheckpoint(unreadable, RunId(ctx.job.job_id, 1), ctx.work_dir)
    ahead.prefetch(kind.steps)
    assert ahead.prefetched
    assert ahead.restore(ctx, kind.steps) == 0


def test_a_failed_prefetch_fails_the_restore(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    storage.ensure()
    kind = two_step_kind()
    ctx = context(storage, kind, uuid4(), 1)
    broken = UnreadableCheckpoints(storage.root)
    ahead = RunCheckpoint(broken, RunId(ctx.job.job_id, 1), ctx.work_dir)
    ahead.prefetch(kind.steps)  # held, not raised: the attempt handles it
    with pytest.raises(OSError, match="I/O error"):
        ahead.restore(ctx, kind.steps)
