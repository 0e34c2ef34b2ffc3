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

import hashlib
import io
import logging
import random
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar
from uuid import UUID

import boto3.session
import botocore.config
import botocore.exceptions

from daemon.errors import ExportdError
from daemon.storage import layout

if TYPE_CHECKING:
    from types_boto3_s3.client import S3Client
    from types_boto3_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024  # S3 needs >= 5 MiB for every part but the last
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10_000  # S3's limit: 80 GB packages with 8 MiB parts
CONTENT_TYPE = "application/gzip"
READ_CHUNK = 256 * 1024
_T = TypeVar("_T")

# Key parts as exportd writes them (hex, uuid, `r1-a1-…tar.gz`) and prefixes an
# operator may choose; anything else in a row is refused, like `UnsafePath`.
_KEY_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_MAX_KEY_BYTES = 1024
_RANGE = re.compile(r"bytes=[0-9]*-[0-9]*")  # one range, as S3 serves

# Answers a later attempt may not get again (S3's own advice: retry with backoff).
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
    }
)
# What the owner reads when the store says no: never the key, bucket or endpoint.
_REFUSALS = {
    "AccessDenied": "access denied",
    "403": "access denied",
    "AllAccessDisabled": "access denied",
    "AccountProblem": "access denied",
    "InvalidAccessKeyId": "unknown access key",
    "SignatureDoesNotMatch": "wrong secret key",
    "InvalidToken": "invalid credentials",
    "ExpiredToken": "expired credentials",
    "NoSuchBucket": "no such bucket",
}


# -- errors --------------------------------------------------------------------


class S3Error(ExportdError):
    """Object storage failed; the message is safe to show a job's owner."""


class S3Refused(S3Error):
    """The store refused the request for good (credentials, permissions, no
    such bucket): a retry cannot help until the operator changes something."""

    permanent = True


class S3Unavailable(S3Error):
    """The store could not be reached or kept failing (connection errors, 5xx,
    throttling) after the bounded retries."""


class S3RequestFailed(S3Error):
    """The store rejected one request (an S3 error code we do not retry)."""

    def __init__(self, message: str, *, code: str) -> None:
        self.code = code
        super().__init__(message)


class ObjectMissing(S3Error):
    """The object a row names is not in the bucket (expired, swept, deleted)."""


class RangeNotSatisfiable(S3Error):
    """A Range the object cannot satisfy (the store answered 416)."""


class UnsafeKey(ExportdError):
    """An object key (from a row) is not under the configured prefix, or not a
    key exportd could have written. Mirrors `local.UnsafePath`."""


# -- configuration -----------------------------------------------------------------


def parse_storage_url(url: str) -> tuple[str, str]:
    """`s3://BUCKET/PREFIX` → (bucket, prefix without slashes at either end).

    The prefix may be empty (`s3://BUCKET`); its parts follow the key rules.
    Raises ValueError with a message naming what is wrong (not the URL).
    """
    scheme, sep, rest = url.partition("://")
    if scheme != "s3" or not sep:
        raise ValueError("expected s3://BUCKET/PREFIX")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError("the bucket name must be 3-63 of a-z, 0-9, '.', '-'")
    prefix = prefix.strip("/")
    if prefix and not _valid_parts(prefix):
        raise ValueError("the prefix may only hold A-Z, a-z, 0-9, '.', '_', '-' and '/'")
    return bucket, prefix


def _valid_parts(path: str) -> bool:
    return all(_KEY_PART.fullmatch(part) and part not in (".", "..") for part in path.split("/"))


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


@dataclass(frozen=True)
class UploadedPackage:
    """A package committed to the bucket."""

    key: str
    size_bytes: int
    sha256: str
    parts: int  # 0: one PUT


