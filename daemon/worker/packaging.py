"""Building the `.tar.gz` package: streamed, hashed while written, manifest last.

The archive holds one top-level directory, `export-<kind>-<date>/`, with the
job's files and `manifest.json` (written last, so the whole package is
produced in one pass with constant memory whatever the size). Only regular
files are archived: each source is opened with O_NOFOLLOW and checked with
fstat, so a symlink or a device planted in a work directory or a file-export
root never ends up in a package. Members get neutral ownership and modes.

Compression runs on every core the process may use: the tar stream is cut
into 1 MiB blocks, each compressed as an independent gzip member by a thread
pool (zlib releases the GIL while deflating) and written in order. RFC 1952
allows a gzip file to be a series of members and gzip, GNU tar, Python and
browsers read it as one stream, so the result is an ordinary `.tar.gz`, at
about 0.1 % more bytes than one member. Memory stays bounded: at most two
blocks per thread are in flight.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
import zlib
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from daemon import __version__
from daemon.errors import PackagingError
from daemon.kinds.context import PackageFile, check_arcname

CHUNK = 1024 * 1024
COMPRESS_LEVEL = 6  # gzip's own default: near -9 size at a fraction of the CPU
GZIP_BLOCK = 1024 * 1024  # input bytes per gzip member
GZIP_WBITS = 31  # zlib's "gzip header and trailer" mode


@dataclass(frozen=True)
class BuiltPackage:
    """A finished archive, not yet published; `path` when built into a file."""

    path: Path | None
    size_bytes: int
    sha256: str
    manifest: dict[str, Any]


class _HashingWriter(io.RawIOBase):
    """Counts and hashes every byte on its way to the file."""

    def __init__(self, target: Sink) -> None:
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.size += len(view)
        self.target.write(view)
        return len(view)


def compression_threads() -> int:
    """The cores this process may run on (a systemd CPUAffinity= narrows it)."""
    return max(1, len(os.sched_getaffinity(0)))


class _ParallelGzipWriter(io.RawIOBase):
    """gzip as a series of independent members compressed in parallel, written in order.

    A package smaller than one block is compressed in the caller's thread,
    without a pool: small exports pay nothing for the parallel path.
    """

    def __init__(self, target: Sink, *, level: int, threads: int) -> None:
        self.target = target
        self.level = level
        self.threads = threads
        self._buffer = bytearray()
        self._pending: deque[Future[bytes]] = deque()
        self._pool: ThreadPoolExecutor | None = None
        self._members = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = len(memoryview(data))
        self._buffer += data
        while len(self._buffer) >= GZIP_BLOCK:
            block = bytes(self._buffer[:GZIP_BLOCK])
            del self._buffer[:GZIP_BLOCK]
            self._submit(block)
        return size

    def finish(self) -> None:
        """Compress what is left and write every member still in flight."""
        if self._buffer or self._members == 0:
            block = bytes(self._buffer)
            self._buffer.clear()
            if self._pool is None:
                self._write_member(block)
            else:
                self._submit(block)
        self._drain(0)

    def abandon(self) -> None:
        """Stop the pool without writing: the target is being thrown away."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()

    def _submit(self, block: bytes) -> None:
        if self.threads <= 1:
            self._write_member(block)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="exportd-gzip")
        self._pending.append(self._pool.submit(zlib.compress, block, self.level, GZIP_WBITS))
        self._members += 1
        self._drain(2 * self.threads)

    def _write_member(self, block: bytes) -> None:
        """Compress in the caller's thread (one thread, or a package of one block)."""
        self.target.write(zlib.compress(block, self.level, wbits=GZIP_WBITS))
        self._members += 1

    def _drain(self, keep: int) -> None:
        while len(self._pending) > keep:
            self.target.write(self._pending.popleft().result())
        if keep == 0 and self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class _HashingReader(io.RawIOBase):
    """Hashes what tarfile reads from a source file."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _open_regular(path: Path) -> tuple[IO[bytes], os.stat_result]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise PackagingError(f"cannot open {path.name!r}: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise PackagingError(f"{path.name!r} is not a regular file")
    return os.fdopen(fd, "rb", buffering=CHUNK), info


class Sink(Protocol):
    """Where the compressed bytes go: storage's package writer."""

    def write(self, data: Any, /) -> int: ...


def build_package(
    target: Path | Sink,
    files: list[PackageFile],
    *,
    top_dir: str,
    manifest_header: Mapping[str, Any],
    threads: int | None = None,
) -> BuiltPackage:
    """Write `files` and a manifest into `target`. Blocking: run in a thread.

    `target` is storage's writer (the worker), or a path that must not exist
    yet (created, written and fsync-ed here: tests and benchmarks).

    `threads` compress in parallel; None means every core this process may use.
    """
    names = [check_arcname(f.arcname) for f in files]
    threads = compression_threads() if threads is None else threads
    if len(set(names)) != len(names):
        raise PackagingError("two files in the package have the same name")
    if isinstance(target, Path):
        with target.open("xb") as raw:
            built = _write_archive(raw, files, names, top_dir, manifest_header, threads)
            raw.flush()
            os.fsync(raw.fileno())
        return BuiltPackage(target, built.size_bytes, built.sha256, built.manifest)
    return _write_archive(target, files, names, top_dir, manifest_header, threads)


def _write_archive(
    raw: Sink,
    files: list[PackageFile],
    names: list[str],
    top_dir: str,
    manifest_header: Mapping[str, Any],
    threads: int,
) -> BuiltPackage:
    entries: list[dict[str, Any]] = []
    hashing = _HashingWriter(raw)
    gz = _ParallelGzipWriter(hashing, level=COMPRESS_LEVEL, threads=threads)
    try:
        with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for item, name in zip(files, names, strict=True):
                source, info = _open_regular(item.source)
                with source:
                    member = _member(f"{top_dir}/{name}", info.st_size, info.st_mtime)
                    reader = _HashingReader(source)
                    tar.addfile(member, reader)
                entry: dict[str, Any] = {
                    "path": name,
                    "size": reader.size,
                    "sha256": reader.digest.hexdigest(),
                }
                if item.rows is not None:
                    entry["rows"] = item.rows
                entries.append(entry)
            manifest = {**manifest_header, "exportd_version": __version__, "files": entries}
            body = json.dumps(manifest, indent=2, ensure_ascii=False, default=str).encode() + b"\n"
            tar.addfile(
                _member(f"{top_dir}/manifest.json", len(body), datetime.now(UTC).timestamp()),
                io.BytesIO(body),
            )
        gz.finish()
    except BaseException:
        gz.abandon()
        raise
    return BuiltPackage(
        path=None, size_bytes=hashing.size, sha256=hashing.digest.hexdigest(), manifest=manifest
    )


def _member(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o644
    info.type = tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
