"""The S3 backend of the storage interface: packages as objects under
`s3://BUCKET/PREFIX`, work directories on this host's disk.

A package's relative path (the row's `package_path`) is its key below the
prefix, the same `<aa>/<job_id>/r<run>-a<attempt>-<token>.tar.gz` as the
local backend's file name: switching a deployment between backends changes
where the bytes are, not what rows say. The S3 calls themselves (retries,
presigning, streaming reads) are in `s3`; the multipart writer in `s3_upload`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon.storage.backend import Attempt, Orphan
from daemon.storage.local import WorkArea
from daemon.storage.s3 import ObjectReader, S3Storage
from daemon.storage.s3_checkpoints import S3Checkpoints
from daemon.storage.s3_errors import S3Error, UnsafeKey
from daemon.storage.s3_upload import PackageUpload

log = logging.getLogger("daemon.maintenance.cleanup")


class S3PackageStorage:
    """Packages in a bucket; `work` holds this host's work directories."""

    name = "s3"

    def __init__(self, s3: S3Storage, work: WorkArea) -> None:
        self.s3 = s3
        self.work = work
        self._checkpoints = S3Checkpoints(s3)

    def ensure(self) -> None:
        self.work.ensure()
        self.s3.check()

    # -- work directories --------------------------------------------------------------

    @property
    def work_root(self) -> Path:
        return self.work.work_root

    def make_work_dir(self, attempt: Attempt) -> Path:
        return self.work.make_work_dir(attempt)

    def remove_tree(self, path: Path) -> None:
        self.work.remove_tree(path)

    # -- packages ------------------------------------------------------------------------

    def open_writer(self, attempt: Attempt) -> S3PackageWriter:
        return S3PackageWriter(self.s3.open_upload(attempt.job_id, attempt.run, attempt.attempt))

    def delete(self, relative: str) -> bool:
        return self.s3.delete(self.s3.key_of(relative))

    def size(self, relative: str) -> int | None:
        return self.s3.size(self.s3.key_of(relative))

    def read(self, relative: str) -> Iterator[bytes]:
        with self.open_object(relative, None) as reader:
            yield from reader

    def presigned_url(self, relative: str, *, filename: str, ttl_seconds: int) -> str:
        return self.s3.presigned_get(
            self.s3.key_of(relative), filename=filename, ttl_seconds=ttl_seconds
        )

    def open_object(self, relative: str, range_header: str | None) -> ObjectReader:
        return self.s3.get(self.s3.key_of(relative), range_header)

    # -- checkpoints of runs (resume) ----------------------------------------------------

    @property
    def checkpoints(self) -> S3Checkpoints:
        return self._checkpoints

    # -- the orphan sweep ----------------------------------------------------------------

    def old_entries(self, grace_seconds: float, now: datetime | None) -> list[Orphan]:
        """Objects and unfinished multipart uploads older than the grace
        period (listed page by page), and this host's old work directories."""
        cutoff = (now or datetime.now(UTC)).timestamp() - grace_seconds
        entries: list[Orphan] = []
        for item in self.s3.list_keys():
            if item.last_modified.timestamp() <= cutoff:
                entries += self._entry(item.key, item.size, ("object", item.key))
        for upload in self.s3.list_uploads():
            if upload.initiated.timestamp() <= cutoff:
                entries += self._entry(upload.key, 0, ("upload", upload.key, upload.upload_id))
        return entries + self.work.old_entries(grace_seconds, now)

    def _entry(self, key: str, size: int, handle: tuple[str, ...]) -> list[Orphan]:
        """The orphan candidate for a listed key; none for a key exportd could
        never have written (odd characters): left alone, with a warning."""
        try:
            return [Orphan(self.s3.relative(key), size, False, handle)]
        except UnsafeKey:
            log.warning("the orphan sweep leaves an object it cannot have written alone")
            return []

    def remove_orphans(self, orphans: Iterable[Orphan]) -> tuple[int, int, int]:
        removed = freed = failures = 0
        local: list[Orphan] = []
        for orphan in orphans:
            handle: Any = orphan.handle
            if not isinstance(handle, tuple):
                local.append(orphan)
                continue
            try:
                if handle[0] == "upload":
                    self.s3.abort_upload(handle[1], handle[2])
                else:
                    self.s3.delete(handle[1])
            except S3Error:
                failures += 1
                continue
            removed += 1
            freed += orphan.size
        work = self.work.remove_orphans(local)
        return removed + work[0], freed + work[1], failures + work[2]


class S3PackageWriter:
    """The storage interface's writer over one multipart upload."""

    def __init__(self, upload: PackageUpload) -> None:
        self.upload = upload
        self._relative = upload.storage.relative(upload.key)

    @property
    def relative(self) -> str:
        return self._relative

    def write(self, data: Any, /) -> int:
        return self.upload.write(data)

    def publish(self) -> None:
        self.upload.commit()

    def discard(self) -> None:
        self.upload.abort()
