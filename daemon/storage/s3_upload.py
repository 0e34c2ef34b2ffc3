"""A package streamed into S3 while it is built: a multipart upload.

Parts of `part_size` (8 MiB) go up as the packaging thread writes, so memory
stays at about one part; the sha256 and size are computed on the way. A
package smaller than one part is one PUT. Anything but `commit()` — an
exception, `close()` — aborts the upload, so an attempt that fails leaves no
object and no pending upload.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from daemon.errors import ExportdError
from daemon.storage.s3_errors import S3RequestFailed

if TYPE_CHECKING:
    from types_boto3_s3.type_defs import CompletedPartTypeDef

    from daemon.storage.s3 import S3Storage

log = logging.getLogger("daemon.storage.s3")

CONTENT_TYPE = "application/gzip"
MAX_PARTS = 10_000  # S3's limit: 80 GB packages with 8 MiB parts


@dataclass(frozen=True)
class UploadedPackage:
    """A package committed to the bucket."""

    key: str
    size_bytes: int
    sha256: str
    parts: int  # 0: one PUT


# -- the storage -------------------------------------------------------------------


class PackageUpload(io.RawIOBase):
    """A package being written straight to the bucket.

    Bytes are buffered up to one part (8 MiB) and uploaded as a multipart
    upload part by part: memory stays at about one part whatever the package
    size. The sha256 and size are computed on the way. A package that never
    fills a part is sent with one PUT at `commit()` (an empty one too).

    `commit()` completes the upload: only then does the object exist.
    `abort()` (also on any failure inside `write`/`commit`, on `close()`
    without commit, and when the `with` block raises) aborts the multipart
    upload, so an abandoned attempt leaves no object and no pending upload.
    """

    def __init__(self, storage: S3Storage, key: str) -> None:
        super().__init__()
        self.storage = storage
        self.key = storage.check_key(key)
        self.part_size = storage.part_size
        self._digest = hashlib.sha256()
        self.size_bytes = 0
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []
        self._done: UploadedPackage | None = None
        self._aborted = False

    # -- io.RawIOBase ------------------------------------------------------------

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._check_open()
        view = memoryview(data).cast("B")
        length = len(view)
        self._digest.update(view)
        self.size_bytes += length
        self._buffer += view
        try:
            while len(self._buffer) >= self.part_size:
                self._upload_part(bytes(self._buffer[: self.part_size]))
                del self._buffer[: self.part_size]
        except BaseException:
            self.abort()
            raise
        return length

    def close(self) -> None:
        """Closing without `commit()` abandons the upload."""
        if not self.closed and self._done is None:
            self.abort()
        super().close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.abort()
        self.close()

    # -- state -------------------------------------------------------------------

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    @property
    def buffered_bytes(self) -> int:
        """Bytes held in memory, not yet sent (less than one part after each write)."""
        return len(self._buffer)

    @property
    def parts_uploaded(self) -> int:
        return len(self._parts)

    @property
    def upload_id(self) -> str | None:
        return self._upload_id

    def _check_open(self) -> None:
        if self._done is not None or self._aborted or self.closed:
            raise ValueError("the package upload is finished")

    # -- S3 ----------------------------------------------------------------------

    def _upload_part(self, data: bytes) -> None:
        storage, client = self.storage, self.storage.client
        if self._upload_id is None:
            created = storage.call(
                "CreateMultipartUpload",
                lambda: client.create_multipart_upload(
                    Bucket=storage.bucket, Key=self.key, ContentType=CONTENT_TYPE
                ),
            )
            self._upload_id = created["UploadId"]
        if len(self._parts) >= MAX_PARTS:
            raise S3RequestFailed("the package is too large for one upload", code="TooManyParts")
        number = len(self._parts) + 1
        upload_id = self._upload_id
        answer = storage.call(
            "UploadPart",
            lambda: client.upload_part(
                Bucket=storage.bucket,
                Key=self.key,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
            ),
        )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def commit(self) -> UploadedPackage:
        """Finish the upload; the object exists from here on. Idempotent."""
        if self._done is not None:
            return self._done
        self._check_open()
        storage, client = self.storage, self.storage.client
        try:
            if self._upload_id is None:
                body = bytes(self._buffer)
                storage.call(
                    "PutObject",
                    lambda: client.put_object(
                        Bucket=storage.bucket, Key=self.key, Body=body, ContentType=CONTENT_TYPE
                    ),
                )
            else:
                if self._buffer:  # the last part may be smaller than 5 MiB
                    self._upload_part(bytes(self._buffer))
                self._complete()
        except BaseException:
            self.abort()
            raise
        self._buffer = bytearray()
        self._done = UploadedPackage(self.key, self.size_bytes, self.sha256, len(self._parts))
        return self._done

    def _complete(self) -> None:
        storage, client = self.storage, self.storage.client
        upload_id = self._upload_id
        assert upload_id is not None
        parts = list(self._parts)
        try:
            storage.call(
                "CompleteMultipartUpload",
                lambda: client.complete_multipart_upload(
                    Bucket=storage.bucket,
                    Key=self.key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                ),
            )
        except S3RequestFailed as exc:
            # A retried Complete whose first try did complete (its answer lost):
            # the upload is gone and the object is there, whole.
            if exc.code != "NoSuchUpload" or storage.size(self.key) != self.size_bytes:
                raise

    def abort(self) -> None:
        """Abandon the upload (no object, no pending parts). Safe to call
        twice, and a no-op after `commit()`. Never raises: it runs while
        another error is on its way up; a failure is logged and the pending
        upload is left to the sweep."""
        if self._done is not None or self._aborted:
            return
        self._aborted = True
        self._buffer = bytearray()
        if self._upload_id is None:
            return
        try:
            self.storage.abort_upload(self.key, self._upload_id)
        except ExportdError as exc:
            log.warning("could not abort a multipart upload (left to the sweep): %s", exc)
