"""A cancellation while the packaging thread runs leaves nothing behind.

One thread opens the package writer, builds the package and publishes it
(`packaging.package_with_progress`). procrastinate's abort cancels the
attempt's task while that thread runs, and the job's cancel flag can be set
meanwhile: the package must then never be published, the writer must be
discarded (no temp file), and the attempt must end only after the thread
did — so nothing is written once the attempt is over.

Each race is reproduced deterministically: the thread is held at the point
in question (the writer being opened, the build writing) until the event
loop has taken its side of the handshake."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from daemon.kinds.context import JobCancelled
from daemon.storage.backend import Attempt
from daemon.storage.local import LocalPackageWriter, LocalStorage
from daemon.worker import packaging, pipeline
from daemon.worker.pipeline import Published
from tests.helpers import poll_until
from tests.integration.worker.test_cancel_race import Attempted

pytestmark = pytest.mark.anyio


class Gate:
    """Where the packaging thread waits until the test lets it go on."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.go_on = threading.Event()

    def hold(self) -> None:
        self.reached.set()
        if not self.go_on.wait(timeout=30):
            raise TimeoutError("the test never released the packaging thread")


class HeldStorage(LocalStorage):
    """Real local storage whose writers can be held while opened or while
    writing, and count their `discard` calls."""

    def __init__(self, root: Path, *, at: str) -> None:
        super().__init__(root)
        self.at = at
        self.gate = Gate()
        self.discards = 0

    def open_writer(self, attempt: Attempt) -> LocalPackageWriter:
        if self.at == "open":
            self.gate.hold()
        storage = self

        class Writer(LocalPackageWriter):
            def write(self, data: Any, /) -> int:
                if storage.at == "write":
                    storage.gate.hold()
                return super().write(data)

            def discard(self) -> None:
                storage.discards += 1
                super().discard()

        return Writer(self, attempt)


class SeenStop(packaging.PackagingRun):
    """The handshake, noting when the event loop took its side."""

    stopped = threading.Event()

    def stop(self) -> bool:
        publishing = super().stop()
        SeenStop.stopped.set()
        return publishing


def held_run(tmp_path: Path, at: str, monkeypatch: pytest.MonkeyPatch) -> Attempted:
    SeenStop.stopped = threading.Event()
    monkeypatch.setattr(pipeline, "PackagingRun", SeenStop)
    run = Attempted(tmp_path)
    run.storage = HeldStorage(run.storage.root, at=at)
    return run


async def never(published: Published) -> bool:
    raise AssertionError("completed without a package")


def temp_files(storage: LocalStorage) -> list[Path]:
    return list((storage.root / ".tmp").iterdir())


@pytest.mark.parametrize("at", ["open", "write"])
async def test_an_abort_while_packaging_leaves_no_package_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: str
) -> None:
    run = held_run(tmp_path, at, monkeypatch)
    storage = run.storage
    assert isinstance(storage, HeldStorage)
    attempt = asyncio.create_task(run.run(never))
    assert await asyncio.to_thread(storage.gate.reached.wait, 30), "never packaged"
    attempt.cancel()  # procrastinate's abort
    await poll_until(SeenStop.stopped.is_set, "the event loop stopped the packaging run")
    storage.gate.go_on.set()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    # The attempt ended after the thread: its writer is already discarded.
    assert storage.discards == 1
    assert temp_files(storage) == [] and run.packages() == []
    assert run.seen == []


async def test_a_cancel_flag_during_the_build_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = held_run(tmp_path, "write", monkeypatch)
    storage = run.storage
    assert isinstance(storage, HeldStorage)
    attempt = asyncio.create_task(run.run(never))
    assert await asyncio.to_thread(storage.gate.reached.wait, 30), "never packaged"
    run.ctx.cancel()  # the job's row says cancelling
    storage.gate.go_on.set()
    with pytest.raises(JobCancelled):
        await attempt
    assert storage.discards == 1
    assert temp_files(storage) == [] and run.packages() == []
    assert run.seen == []
