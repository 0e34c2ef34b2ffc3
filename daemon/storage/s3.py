"""Packages on S3-compatible object storage (DESIGN §10): keys, streamed
multipart uploads, presigned downloads, listing for the orphan sweep.

Why boto3 (botocore underneath), against aiobotocore and obstore:
- Presigned GETs must carry `response-content-disposition` and
  `response-content-type` (DESIGN §10): boto3 signs any GetObject parameter;
  obstore's `sign()` (0.12) takes only method, path and TTL, and parameters
  appended afterwards break the signature. That rules obstore out.
- The package is built in a thread (`asyncio.to_thread`): a synchronous
  client uploads a part inside `write()`. aiobotocore would need a bridge back
  to the event loop, pins botocore narrowly and adds aiohttp: 50 MB installed
  against boto3's 37 MB (obstore 16 MB). `types-boto3[s3]` (3 MB, tests only)
  types every call under mypy strict; boto3 is AWS's own, released weekly.
The multipart upload is driven by hand, not by s3transfer: memory stays at one
8 MiB part, the sha256 is computed on the way, and retries are ours.

Every method blocks: call them from a thread (the worker's packaging thread,
`asyncio.to_thread`, or Starlette's thread pool for a streamed response).
Messages of the errors raised here never name the endpoint, the bucket, a key
or a credential: they end up in a job's `error_message` (`safe_error`).
"""

from __future__ import annotations

import logging
import random
import re
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar
from uuid import UUID

import boto3.session
import botocore.config
import botocore.exceptions

from daemon.storage import layout
from daemon.storage.s3_errors import (
    ObjectMissing,
    RangeNotSatisfiable,
    S3Refused,
    S3RequestFailed,
    S3Unavailable,
    UnsafeKey,
    describe_error,
    is_transient,
    translate,
)
from daemon.storage.s3_names import BUCKET, parse_storage_url, valid_parts, valid_relative
from daemon.storage.s3_upload import CONTENT_TYPE, PackageUpload

if TYPE_CHECKING:
    from types_boto3_s3.client import S3Client

log = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024  # S3 needs >= 5 MiB for every part but the last
MIN_PART_SIZE = 5 * 1024 * 1024
READ_CHUNK = 256 * 1024
_T = TypeVar("_T")

_FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_MAX_KEY_BYTES = 1024
_RANGE = re.compile(r"bytes=[0-9]*-[0-9]*")  # one range, as S3 serves


class StoredObject(NamedTuple):
    """One listed object: its full key, size and modification time."""

    key: str
    size: int
    last_modified: datetime


class PendingUpload(NamedTuple):
    """A multipart upload started and neither completed nor aborted."""

    key: str
    upload_id: str
    initiated: datetime


