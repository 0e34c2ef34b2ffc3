"""File exports: bundle the files under an allow-listed root directory.

The root comes from the exports file and may contain `{owner_id}`, replaced
by the job's authenticated owner; that is the whole allow-list. Nothing that
leaves it is packaged:

- the owner id must be usable as a path component (not empty, no `/` or NUL,
  not `.` or `..`), so it cannot climb out of the fixed prefix;
- below the fixed prefix (the part before `{owner_id}`) the root must not go
  through a symlink, so one owner's directory cannot point at another's;
- the tree is walked without following symlinks, symlinks themselves (to
  files or directories) are never packaged, only regular files are, and each
  file's real path must lie under the root's real path. Refused entries are
  counted in `ctx.result["skipped"]` and logged, never silently dropped.

Packaging opens every source again with O_NOFOLLOW and checks it is still a
regular file, which closes the gap between this walk and the archive.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from daemon.errors import ExportdError, PackagingError
from daemon.kinds.context import ExportContext

OWNER_PLACEHOLDER = "{owner_id}"
DEFAULT_INCLUDE = ("**/*",)
BATCH = 100  # files examined between cancellation checks and progress reports


class FileExportError(ExportdError):
    """The root cannot be used for this job (unsafe owner id, symlinked root, unreadable)."""


def compile_glob(pattern: str) -> re.Pattern[str]:
    """A glob over POSIX relative paths: `**` spans directories, `*` and `?` do not.

    `**/*.pdf` matches `a.pdf` as well as `x/y/a.pdf`; `docs/**` matches
    everything under `docs`. `*` also matches names starting with a dot.
    Raises ValueError for a pattern that could never match a relative path.
    """
    if not pattern or "\x00" in pattern:
        raise ValueError("must be a non-empty pattern")
    if pattern.startswith("/"):
        raise ValueError(f"{pattern!r} must be relative to the root")
    segments = pattern.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise ValueError(f"{pattern!r} must not contain empty, '.' or '..' parts")
    parts: list[str] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment == "**":
            parts.append(".*" if index == last else "(?:[^/]+/)*")
            continue
        regex = "".join(
            "[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch) for ch in segment
        )
        parts.append(regex if index == last else regex + "/")
    return re.compile("".join(parts), re.DOTALL)


def check_root_template(template: str) -> None:
    """Raise ValueError unless `template` is an absolute path whose only placeholder is
    `{owner_id}` (a typo like `{owner}` would otherwise be a literal directory name)."""
    if not template.startswith("/"):
        raise ValueError("must be an absolute path")
    if "\x00" in template:
        raise ValueError("must not contain NUL characters")
    if any(part in (".", "..") for part in template.split("/")):
        raise ValueError("must not contain '.' or '..' parts")
    rest = template.replace(OWNER_PLACEHOLDER, "")
    if "{" in rest or "}" in rest:
        raise ValueError("the only placeholder allowed is {owner_id}")


def check_owner_id(owner_id: str | None) -> str:
    """The owner id, if it is safe as a single path component."""
    if not owner_id:
        raise FileExportError("this export needs an owner: the job has none")
    if "/" in owner_id or "\x00" in owner_id or owner_id in (".", ".."):
        raise FileExportError(f"owner id {owner_id[:40]!r} cannot be used in a file path")
    return owner_id


def resolve_root(template: str, owner_id: str | None) -> Path:
    """The job's root directory: `{owner_id}` replaced, checked against symlink escapes."""
    if OWNER_PLACEHOLDER not in template:
        return Path(template)
    owner = check_owner_id(owner_id)
    prefix = template[: template.index(OWNER_PLACEHOLDER)]
    base = prefix if prefix.endswith("/") else os.path.dirname(prefix)
    root = os.path.normpath(template.replace(OWNER_PLACEHOLDER, owner))
    expected = os.path.normpath(os.path.join(os.path.realpath(base), os.path.relpath(root, base)))
    if os.path.realpath(root) != expected:
        raise FileExportError("the export root of this owner goes through a symlink; refused")
    return Path(root)


@dataclass(frozen=True)
class _Found:
    """A walk result: a file to package, or an entry refused and why."""

    relative: str
    path: Path | None = None
    refused: str | None = None


@dataclass(frozen=True)
class FileExport:
    """The step that adds every allowed file under the root to the package.

    A missing root directory gives an empty package rather than an error: a
    per-owner root (`/srv/uploads/{owner_id}`) usually exists only once the
    owner has uploaded something, and "you have no files" is the right
    answer for the others. A root that exists but is not a directory, or a
    directory that cannot be read, is an error: that export would be
    silently incomplete.
    """

    root: str
    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_root_template(self.root)
        for pattern in (*self.include, *self.exclude):
            compile_glob(pattern)

    async def __call__(self, ctx: ExportContext) -> int:
        """Add the files; return how many were added."""
        await ctx.check_cancelled()
        root = resolve_root(self.root, ctx.job.owner_id)
        added = skipped = 0
        walk = self._walk(root)
        while True:
            await ctx.check_cancelled()
            batch = await asyncio.to_thread(lambda: list(itertools.islice(walk, BATCH)))
            if not batch:
                break
            for found in batch:
                reason = found.refused
                if found.path is not None:
                    try:
                        ctx.add_file(found.path, found.relative)
                        added += 1
                        continue
                    except PackagingError:
                        reason = "its name cannot be used in a package"
                skipped += 1
                ctx.log.warning("file export: refused %r: %s", found.relative, reason)
            await ctx.progress(added, 0, f"{added} files")
        ctx.result["files"] = ctx.result.get("files", 0) + added
        ctx.result["skipped"] = ctx.result.get("skipped", 0) + skipped
        return added

    def _walk(self, root: Path) -> Iterator[_Found]:
        """Blocking: the candidates under `root`, in a stable order."""
        try:
            info = os.stat(root)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise FileExportError(f"cannot read the export root: {exc.strerror}") from None
        if not stat.S_ISDIR(info.st_mode):
            raise FileExportError("the export root is not a directory")
        real_root = os.path.realpath(root)
        include = [compile_glob(p) for p in self.include]
        exclude = [compile_glob(p) for p in self.exclude]

        def wanted(relative: str) -> bool:
            return any(p.fullmatch(relative) for p in include) and not any(
                p.fullmatch(relative) for p in exclude
            )

        def fail(exc: OSError) -> None:
            if isinstance(exc, FileNotFoundError):
                return  # removed while walking: nothing to export there
            where = os.path.relpath(exc.filename or root, root)
            raise FileExportError(f"cannot read {where!r} under the export root: {exc.strerror}")

        for dirpath, dirnames, filenames in os.walk(root, onerror=fail, followlinks=False):
            dirnames.sort()
            directory = PurePosixPath(Path(os.path.relpath(dirpath, root)).as_posix())
            for name in dirnames:
                if os.path.islink(os.path.join(dirpath, name)):
                    # not descended into (followlinks=False); say so
                    yield _Found(str(directory / name), refused="symlink to a directory")
            for name in sorted(filenames):
                relative = str(directory / name)
                if not wanted(relative):
                    continue
                path = Path(dirpath, name)
                try:
                    mode = os.lstat(path).st_mode
                except FileNotFoundError:
                    continue
                if stat.S_ISLNK(mode):
                    yield _Found(relative, refused="symlink")
                elif not stat.S_ISREG(mode):
                    yield _Found(relative, refused="not a regular file")
                elif os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
                    yield _Found(relative, refused="outside the export root")
                else:
                    yield _Found(relative, path=path)
