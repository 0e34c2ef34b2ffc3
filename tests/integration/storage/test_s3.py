"""The S3 backend against a real S3 server (SeaweedFS on loopback, see
tests/s3_server.py): streamed multipart uploads, aborts that leave nothing,
presigned downloads with Range, expiry, listing by pages, deletes, refusals
whose messages carry no secret, and keys confined under the prefix."""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import botocore.exceptions
import httpx
import pytest

from daemon.errors import is_permanent
from daemon.storage import layout
from daemon.storage.s3 import PART_SIZE, S3Storage
from daemon.storage.s3_errors import (
    ObjectMissing,
    RangeNotSatisfiable,
    S3Refused,
    S3Unavailable,
    UnsafeKey,
    is_transient,
    translate,
)
from daemon.storage.s3_names import parse_storage_url
from tests.s3_server import SeaweedServer, free_ports

PREFIX = "exports/test"
MiB = 1024 * 1024
FILENAME = "export-orders-2026-01-01.tar.gz"


def make_storage(server: SeaweedServer, bucket: str, **overrides: Any) -> S3Storage:
    options: dict[str, Any] = {
        "endpoint_url": server.endpoint_url,
        "region": server.region,
        "access_key_id": server.access_key,
        "secret_access_key": server.secret_key,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
    }
    options.update(overrides)
    return S3Storage(bucket, PREFIX, **options)


@pytest.fixture
def storage(s3_server: SeaweedServer, s3_bucket: str) -> S3Storage:
    return make_storage(s3_server, s3_bucket)


