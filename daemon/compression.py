"""gzip for packages: ISA-L deflate, and gzip members made while data arrives.

Why ISA-L (the `isal` package) and not zlib: on the CSV an export produces,
ISA-L level 1 compresses about 6 to 8 times faster than zlib level 6 and its
output is no larger (bench/packaging.py, docs/benchmarks.md); it writes
ordinary deflate, so every gzip reader opens the result. Its levels are 0 to 3
(0: fastest, largest). `EXPORTD_COMPRESSION_LEVEL` picks one; the default, 1,
was chosen by measurement: the package within a few per cent of `gzip -6`.

A package is a series of gzip members (RFC 1952 allows it; gzip, GNU tar,
Python and browsers read them as one stream). That lets a step compress its
own output while the data arrives (`GzipMemberWriter`, used by the SQL step
while the server still produces rows) and packaging copy that member into
the archive verbatim instead of compressing the bytes a second time.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from isal import isal_zlib

LEVELS = range(0, 4)  # ISA-L's levels
DEFAULT_LEVEL = 1
GZIP_WBITS = 31  # deflate with a gzip header and trailer
# Compressed bytes between two requests to start writing the member to disk.
WRITEBACK_BYTES = 8 * 1024 * 1024
SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start write-out, do not wait for it


def _sync_file_range() -> Any:
    """libc's `sync_file_range` (Linux), or None where there is none."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _sync_file_range()


def start_writeback(fd: int, offset: int) -> None:
    """Ask the kernel to start writing the file's dirty pages from `offset`
    on, without waiting (a hint: nothing happens where it is not supported).

    Why: a step's output is fsync-ed when it is kept for a retry, after the
    last row. Written back while the rows still arrive, that fsync finds
    almost nothing left to write instead of the whole file.
    """
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, 0, SYNC_FILE_RANGE_WRITE)  # 0: to the end


def compress_member(data: Any, level: int) -> bytes:
    """`data` as one complete gzip member (releases the GIL while deflating)."""
    return isal_zlib.compress(data, level, wbits=GZIP_WBITS)


class GzipMemberWriter:
    """Writes content as one gzip member into a new file, hashing and
    counting the content (not the compressed bytes) on the way.

    `write` hands each block to one background thread, which compresses,
    hashes and writes it while the caller fetches the next block: deflate
    and sha256 release the GIL, so reading and compressing overlap on two
    cores. At most two blocks are held (the one being compressed and the
    one being filled), whatever the size of the content.
    """

    def __init__(self, path: Path, *, level: int) -> None:
        if level not in LEVELS:
            raise ValueError(f"compression level must be 0 to 3, got {level}")
        # O_EXCL|O_NOFOLLOW: never write through a link planted in the work directory.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        self.path = path
        self._file = os.fdopen(os.open(path, flags, 0o600), "wb", buffering=1 << 20)
        self._deflate = isal_zlib.compressobj(level, isal_zlib.DEFLATED, GZIP_WBITS)
        self._digest = hashlib.sha256()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="exportd-member")
        self._pending: Future[None] | None = None
        self.size = 0  # content bytes handed to write()
        self.compressed_size = 0
        self._written_back = 0  # compressed bytes whose write-out was requested

    def write(self, block: bytes) -> None:
        """Queue one block (the caller must not change it afterwards)."""
        self._wait()
        self.size += len(block)
        self._pending = self._pool.submit(self._absorb, block)

    def finish(self) -> str:
        """End the member, flush it to the file; the content's sha256."""
        try:
            self._wait()
            self._emit(self._deflate.flush())
        finally:
            self.close()
        return self._digest.hexdigest()

    def close(self) -> None:
        """Stop the thread and close the file (after `finish`, or to give up)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._file.close()

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # re-raises an error of the thread (ENOSPC…)

    def _absorb(self, block: bytes) -> None:
        self._digest.update(block)
        self._emit(self._deflate.compress(block))

    def _emit(self, data: bytes) -> None:
        if data:
            self._file.write(data)
            self.compressed_size += len(data)
            if self.compressed_size - self._written_back >= WRITEBACK_BYTES:
                self._file.flush()
                start_writeback(self._file.fileno(), self._written_back)
                self._written_back = self.compressed_size
