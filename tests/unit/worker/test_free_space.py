"""The free-space floor's answer, its cache, and how often it says so.

Real volumes (this test's directory, read with statvfs); a floor far above
any disk's size stands for a full one, and the clock is moved by hand.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from daemon.config import Settings
from daemon.storage.volumes import free_bytes, free_space, volume_paths
from daemon.worker.free_space import FreeSpaceFloor

pytestmark = pytest.mark.anyio
HUGE = 2**62  # more than any volume has free


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


async def test_below_the_floor_no_export_starts_and_it_is_said_once_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="daemon.worker.free_space")
    clock = Clock()
    floor = FreeSpaceFloor({"work": tmp_path}, HUGE, clock=clock)
    assert not await floor.allows_start()
    assert floor.held == 1 and set(floor.short) == {"work"}
    [message] = warnings(caplog)
    assert "EXPORTD_MIN_FREE_BYTES" in message and f"work volume {tmp_path} has" in message
    for _ in range(59):
        clock.now += 1.0
        assert not await floor.allows_start()
    assert len(warnings(caplog)) == 1
    clock.now += 1.0
    assert not await floor.allows_start()
    assert len(warnings(caplog)) == 2


async def test_the_volumes_are_read_at_most_once_a_second_and_space_coming_back_is_seen(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="daemon.worker.free_space")
    clock = Clock()
    floor = FreeSpaceFloor({"work": tmp_path}, HUGE, clock=clock)
    assert not await floor.allows_start()
    floor.min_free_bytes = 1  # the space is back…
    clock.now += 0.5
    assert not await floor.allows_start()  # …not read again yet (the fetch's hot path)
    clock.now += 0.5
    assert await floor.allows_start()
    assert floor.short == {}
    assert any("exports start again" in r.getMessage() for r in caplog.records)


async def test_zero_disables_the_floor(tmp_path: Path) -> None:
    floor = FreeSpaceFloor({"work": tmp_path / "missing"}, 0)
    assert await floor.allows_start()
    assert floor.held == 0


def test_the_volumes_of_each_backend(tmp_path: Path) -> None:
    local = Settings(storage_dir=tmp_path / "packages", work_dir=tmp_path / "work")
    assert volume_paths(local) == {
        "work": tmp_path / "packages" / ".work",
        "storage": tmp_path / "packages",
    }
    s3 = Settings(storage_url="s3://bucket/prefix", work_dir=tmp_path / "work")
    assert volume_paths(s3) == {"work": tmp_path / "work" / ".work"}
    # Not created yet: the volume of the nearest existing parent.
    assert free_space(s3)["work"] == free_bytes(tmp_path) is not None
