"""A published package's writer is not discarded afterwards: there is nothing
left to discard, and each blocking call of the pipeline is a thread hop that
costs the event loop a GIL handoff (the drain profile of bench.queue). A
writer whose package was not published still is: its temp file goes."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.kinds.context import JobCancelled
from daemon.storage.backend import Attempt
from daemon.storage.local import LocalPackageWriter, LocalStorage
from daemon.worker.pipeline import Published
from tests.integration.worker.test_cancel_race import Attempted

pytestmark = pytest.mark.anyio


class CountingWriter(LocalPackageWriter):
    discards = 0

    def discard(self) -> None:
        CountingWriter.discards += 1
        super().discard()


class CountingStorage(LocalStorage):
    """Real local storage whose writers count their `discard` calls."""

    def open_writer(self, attempt: Attempt) -> LocalPackageWriter:
        return CountingWriter(self, attempt)


def counting_run(tmp_path: Path) -> Attempted:
    CountingWriter.discards = 0
    run = Attempted(tmp_path)
    run.storage = CountingStorage(run.storage.root)
    return run


async def test_a_published_package_is_not_discarded(tmp_path: Path) -> None:
    run = counting_run(tmp_path)

    async def committed(published: Published) -> bool:
        return True

    published = await run.run(committed)
    assert CountingWriter.discards == 0
    assert [run.storage.relative(p) for p in run.packages()] == [published.relative_path]


async def test_a_package_that_failed_to_publish_is_discarded(tmp_path: Path) -> None:
    run = counting_run(tmp_path)

    class FailingPublish(CountingStorage):
        def publish(self, temp: Path, relative: str) -> Path:
            raise OSError("disk gone")

    run.storage = FailingPublish(run.storage.root)

    async def never(published: Published) -> bool:
        raise AssertionError("completed without a package")

    with pytest.raises(OSError, match="disk gone"):
        await run.run(never)
    assert CountingWriter.discards == 1
    assert list((run.storage.root / ".tmp").iterdir()) == []


async def test_a_refused_completion_still_deletes_the_package(tmp_path: Path) -> None:
    run = counting_run(tmp_path)

    async def refused(published: Published) -> bool:
        return False

    with pytest.raises(JobCancelled):
        await run.run(refused)
    assert run.packages() == []