# -- the storage -------------------------------------------------------------------


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
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise ValueError("the bucket name must be 3-63 of a-z, 0-9, '.', '-'")
        checked = prefix.strip("/")
        if checked and not _valid_parts(checked):
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
        if not key.startswith(head) or not _valid_parts(key[len(head) :]):
            raise UnsafeKey("refusing an object key outside the configured prefix")
        return key[len(head) :]

    # -- calls, retries, errors ------------------------------------------------------

    def _call(self, operation: str, call: Callable[[], _T]) -> _T:
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
                    _describe(exc),
                    attempt,
                    self.max_attempts - 1,
                    delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- objects -----------------------------------------------------------------------

    def open_upload(self, job_id: UUID, run: int, attempt: int) -> PackageUpload:
        """A writer streaming this attempt's package to a fresh key."""
        return PackageUpload(self, self.key_for(job_id, run, attempt))

    def size(self, key: str) -> int | None:
        """The object's size in bytes; None when there is no such object."""
        key = self.check_key(key)
        try:
            head = self._call(
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
        self._call("DeleteObject", lambda: self.client.delete_object(Bucket=self.bucket, Key=key))
        return existed

    def list_keys(self, under: str = "", *, page_size: int = 1000) -> Iterator[StoredObject]:
        """Every object below the prefix (and below `under`, relative to it, e.g.
        `ab/`), page by page (ListObjectsV2 continuation tokens)."""
        if under and not _valid_parts(under.rstrip("/")):
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
            page = self._call("ListObjectsV2", partial(self.client.list_objects_v2, **kwargs))
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
            page = self._call(
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
            self._call(
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
            answer = self._call("GetObject", lambda: self.client.get_object(**kwargs))
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
            created = storage._call(
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
        answer = storage._call(
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
                storage._call(
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
            storage._call(
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


# -- classification -------------------------------------------------------------------


def _error_code(exc: botocore.exceptions.ClientError) -> tuple[str, int]:
    error = exc.response.get("Error", {})
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return str(error.get("Code") or status or "Unknown"), status


def is_transient(exc: BaseException) -> bool:
    """A failure another attempt may not meet: the connection (refused, reset,
    timed out), a 5xx, a 429 or S3's throttling and timeout codes."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code, status = _error_code(exc)
        return code in _TRANSIENT_CODES or status >= 500 or status == 429
    return isinstance(
        exc,
        botocore.exceptions.ConnectionError
        | botocore.exceptions.HTTPClientError
        | botocore.exceptions.IncompleteReadError,
    )


def translate(exc: BaseException, operation: str, *, attempts: int = 1) -> S3Error:
    """The exportd error for a botocore failure, with a message that names no
    endpoint, bucket, key or credential."""
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if isinstance(exc, botocore.exceptions.ClientError):
        code = _error_code(exc)[0]
        if code in _REFUSALS:
            return S3Refused(f"object storage refused the request ({_REFUSALS[code]})")
        if is_transient(exc):
            return S3Unavailable(f"object storage unavailable ({_safe_code(code)}){tries}")
        safe = _safe_code(code)
        return S3RequestFailed(f"object storage {operation} failed ({safe})", code=safe)
    if isinstance(
        exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError
    ):
        return S3Refused("object storage refused the request (no credentials configured)")
    if is_transient(exc):
        return S3Unavailable(f"object storage unreachable ({_describe(exc)}){tries}")
    return S3Error(f"object storage {operation} failed ({type(exc).__name__})")


def _safe_code(code: str) -> str:
    """An S3 error code as echoed back: letters and digits only, bounded."""
    return re.sub(r"[^A-Za-z0-9]", "", code)[:64] or "Unknown"


def _describe(exc: BaseException) -> str:
    """A word for the log and messages (botocore's own text names the URL)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return _safe_code(_error_code(exc)[0])
    if isinstance(
        exc, botocore.exceptions.ReadTimeoutError | botocore.exceptions.ConnectTimeoutError
    ):
        return "timed out"
    if isinstance(exc, botocore.exceptions.ConnectionError | botocore.exceptions.HTTPClientError):
        return "connection failed"
    return type(exc).__name__
