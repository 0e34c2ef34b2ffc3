"""The per-kind limits of one attempt (DESIGN §13): its deadline, and the size
of its package.

- `attempt_deadline(seconds)`: the attempt runs inside an asyncio timeout. At
  the deadline its task is cancelled exactly as a user's cancel cancels it —
  the running step is interrupted (a running query is cancelled on the
  server), finished steps roll back, the package is discarded — and the
  cancellation leaves as `DeadlineExceeded`, which the worker records as a
  failed attempt and retries while attempts remain.
- `capped_storage(storage, max_bytes)`: storage whose package writers refuse
  the write that would make the compressed package larger than `max_bytes`
  (`PackageTooLarge`). The pipeline then discards the writer, so no part of
  the package is kept, and building stops at the limit instead of finishing
  a package that will be thrown away.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

from daemon.errors import DeadlineExceeded, PackageTooLarge
from daemon.storage.backend import Attempt, PackageWriter, Storage


@asynccontextmanager
async def attempt_deadline(seconds: float | None) -> AsyncIterator[None]:
    """Cancel the body after `seconds` (None: never) and raise DeadlineExceeded.

    A TimeoutError the body raises on its own (a step's network timeout) is
    left as it is: only the expiry of this deadline is "deadline exceeded".
    """
    if seconds is None:
        yield
        return
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            yield
    except TimeoutError:
        if not scope.expired():
            raise
        raise DeadlineExceeded(
            f"deadline exceeded: the attempt ran longer than its kind's timeout "
            f"({duration(seconds)})"
        ) from None


def duration(seconds: float) -> str:
    """`2s`, `1.5s`, `10min`, `2h` (as the exports file writes them)."""
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


class SizeCappedWriter:
    """A package writer that refuses to grow past `max_bytes`."""

    def __init__(self, writer: PackageWriter, max_bytes: int) -> None:
        self._writer = writer
        self.max_bytes = max_bytes
        self.written = 0

    @property
    def relative(self) -> str:
        return self._writer.relative

    def write(self, data: Any, /) -> int:
        size = memoryview(data).nbytes
        if self.written + size > self.max_bytes:
            raise PackageTooLarge(
                f"the package is larger than its kind's max_package_bytes "
                f"({self.max_bytes} bytes); nothing was kept"
            )
        self.written += size
        return self._writer.write(data)

    def publish(self) -> None:
        self._writer.publish()

    def discard(self) -> None:
        self._writer.discard()


class SizeCappedStorage:
    """`storage` as it is, except that its package writers are size-capped."""

    def __init__(self, storage: Storage, max_bytes: int) -> None:
        self._storage = storage
        self.max_bytes = max_bytes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    def open_writer(self, attempt: Attempt) -> PackageWriter:
        return SizeCappedWriter(self._storage.open_writer(attempt), self.max_bytes)


def capped_storage(storage: Storage, max_bytes: int | None) -> Storage:
    """`storage` whose packages may be at most `max_bytes` (None: unlimited)."""
    if max_bytes is None:
        return storage
    # Every other member is the wrapped storage's (__getattr__).
    return cast(Storage, SizeCappedStorage(storage, max_bytes))