class S3Storage:
    """Packages under `s3://bucket/prefix`, through one thread-safe client."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        max_attempts: int = 5,
        backoff_base: float = 0.2,
        backoff_max: float = 10.0,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        part_size: int = PART_SIZE,
    ) -> None:
        """`access_key_id`/`secret_access_key` None: boto3's own chain (the
        AWS_* environment, config files, an instance role). Path-style
        addressing with a custom endpoint (SeaweedFS, MinIO, Ceph), virtual
        hosts on AWS."""
        if not BUCKET.fullmatch(bucket) or ".." in bucket:
            raise ValueError("the bucket name must be 3-63 of a-z, 0-9, '.', '-'")
        checked = prefix.strip("/")
        if checked and not valid_parts(checked):
            raise ValueError("the prefix may only hold A-Z, a-z, 0-9, '.', '_', '-' and '/'")
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        self.bucket = bucket
        self.prefix = checked
        self.part_size = part_size
        self.max_attempts = max(1, max_attempts)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )
        config = botocore.config.Config(
            signature_version="s3v4",  # presigned URLs too (SigV2 is refused by many servers)
            s3={"addressing_style": "path" if endpoint_url else "virtual"},
            # The retries are ours (_call): one attempt per botocore call.
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # boto3 >= 1.36 adds CRC checksums to every upload by default, which
            # several S3-compatible servers reject; the sha256 is exportd's check.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=32,
        )
        self.client: S3Client = session.client("s3", endpoint_url=endpoint_url, config=config)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> S3Storage:
        """From `EXPORTD_STORAGE_URL=s3://BUCKET/PREFIX` and the other settings."""
        bucket, prefix = parse_storage_url(url)
        return cls(bucket, prefix, **kwargs)

    # -- keys ----------------------------------------------------------------------

    def key_for(self, job_id: UUID, run: int, attempt: int) -> str:
        """A fresh key for this attempt's package:
        `{prefix}/{aa}/{job_id}/r{run}-a{attempt}-{random}.tar.gz`.

        Made of the job's own uuid and integers only; random, so two runs of a
        job never write the same object (whichever commits wins).
        """
        if not isinstance(job_id, UUID):
            raise TypeError("job_id must be a UUID")
        if isinstance(run, bool) or isinstance(attempt, bool) or min(run, attempt) < 0:
            raise ValueError("run and attempt must be non-negative integers")
        relative = layout.package_path(job_id, int(run), int(attempt), secrets.token_hex(4))
        return self._join(relative)

    def _join(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def key_of(self, relative: str) -> str:
        """The object key of a stored package path (a row's `package_path`,
        relative to the prefix); UnsafeKey for anything exportd never writes."""
        if not isinstance(relative, str) or not relative or not valid_relative(relative):
            raise UnsafeKey("refusing a package path exportd never writes")
        return self.check_key(self._join(relative))

    def check_key(self, key: str) -> str:
        """`key` itself when it lies under the configured prefix and has only
        the parts exportd writes; UnsafeKey otherwise (a row is not trusted)."""
        return self._join(self.relative(key))

    def relative(self, key: str) -> str:
        """The part of `key` below the prefix (`aa/job_id/…`, what
        `layout.job_id_of` reads); UnsafeKey when it is not under the prefix."""
        if not isinstance(key, str) or len(key.encode("utf-8", "replace")) > _MAX_KEY_BYTES:
            raise UnsafeKey("refusing an object key that is not a short string")
        head = f"{self.prefix}/" if self.prefix else ""
        if not key.startswith(head) or not valid_relative(key[len(head) :]):
            raise UnsafeKey("refusing an object key outside the configured prefix")
        return key[len(head) :]

    # -- calls, retries, errors ------------------------------------------------------

    def call(self, operation: str, call: Callable[[], _T]) -> _T:
        """Run one S3 request, retrying transient failures with capped
        exponential backoff and full jitter; translate the rest."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return call()
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
                if not is_transient(exc) or attempt == self.max_attempts:
                    raise translate(exc, operation, attempts=attempt) from exc
                delay = random.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))  # noqa: S311 - jitter
                log.warning(
                    "object storage %s failed (%s), retry %d/%d in %.2f s",
                    operation,
                    describe_error(exc),
                    attempt,
                    self.max_attempts - 1,
                    delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- objects -----------------------------------------------------------------------

    def check(self) -> None:
        """One HeadBucket: the store answers, the credentials are accepted and
        the bucket exists (S3Refused / S3Unavailable with a safe message)."""
        try:
            self.call("HeadBucket", lambda: self.client.head_bucket(Bucket=self.bucket))
        except S3RequestFailed as exc:
            # A HEAD answer has no body: a missing bucket is a bare 404.
            if exc.code in ("404", "NotFound", "NoSuchBucket"):
                raise S3Refused("object storage refused the request (no such bucket)") from exc
            raise

    def open_upload(self, job_id: UUID, run: int, attempt: int) -> PackageUpload:
        """A writer streaming this attempt's package to a fresh key."""
        return PackageUpload(self, self.key_for(job_id, run, attempt))

    def size(self, key: str) -> int | None:
        """The object's size in bytes; None when there is no such object."""
        key = self.check_key(key)
        try:
            head = self.call(
                "HeadObject", lambda: self.client.head_object(Bucket=self.bucket, Key=key)
            )
        except S3RequestFailed as exc:
            if exc.code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return int(head["ContentLength"])

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def delete(self, key: str) -> bool:
        """Delete an object; False when it was already gone."""
        key = self.check_key(key)
        existed = self.size(key) is not None
        self.call("DeleteObject", lambda: self.client.delete_object(Bucket=self.bucket, Key=key))
        return existed

    def list_keys(self, under: str = "", *, page_size: int = 1000) -> Iterator[StoredObject]:
        """Every object below the prefix (and below `under`, relative to it, e.g.
        `ab/`), page by page (ListObjectsV2 continuation tokens)."""
        if under and not valid_relative(under.rstrip("/")):
            raise UnsafeKey("refusing a listing prefix outside the configured prefix")
        head = f"{self.prefix}/" if self.prefix else ""
        list_prefix = head + under
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "Bucket": self.bucket,
                "Prefix": list_prefix,
                "MaxKeys": page_size,
            }
            if token:
                kwargs["ContinuationToken"] = token
            page = self.call("ListObjectsV2", partial(self.client.list_objects_v2, **kwargs))
            for item in page.get("Contents", []):
                yield StoredObject(item["Key"], int(item["Size"]), item["LastModified"])
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def list_uploads(self) -> Iterator[PendingUpload]:
        """Multipart uploads under the prefix never completed nor aborted (a
        worker killed mid-upload leaves one; the sweep aborts old ones)."""
        head = f"{self.prefix}/" if self.prefix else ""
        markers: dict[str, Any] = {}
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": head, **markers}
            page = self.call(
                "ListMultipartUploads", partial(self.client.list_multipart_uploads, **kwargs)
            )
            for item in page.get("Uploads", []):
                yield PendingUpload(item["Key"], item["UploadId"], item["Initiated"])
            if not page.get("IsTruncated"):
                return
            markers = {
                "KeyMarker": page.get("NextKeyMarker", ""),
                "UploadIdMarker": page.get("NextUploadIdMarker", ""),
            }

    def abort_upload(self, key: str, upload_id: str) -> None:
        key = self.check_key(key)
        try:
            self.call(
                "AbortMultipartUpload",
                lambda: self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id
                ),
            )
        except S3RequestFailed as exc:
            if exc.code != "NoSuchUpload":
                raise

    def presigned_get(self, key: str, *, filename: str, ttl_seconds: int) -> str:
        """A URL that GETs (Range included) the object for `ttl_seconds`, with
        `Content-Disposition: attachment; filename="…"` and `Content-Type:
        application/gzip` in the answer. Signed locally: no request is made."""
        key = self.check_key(key)
        if not _FILENAME.fullmatch(filename):
            raise ValueError("the download file name may only hold A-Z, a-z, 0-9, '.', '_', '-'")
        if not 1 <= ttl_seconds <= 7 * 24 * 3600:  # SigV4's limit: 7 days
            raise ValueError("ttl_seconds must be between 1 s and 7 days")
        return self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ResponseContentDisposition": f'attachment; filename="{filename}"',
                "ResponseContentType": CONTENT_TYPE,
            },
            ExpiresIn=int(ttl_seconds),
        )

    def get(self, key: str, range: str | None = None) -> ObjectReader:
        """Open the object for a proxied download; `range` is the client's
        Range header, passed through (the store answers 206 or 416). A header
        that is not a byte range is ignored, as RFC 9110 says: the whole object."""
        key = self.check_key(key)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if range and _RANGE.fullmatch(range):
            kwargs["Range"] = range
        try:
            answer = self.call("GetObject", lambda: self.client.get_object(**kwargs))
        except S3RequestFailed as exc:
            if exc.code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectMissing("the package is not in object storage") from exc
            if exc.code in ("InvalidRange", "416"):
                raise RangeNotSatisfiable("the requested range is not satisfiable") from exc
            raise
        meta = answer["ResponseMetadata"]
        return ObjectReader(
            status=int(meta["HTTPStatusCode"]),
            content_length=int(answer["ContentLength"]),
            content_range=answer.get("ContentRange"),
            etag=answer.get("ETag"),
            last_modified=answer.get("LastModified"),
            body=answer["Body"],
        )


class ObjectReader:
    """An open GET: status (200/206) and headers to answer with, and the body
    as chunks. Iterate it once; close it (or exhaust it) to free the connection."""

    def __init__(
        self,
        *,
        status: int,
        content_length: int,
        content_range: str | None,
        etag: str | None,
        last_modified: datetime | None,
        body: Any,
    ) -> None:
        self.status = status
        self.content_length = content_length
        self.content_range = content_range
        self.etag = etag
        self.last_modified = last_modified
        self._body = body

    def __iter__(self) -> Iterator[bytes]:
        try:
            while True:
                try:
                    chunk = self._body.read(READ_CHUNK)
                except (botocore.exceptions.BotoCoreError, OSError) as exc:
                    raise S3Unavailable("object storage connection lost during a download") from exc
                if not chunk:
                    return
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> ObjectReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the streaming upload -----------------------------------------------------------
