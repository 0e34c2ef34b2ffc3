"""Building the `.tar.gz` package: streamed, hashed while written, manifest last.

The archive holds one top-level directory, `export-<kind>-<date>/`, with the
job's files and `manifest.json` (written last, so the whole package is
produced in one pass with constant memory whatever the size). Only regular
files are archived: each source is opened with O_NOFOLLOW and checked with
fstat, so a symlink or a device planted in a work directory or a file-export
root never ends up in a package. Members get neutral ownership and modes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from daemon import __version__
from daemon.errors import ExportdError

CHUNK = 1024 * 1024
COMPRESS_LEVEL = 6  # gzip's own default: near -9 size at a fraction of the CPU


class PackagingError(ExportdError):
    """A file could not be packaged (not a regular file, vanished, bad name)."""


@dataclass(frozen=True)
class PackageFile:
    """A member to archive: where to read it and its name inside the package."""

    source: Path
    arcname: str
    rows: int | None = None


@dataclass(frozen=True)
class BuiltPackage:
    """A finished archive on disk, not yet published."""

    path: Path
    size_bytes: int
    sha256: str
    manifest: dict[str, Any]


def check_arcname(name: str) -> str:
    """A relative POSIX name with no `..`, no empty part, no control characters."""
    pure = PurePosixPath(name)
    if (
        not name
        or not pure.parts
        or pure.is_absolute()
        or any(part in ("", ".", "..") for part in pure.parts)
        or any(ord(ch) < 32 for ch in name)
        or name == "manifest.json"
    ):
        raise PackagingError(f"invalid file name in package: {name!r}")
    return pure.as_posix()


def download_name(kind: str, created_at: datetime) -> str:
    """The file name offered to browsers: export-{kind}-{YYYY-MM-DD}.tar.gz."""
    return f"export-{kind}-{created_at.astimezone(UTC).date().isoformat()}.tar.gz"


class _HashingWriter(io.RawIOBase):
    """Counts and hashes every byte on its way to the file."""

    def __init__(self, target: IO[bytes]) -> None:
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


def build_package(
    target: Path,
    files: list[PackageFile],
    *,
    top_dir: str,
    manifest_header: Mapping[str, Any],
) -> BuiltPackage:
    """Write `files` and a manifest into `target` (a temp path). Blocking: run in a thread."""
    names = [check_arcname(f.arcname) for f in files]
    if len(set(names)) != len(names):
        raise PackagingError("two files in the package have the same name")
    entries: list[dict[str, Any]] = []
    with target.open("xb") as raw:
        hashing = _HashingWriter(raw)
        with (
            gzip.GzipFile(fileobj=hashing, mode="wb", compresslevel=COMPRESS_LEVEL, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar,
        ):
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
        raw.flush()
        os.fsync(raw.fileno())
    return BuiltPackage(
        path=target, size_bytes=hashing.size, sha256=hashing.digest.hexdigest(), manifest=manifest
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
