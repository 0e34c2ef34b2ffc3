"""Building the `.tar.gz` package: streamed, hashed while written, manifest last.

The archive holds one top-level directory, `export-<kind>-<date>/`, with the
job's files and `manifest.json` (written last, so the whole package is
produced in one pass with constant memory whatever the size). Only regular
files are archived: each source is opened with O_NOFOLLOW and checked with
fstat, so a symlink or a device planted in a work directory or a file-export
root never ends up in a package. Members get neutral ownership and modes.

Compression is ISA-L deflate (`daemon.compression`, at
`EXPORTD_COMPRESSION_LEVEL`) on every core the process may use: the tar
stream is cut into 1 MiB blocks, each compressed as an independent gzip
member by a thread pool (deflate releases the GIL) and written in order.
RFC 1952 allows a gzip file to be a series of members and gzip, GNU tar,
Python and browsers read it as one stream, so the result is an ordinary
`.tar.gz`, at about 0.1 % more bytes than one member. Memory stays bounded:
at most two blocks per thread are in flight.

That is also what lets a file arrive already compressed (`PackageFile.
compressed`, the SQL step's output): its tar header goes out as a small
member of its own, then its gzip member is copied verbatim (hashed on the
way like every output byte; a large one by a second thread while it is
copied), then the tar padding continues the stream. The
tar framing is written here rather than by `tarfile`, whose stream writer
cannot be told that some of its bytes were compressed elsewhere; the
headers themselves are `tarfile`'s (`TarInfo.tobuf`, PAX format).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import stat
import tarfile
import threading
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from daemon import __version__
from daemon.compression import DEFAULT_LEVEL, compress_member
from daemon.errors import PackagingError
from daemon.kinds.context import ExportContext, PackageFile, check_arcname
from daemon.storage.backend import PackageWriter

CHUNK = 1024 * 1024
GZIP_BLOCK = 1024 * 1024  # input bytes per gzip member, at least
# A spliced member at least this large is hashed on a thread of its own
# while it is copied; a smaller one is not worth starting the thread.
OVERLAP_MIN = 4 * CHUNK
BLOCKSIZE = tarfile.BLOCKSIZE  # 512: tar pads every member to it
RECORDSIZE = tarfile.RECORDSIZE  # 10240: and the archive to this
TAR_ENCODING = "utf-8"

# Called with the bytes of the package written so far (from the packaging thread).
Progress = Callable[[int], None]
PROGRESS_SECONDS = 0.25  # how often the packaging step's bytes are shown


@dataclass(frozen=True)
class BuiltPackage:
    """A finished archive, not yet published; `path` when built into a file."""

    path: Path | None
    size_bytes: int
    sha256: str
    manifest: dict[str, Any]


class _HashingWriter(io.RawIOBase):
    """Counts and hashes every byte on its way to the file."""

    def __init__(self, target: Sink, progress: Progress | None = None) -> None:
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0
        self._progress = progress
        self._reported = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.target.write(view)
        self._advance(len(view))
        return len(view)

    def _advance(self, written: int) -> None:
        """Count bytes written; report the size about once per CHUNK."""
        self.size += written
        if self._progress is not None and self.size - self._reported >= CHUNK:
            self._reported = self.size
            self._progress(self.size)

    def copy_from(self, source: IO[bytes], size: int, name: str) -> None:
        """The first `size` bytes of `source` written on, as `write` would,
        while a second thread reads the same bytes and hashes them.

        sha256 and the write both release the GIL: on two cores a large
        spliced member costs about its hashing (~0.9 GB/s), not hashing plus
        copying, after the last row of the export. The two threads meet only
        at the end (handing each block over woke a thread twice per MiB,
        which a loaded machine made slower than no thread at all); both read
        with `pread`, from the page cache. A small member is copied serially.
        """
        if size < OVERLAP_MIN:
            _copy_serially(source, size, name, self.write)
            return
        fd = source.fileno()
        stop = threading.Event()
        with ThreadPoolExecutor(1, thread_name_prefix="exportd-hash") as pool:
            hashed = pool.submit(_hash_range, self.digest, fd, size, name, stop)
            try:
                offset = 0
                while offset < size:
                    data = _read_at(fd, offset, size, name)
                    self.target.write(data)
                    offset += len(data)
                    self._advance(len(data))  # hashed by the other thread
            except BaseException:
                stop.set()  # the package is abandoned: no need to hash the rest
                raise
            hashed.result()


def _read_at(fd: int, offset: int, size: int, name: str) -> bytes:
    data = os.pread(fd, min(CHUNK, size - offset), offset)
    if not data:
        raise PackagingError(f"{name!r} shrank while it was packaged")
    return data


def _hash_range(digest: Any, fd: int, size: int, name: str, stop: threading.Event) -> None:
    offset = 0
    while offset < size and not stop.is_set():
        data = _read_at(fd, offset, size, name)
        digest.update(data)
        offset += len(data)


def _copy_serially(source: IO[bytes], size: int, name: str, write: Callable[[bytes], Any]) -> None:
    left = size
    while left > 0:
        data = source.read(min(CHUNK, left))
        if not data:
            raise PackagingError(f"{name!r} shrank while it was packaged")
        write(data)
        left -= len(data)


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
        # Whole writes kept as they came (no copy) until a block's worth.
        self._parts: list[bytes] = []
        self._buffered = 0
        self._pending: deque[Future[bytes]] = deque()
        self._pool: ThreadPoolExecutor | None = None
        self._members = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        part = data if type(data) is bytes else bytes(data)
        self._parts.append(part)
        self._buffered += len(part)
        if self._buffered >= GZIP_BLOCK:
            self._submit(self._take())
        return len(part)

    def _take(self) -> bytes:
        """The buffered writes as one block (members are 1 MiB to 2 MiB)."""
        block = b"".join(self._parts)
        self._parts.clear()
        self._buffered = 0
        return block

    def end_members(self) -> None:
        """Compress what is buffered and write every member in flight, so
        that bytes written to the target next follow them in the stream."""
        self._write_pending(0)
        if self._parts:
            self._write_member(self._take())

    def finish(self) -> None:
        """Compress what is left and write every member still in flight."""
        if self._parts or self._members == 0:
            block = self._take()
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
        self._pending.append(self._pool.submit(compress_member, block, self.level))
        self._members += 1
        self._drain(2 * self.threads)

    def _write_member(self, block: bytes) -> None:
        """Compress in the caller's thread (one thread, or a package of one block)."""
        self._write_pending(0)
        self.target.write(compress_member(block, self.level))
        self._members += 1

    def _write_pending(self, keep: int) -> None:
        while len(self._pending) > keep:
            self.target.write(self._pending.popleft().result())

    def _drain(self, keep: int) -> None:
        self._write_pending(keep)
        if keep == 0 and self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


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