def pending_uploads(server: SeaweedServer, bucket: str) -> list[Any]:
    return list(server.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def upload(storage: S3Storage, data: bytes) -> str:
    with storage.open_upload(uuid.uuid4(), 1, 1) as writer:
        writer.write(data)
        return writer.commit().key


def chunks(data: bytes, sizes: tuple[int, ...] = (1, 4093, 65536, 131071)) -> Iterator[bytes]:
    """`data` in small writes of uneven sizes (as tar and gzip write)."""
    offset, turn = 0, 0
    while offset < len(data):
        size = sizes[turn % len(sizes)]
        yield data[offset : offset + size]
        offset += size
        turn += 1


def poll_until(predicate: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


# -- uploads -----------------------------------------------------------------------


def test_a_20_mib_package_streams_as_a_multipart_upload(
    storage: S3Storage, s3_server: SeaweedServer, s3_bucket: str
) -> None:
    data = os.urandom(20 * MiB)
    job_id = uuid.uuid4()
    writer = storage.open_upload(job_id, 2, 3)
    most_buffered = 0
    for piece in chunks(data):
        assert writer.write(piece) == len(piece)
        most_buffered = max(most_buffered, writer.buffered_bytes)
    # Two full parts went up while writing; the object does not exist yet.
    assert writer.parts_uploaded == 2
    assert most_buffered < PART_SIZE  # memory bounded by one part
    pending = pending_uploads(s3_server, s3_bucket)
    assert [u["Key"] for u in pending] == [writer.key]
    assert writer.upload_id is not None
    listed = s3_server.client.list_parts(
        Bucket=s3_bucket, Key=writer.key, UploadId=writer.upload_id
    )
    assert [p["Size"] for p in listed["Parts"]] == [PART_SIZE, PART_SIZE]
    assert storage.size(writer.key) is None

    done = writer.commit()
    writer.close()

    assert done.parts == 3
    assert done.size_bytes == len(data)
    assert done.sha256 == hashlib.sha256(data).hexdigest()
    assert re.fullmatch(
        rf"{PREFIX}/{str(job_id)[:2]}/{job_id}/r2-a3-[0-9a-f]{{8}}\.tar\.gz", done.key
    )
    assert layout.job_id_of(storage.relative(done.key)) == job_id
    assert storage.size(done.key) == len(data)
    stored = s3_server.client.get_object(Bucket=s3_bucket, Key=done.key)
    assert stored["ContentType"] == "application/gzip"
    assert hashlib.sha256(stored["Body"].read()).hexdigest() == done.sha256
    assert pending_uploads(s3_server, s3_bucket) == []


def test_a_failure_while_writing_aborts_and_leaves_nothing(
    storage: S3Storage, s3_server: SeaweedServer, s3_bucket: str
) -> None:
    data = os.urandom(10 * MiB)
    writer = storage.open_upload(uuid.uuid4(), 1, 1)

    def package_then_fail() -> None:
        with writer:
            for piece in chunks(data):
                writer.write(piece)
            assert writer.parts_uploaded == 1
            assert len(pending_uploads(s3_server, s3_bucket)) == 1
            raise RuntimeError("packaging broke")

    with pytest.raises(RuntimeError, match="packaging broke"):
        package_then_fail()

    assert storage.size(writer.key) is None
    assert pending_uploads(s3_server, s3_bucket) == []
    assert list(storage.list_uploads()) == []
    assert list(storage.list_keys()) == []
    with pytest.raises(ValueError, match="finished"):
        writer.write(b"more")


def test_closing_without_commit_abandons_the_upload(
    storage: S3Storage, s3_server: SeaweedServer, s3_bucket: str
) -> None:
    writer = storage.open_upload(uuid.uuid4(), 1, 1)
    writer.write(os.urandom(PART_SIZE + 1))
    assert writer.parts_uploaded == 1
    writer.close()
    assert pending_uploads(s3_server, s3_bucket) == []
    assert storage.size(writer.key) is None


@pytest.mark.parametrize("size", [0, 1000, PART_SIZE - 1])
def test_a_small_or_empty_package_is_one_put(storage: S3Storage, size: int) -> None:
    data = os.urandom(size)
    with storage.open_upload(uuid.uuid4(), 1, 1) as writer:
        for piece in chunks(data):
            writer.write(piece)
        done = writer.commit()
    assert done.parts == 0
    assert (done.size_bytes, done.sha256) == (size, hashlib.sha256(data).hexdigest())
    assert storage.size(done.key) == size


def test_a_package_of_exactly_two_parts_completes(storage: S3Storage) -> None:
    data = os.urandom(2 * PART_SIZE)
    with storage.open_upload(uuid.uuid4(), 1, 1) as writer:
        writer.write(data)
        assert writer.buffered_bytes == 0
        done = writer.commit()
    assert (done.parts, done.size_bytes) == (2, len(data))
    assert b"".join(storage.get(done.key)) == data


def test_keys_are_unique_per_attempt(storage: S3Storage) -> None:
    job_id = uuid.uuid4()
    keys = {storage.key_for(job_id, 1, 1) for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        assert storage.check_key(key) == key


# -- downloads ---------------------------------------------------------------------


def test_a_presigned_url_downloads_with_range_and_headers(storage: S3Storage) -> None:
    data = os.urandom(300)
    key = upload(storage, data)
    url = storage.presigned_get(key, filename=FILENAME, ttl_seconds=300)
    assert "response-content-disposition" in url and "response-content-type" in url

    with httpx.Client(timeout=10) as client:
        whole = client.get(url)
        part = client.get(url, headers={"Range": "bytes=100-199"})

    assert whole.status_code == 200
    assert whole.content == data
    assert whole.headers["content-disposition"] == f'attachment; filename="{FILENAME}"'
    assert whole.headers["content-type"] == "application/gzip"
    assert part.status_code == 206
    assert part.content == data[100:200]
    assert part.headers["content-range"] == "bytes 100-199/300"
    assert part.headers["content-disposition"] == f'attachment; filename="{FILENAME}"'


def test_a_presigned_url_stops_working_after_its_ttl(storage: S3Storage) -> None:
    key = upload(storage, b"short-lived")
    # SigV4 dates have whole seconds: sign early in a second so that the first
    # GET surely falls inside the one-second validity.
    poll_until(lambda: time.time() % 1 < 0.3, "the start of a second", timeout=2)
    url = storage.presigned_get(key, filename=FILENAME, ttl_seconds=1)
    with httpx.Client(timeout=10) as client:
        assert client.get(url).status_code == 200
        poll_until(lambda: client.get(url).status_code == 403, "the expired URL is refused")


def test_a_presigned_url_refuses_an_unsafe_file_name(storage: S3Storage) -> None:
    key = upload(storage, b"x")
    for name in ['a"b.tar.gz', "a\r\nSet-Cookie: x", "../x", "", "é.tar.gz"]:
        with pytest.raises(ValueError, match="file name"):
            storage.presigned_get(key, filename=name, ttl_seconds=60)


def test_get_streams_the_object_and_passes_range_through(storage: S3Storage) -> None:
    data = os.urandom(1 * MiB + 17)
    key = upload(storage, data)

    with storage.get(key) as whole:
        assert (whole.status, whole.content_length) == (200, len(data))
        assert b"".join(whole) == data

    part = storage.get(key, "bytes=100-199")
    assert part.status == 206
    assert part.content_range == f"bytes 100-199/{len(data)}"
    assert b"".join(part) == data[100:200]

    for ignored in ("bytes=0-1,5-6", "items=0-1", "bytes=0-1\r\nX-Evil: 1"):
        with storage.get(key, ignored) as whole:
            assert (whole.status, whole.content_length) == (200, len(data))

    with pytest.raises(RangeNotSatisfiable):
        storage.get(key, f"bytes={len(data) + 10}-")
    storage.delete(key)
    with pytest.raises(ObjectMissing):
        storage.get(key)


# -- listing and deleting ------------------------------------------------------------


def test_list_keys_pages_through_the_prefix_only(
    storage: S3Storage, s3_server: SeaweedServer, s3_bucket: str
) -> None:
    keys = {upload(storage, os.urandom(n + 1)): n + 1 for n in range(7)}
    # Beside the prefix, and a prefix that merely starts the same: never listed.
    s3_server.client.put_object(Bucket=s3_bucket, Key="other/aa/x.tar.gz", Body=b"x")
    s3_server.client.put_object(Bucket=s3_bucket, Key=f"{PREFIX}x/aa/x.tar.gz", Body=b"x")
    calls: list[str] = []
    storage.client.meta.events.register(
        "before-call.s3.ListObjectsV2", lambda **_: calls.append("page")
    )

    listed = list(storage.list_keys(page_size=2))

    assert {item.key: item.size for item in listed} == keys
    assert len(calls) == 4  # 2 + 2 + 2 + 1
    assert all(item.last_modified.tzinfo is not None for item in listed)
    some = next(iter(keys))
    under = storage.relative(some)[:3]  # `aa/`
    assert some in {item.key for item in storage.list_keys(under)}


def test_delete_removes_the_object(storage: S3Storage) -> None:
    key = upload(storage, b"gone soon")
    assert storage.exists(key)
    assert storage.delete(key) is True
    assert not storage.exists(key)
    assert storage.size(key) is None
    assert storage.delete(key) is False


# -- refusals ------------------------------------------------------------------------


def _assert_safe(message: str, *secrets: str) -> None:
    """No credential, endpoint, bucket, prefix or key in an error's message."""
    for secret in (*secrets, "127.0.0.1", PREFIX):
        assert secret not in message


def test_wrong_credentials_raise_a_safe_permanent_error(
    s3_server: SeaweedServer, s3_bucket: str
) -> None:
    wrong_secret = make_storage(s3_server, s3_bucket, secret_access_key="not-the-secret-at-all")
    wrong_key = make_storage(s3_server, s3_bucket, access_key_id="AKIAUNKNOWN0000000000")
    key = wrong_secret.key_for(uuid.uuid4(), 1, 1)

    for storage in (wrong_secret, wrong_key):
        with pytest.raises(S3Refused) as put:
            upload(storage, b"data")
        with pytest.raises(S3Refused) as listing:
            list(storage.list_keys())
        with pytest.raises(S3Refused) as head:
            storage.size(key)
        for exc in (put.value, listing.value, head.value):
            message = str(exc)
            assert message.startswith("object storage refused the request (")
            _assert_safe(
                message,
                s3_server.secret_key,
                s3_server.access_key,
                s3_server.endpoint_url,
                s3_bucket,
                key,
                "not-the-secret-at-all",
                "AKIAUNKNOWN",
            )
            assert is_permanent(exc)

    assert str(listing.value) == "object storage refused the request (unknown access key)"
    assert pending_uploads(s3_server, s3_bucket) == []


def test_a_missing_bucket_is_refused(s3_server: SeaweedServer) -> None:
    storage = make_storage(s3_server, f"no-such-{uuid.uuid4().hex[:12]}")
    with pytest.raises(S3Refused, match=r"^object storage refused the request \(no such bucket\)$"):
        list(storage.list_keys())


def test_an_unreachable_store_is_retried_then_unavailable(s3_bucket: str) -> None:
    (port,) = free_ports(1)  # nothing listens there
    endpoint = f"http://127.0.0.1:{port}"
    storage = S3Storage(
        s3_bucket,
        PREFIX,
        endpoint_url=endpoint,
        access_key_id="id",
        secret_access_key="secret-value",
        max_attempts=3,
        backoff_base=0.01,
        backoff_max=0.02,
        connect_timeout=1,
    )
    attempts: list[str] = []
    storage.client.meta.events.register("before-send.s3.*", lambda **_: attempts.append("try"))

    with pytest.raises(S3Unavailable) as info:
        list(storage.list_keys())

    assert len(attempts) == 3
    assert str(info.value) == "object storage unreachable (connection failed) after 3 attempts"
    assert not is_permanent(info.value)
    _assert_safe(str(info.value), endpoint, s3_bucket, str(port), "secret-value")


def _client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return botocore.exceptions.ClientError(
        response,
        "PutObject",
    )


@pytest.mark.parametrize(
    ("code", "status", "transient"),
    [
        ("SlowDown", 503, True),
        ("InternalError", 500, True),
        ("ServiceUnavailable", 503, True),
        ("Throttling", 400, True),
        ("RequestTimeout", 400, True),
        ("502", 502, True),
        ("AccessDenied", 403, False),
        ("NoSuchBucket", 404, False),
        ("InvalidAccessKeyId", 403, False),
        ("SignatureDoesNotMatch", 403, False),
        ("EntityTooSmall", 400, False),
    ],
)
def test_errors_are_classified(code: str, status: int, transient: bool) -> None:
    exc = _client_error(code, status)
    assert is_transient(exc) is transient
    translated = translate(exc, "PutObject", attempts=5 if transient else 1)
    assert is_permanent(translated) is (status in (403, 404))
    if transient:
        assert isinstance(translated, S3Unavailable)
        assert str(translated).endswith("after 5 attempts")


# -- keys --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "",
        "other/aa/x.tar.gz",
        f"/{PREFIX}/aa/x.tar.gz",
        f"{PREFIX}",
        f"{PREFIX}/",
        f"{PREFIX}x/aa/x.tar.gz",
        f"{PREFIX}/../x.tar.gz",
        f"{PREFIX}/aa/../../x.tar.gz",
        f"{PREFIX}/aa//x.tar.gz",
        f"{PREFIX}/./x.tar.gz",
        f"{PREFIX}/aa/x y.tar.gz",
        f"{PREFIX}/aa/x\n.tar.gz",
        f"{PREFIX}/aa\\x.tar.gz",
        f"{PREFIX}/{'a' * 1100}",
    ],
)
def test_a_key_outside_the_prefix_is_refused(storage: S3Storage, key: str) -> None:
    sent: list[str] = []
    storage.client.meta.events.register("before-send.s3.*", lambda **_: sent.append("request"))
    for use in (
        storage.size,
        storage.exists,
        storage.delete,
        storage.get,
        lambda k: storage.presigned_get(k, filename=FILENAME, ttl_seconds=60),
    ):
        with pytest.raises(UnsafeKey) as info:
            use(key)
        assert key not in str(info.value) or not key
    assert sent == []  # refused before any request


def test_a_listing_prefix_outside_the_prefix_is_refused(storage: S3Storage) -> None:
    for under in ("../", "/x", "a/../../"):
        with pytest.raises(UnsafeKey):
            list(storage.list_keys(under))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://exports", ("exports", "")),
        ("s3://exports/", ("exports", "")),
        ("s3://my.bucket-1/a/b/", ("my.bucket-1", "a/b")),
    ],
)
def test_storage_urls_parse(url: str, expected: tuple[str, str]) -> None:
    assert parse_storage_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "file:///srv/x",
        "s3:/bucket",
        "s3://",
        "s3://UPPER",
        "s3://ab",
        "s3://b..x",
        "s3://bkt/a/../b",
        "s3://bkt/a b",
    ],
)
def test_bad_storage_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is checked by the config tests
        parse_storage_url(url)


@pytest.mark.parametrize(
    ("bucket", "prefix"), [("a/b", ""), ("ab", ""), ("bkt", "a/../b"), ("bkt", "a//b")]
)
def test_bad_buckets_and_prefixes_are_refused(bucket: str, prefix: str) -> None:
    with pytest.raises(ValueError, match=r"bucket|prefix"):
        S3Storage(
            bucket,
            prefix,
            endpoint_url="http://127.0.0.1:9",
            access_key_id="a",
            secret_access_key="b",
        )
