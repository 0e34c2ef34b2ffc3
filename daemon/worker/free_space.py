"""The free-space floor: no export starts on a worker whose disk is nearly full.

An attempt started on a volume with a few megabytes left would fill it,
fail with "storage full" and be retried into the same wall, while other
exports on that volume fail beside it. So before each fetch the worker asks
`FreeSpaceFloor.allows_start()`; below `EXPORTD_MIN_FREE_BYTES` on the work
or the storage volume (`daemon.storage.volumes`) its fetch leaves export
jobs where they are — `pending`, for another worker or for later — while
maintenance tasks still run (retention is what frees space). It starts
exports again by itself once space is back, at the next poll.

The fetch is the queue's hot path: the volumes are read (one `statvfs`
each, in a thread: a stalled network mount must not stall the event loop)
at most once per `REFRESH_SECONDS`; in between the answer is the last one.
While the floor holds, a warning names the volumes once per
`WARN_EVERY_SECONDS`, and one line says when it no longer does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from daemon.config import Settings
from daemon.storage.volumes import free_bytes, volume_paths

log = logging.getLogger(__name__)

REFRESH_SECONDS = 1.0
WARN_EVERY_SECONDS = 60.0


class FreeSpaceFloor:
    """Whether this worker may start an export now, judged by free space."""

    def __init__(
        self,
        volumes: dict[str, Path],
        min_free_bytes: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        refresh_seconds: float = REFRESH_SECONDS,
        warn_every_seconds: float = WARN_EVERY_SECONDS,
    ) -> None:
        self.volumes = volumes
        self.min_free_bytes = min_free_bytes
        self._clock = clock
        self._refresh_seconds = refresh_seconds
        self._warn_every_seconds = warn_every_seconds
        self._read_at: float | None = None
        self._warned_at: float | None = None
        self.short: dict[str, int] = {}  # volumes below the floor: free bytes
        # Fetches that left exports waiting: a signal for tests and debugging.
        self.held = 0

    @classmethod
    def for_settings(cls, settings: Settings) -> FreeSpaceFloor:
        return cls(volume_paths(settings), settings.min_free_bytes)

    async def allows_start(self) -> bool:
        """False while a volume has less than the floor free (0: always True)."""
        if self.min_free_bytes <= 0:
            return True
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self._refresh_seconds:
            self._read_at = now
            self._update(await asyncio.to_thread(self._read), now)
        if self.short:
            self.held += 1
            return False
        return True

    def _read(self) -> dict[str, int]:
        short = {}
        for name, path in self.volumes.items():
            free = free_bytes(path)
            # An unreadable volume is not held against the worker: the
            # attempt itself will say what is wrong with it.
            if free is not None and free < self.min_free_bytes:
                short[name] = free
        return short

    def _update(self, short: dict[str, int], now: float) -> None:
        was_short = bool(self.short)
        self.short = short
        extra = {"action": "worker.free_space"}
        if short:
            if self._warned_at is None or now - self._warned_at >= self._warn_every_seconds:
                self._warned_at = now
                log.warning(
                    "free space below EXPORTD_MIN_FREE_BYTES (%s): %s; "
                    "no export starts on this worker until space is freed",
                    _size(self.min_free_bytes),
                    ", ".join(
                        f"{name} volume {self.volumes[name]} has {_size(free)}"
                        for name, free in short.items()
                    ),
                    extra=extra,
                )
        elif was_short:
            self._warned_at = None
            log.info(
                "free space is back above EXPORTD_MIN_FREE_BYTES: exports start again", extra=extra
            )


def _size(count: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"