class _Stopped(Exception):
    """Raised in the packaging thread once the event loop stopped it."""


class PackagingRun:
    """The handshake between the event loop and the one thread that opens the
    writer, builds the package and publishes it.

    A cancellation (or any exception) can reach the event loop while that
    thread runs. Under the lock exactly one of two things happens first: the
    thread begins the publish (which then runs to its end; the caller deletes
    the package), or the event loop stops the run (the thread then publishes
    nothing, and discards the writer itself before it ends). Either way the
    event loop waits for the thread before going on, so no partial package
    and no open writer outlive the attempt. The job's cancel flag
    (`ExportContext.cancelled`) is read at the same two points: about every
    MiB of the build and just before the publish.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stopped = False
        self.publishing = False  # the publish began: the package may exist under `relative`
        self.relative: str | None = None
        self.written = 0  # package bytes so far, read by the event loop

    def progress(self, size: int, ctx: ExportContext) -> None:
        """From the build, about once per MiB: ends a stopped or cancelled build early."""
        self.written = size
        if self._stopped:
            raise _Stopped
        ctx.raise_if_cancelled()

    def begin_publish(self, ctx: ExportContext) -> None:
        """From the thread: claim the publish, unless the event loop stopped the run."""
        with self._lock:
            if self._stopped:
                raise _Stopped
            ctx.raise_if_cancelled()
            self.publishing = True

    def stop(self) -> bool:
        """From the event loop: no publish from now on; True when one already began."""
        with self._lock:
            self._stopped = True
            return self.publishing


async def package_with_progress(
    ctx: ExportContext,
    open_writer: Callable[[], PackageWriter],
    run: PackagingRun,
    *,
    top_dir: str,
    manifest_header: Mapping[str, Any],
) -> tuple[str, BuiltPackage, BaseException | None]:
    """Open the writer, build the package into it and publish it, in one
    thread (each thread hop costs the event loop a GIL handoff), showing the
    package bytes written so far as the progress of the packaging step.

    Returns the package's relative path, the package, and the exception (a
    cancellation) that arrived while it was being published: the caller
    deletes the package, then raises it. An exception that arrives before the
    publish began stops the thread, which discards the writer; it is raised
    once the thread ended. When the publish itself fails, `run.publishing`
    tells the caller that something may exist under `run.relative`. The
    reporter is stopped when this returns: no delayed progress write is left
    to race the completion."""

    def package() -> tuple[str, BuiltPackage]:
        writer = open_writer()
        run.relative = writer.relative
        try:
            built = build_package(
                writer,
                ctx.files,
                top_dir=top_dir,
                manifest_header=manifest_header,
                level=ctx.compression_level,
                progress=lambda size: run.progress(size, ctx),
            )
            run.begin_publish(ctx)
            writer.publish()
        except BaseException:
            writer.discard()  # never raises; drops nothing once published
            raise
        return writer.relative, built

    thread = asyncio.ensure_future(asyncio.to_thread(package))
    try:
        try:
            while not (await asyncio.wait([thread], timeout=PROGRESS_SECONDS))[0]:
                await ctx.progress(0, 0, f"{run.written / 1e6:.0f} MB written")
        except BaseException as interruption:
            run.stop()
            await _until_done(thread)
            if thread.cancelled() or thread.exception() is not None:
                raise  # discarded by the thread (a failed publish: `run.publishing`)
            return (*thread.result(), interruption)
    finally:
        ctx.reporter.stop()
    return (*thread.result(), None)


async def _until_done(future: asyncio.Future[Any]) -> None:
    """Wait for `future` to end, whatever else is cancelled meanwhile."""
    while not future.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([future])


def build_package(
    target: Path | Sink,
    files: list[PackageFile],
    *,
    top_dir: str,
    manifest_header: Mapping[str, Any],
    threads: int | None = None,
    level: int = DEFAULT_LEVEL,
    progress: Progress | None = None,
) -> BuiltPackage:
    """Write `files` and a manifest into `target`. Blocking: run in a thread.

    `target` is storage's writer (the worker), or a path that must not exist
    yet (created, written and fsync-ed here: tests and benchmarks).

    `threads` compress in parallel; None means every core this process may
    use. `level` is ISA-L's (0 to 3). `progress` is called with the package
    bytes written so far, about once per MiB.
    """
    names = [check_arcname(f.arcname) for f in files]
    threads = compression_threads() if threads is None else threads
    if len(set(names)) != len(names):
        raise PackagingError("two files in the package have the same name")
    archive = _Archive(files, names, top_dir, manifest_header, threads, level, progress)
    if isinstance(target, Path):
        with target.open("xb") as raw:
            built = archive.write(raw)
            raw.flush()
            os.fsync(raw.fileno())
        return BuiltPackage(target, built.size_bytes, built.sha256, built.manifest)
    return archive.write(target)


@dataclass
class _Archive:
    """One package being written: tar framing, gzip members, hashes, manifest."""

    files: list[PackageFile]
    names: list[str]
    top_dir: str
    manifest_header: Mapping[str, Any]
    threads: int
    level: int
    progress: Progress | None

    def write(self, raw: Sink) -> BuiltPackage:
        entries: list[dict[str, Any]] = []
        hashing = _HashingWriter(raw, self.progress)
        gz = _ParallelGzipWriter(hashing, level=self.level, threads=self.threads)
        tar = _TarStream(gz)
        try:
            for item, name in zip(self.files, self.names, strict=True):
                if item.compressed:
                    size, sha256 = self._splice(tar, gz, hashing, item, name)
                else:
                    size, sha256 = self._copy(tar, item, name)
                entry: dict[str, Any] = {"path": name, "size": size, "sha256": sha256}
                if item.rows is not None:
                    entry["rows"] = item.rows
                entries.append(entry)
            manifest = {**self.manifest_header, "exportd_version": __version__, "files": entries}
            body = json.dumps(manifest, indent=2, ensure_ascii=False, default=str).encode() + b"\n"
            mtime = datetime.now(UTC).timestamp()
            tar.header(_member(f"{self.top_dir}/manifest.json", len(body), mtime))
            tar.content(body)
            tar.end_member(len(body))
            tar.close()
            gz.finish()
        except BaseException:
            gz.abandon()
            raise
        return BuiltPackage(
            path=None, size_bytes=hashing.size, sha256=hashing.digest.hexdigest(), manifest=manifest
        )

    def _copy(self, tar: _TarStream, item: PackageFile, name: str) -> tuple[int, str]:
        """A plain file: read, hashed and compressed here."""
        source, info = _open_regular(item.source)
        digest = hashlib.sha256()
        with source:
            size = info.st_size
            tar.header(_member(f"{self.top_dir}/{name}", size, info.st_mtime))
            left = size
            while left > 0:
                data = source.read(min(CHUNK, left))
                if not data:
                    raise PackagingError(f"{name!r} shrank while it was packaged")
                digest.update(data)
                tar.content(data)
                left -= len(data)
        tar.end_member(size)
        return size, digest.hexdigest()

    def _splice(
        self,
        tar: _TarStream,
        gz: _ParallelGzipWriter,
        hashing: _HashingWriter,
        item: PackageFile,
        name: str,
    ) -> tuple[int, str]:
        """A precompressed file: its header as a member of its own, then its
        gzip member copied as it is, then the padding in the next member."""
        assert item.size is not None and item.sha256 is not None
        source, info = _open_regular(item.source)
        with source:
            tar.header(_member(f"{self.top_dir}/{name}", item.size, info.st_mtime))
            gz.end_members()
            hashing.copy_from(source, info.st_size, name)
        tar.skip(item.size)
        tar.end_member(item.size)
        return item.size, item.sha256


class _TarStream:
    """The tar framing of a stream of members: headers, padding, end blocks.

    Content may bypass it (a spliced member): `skip` then accounts for it.
    """

    def __init__(self, out: _ParallelGzipWriter) -> None:
        self.out = out
        self.offset = 0

    def header(self, info: tarfile.TarInfo) -> None:
        self.content(info.tobuf(tarfile.PAX_FORMAT, TAR_ENCODING, "surrogateescape"))

    def content(self, data: bytes) -> None:
        self.out.write(data)
        self.offset += len(data)

    def skip(self, size: int) -> None:
        self.offset += size

    def end_member(self, size: int) -> None:
        remainder = size % BLOCKSIZE
        if remainder:
            self.content(b"\0" * (BLOCKSIZE - remainder))

    def close(self) -> None:
        """Two zero blocks, then zeros up to a whole record (as tarfile writes)."""
        self.content(b"\0" * (2 * BLOCKSIZE))
        remainder = self.offset % RECORDSIZE
        if remainder:
            self.content(b"\0" * (RECORDSIZE - remainder))


def _member(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o644
    info.type = tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
