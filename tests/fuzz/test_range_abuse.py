"""Range and If-Range abuse against the download endpoint (real app, real
file): generated and explicit headers. Never a 5xx, never a byte that is not
the file's own at the offset claimed, bounded time per request."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api_helpers import api_client, api_settings, bearer
from tests.helpers import completed_job

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]
SIZE = 50_000
DATA = os.urandom(SIZE)
SECONDS_PER_REQUEST = 2.0


def check(response: httpx.Response, data: bytes) -> None:
    """The answer is one of the allowed ones, and every byte is the file's."""
    assert response.status_code in (200, 206, 416), response.status_code
    size = len(data)
    if response.status_code == 200:
        assert response.content == data
    elif response.status_code == 416:
        assert response.headers["content-range"] == f"bytes */{size}"
        assert response.json()["code"] == "RANGE_NOT_SATISFIABLE"
    elif response.headers["content-type"].startswith("multipart/byteranges"):
        boundary = response.headers["content-type"].split("boundary=")[1].encode()
        parts = [p for p in response.content.split(b"--" + boundary) if p.strip(b"-\r\n")]
        assert 2 <= len(parts) <= 16
        for part in parts:
            head, _, body = part.partition(b"\r\n\r\n")
            found = re.search(rb"Content-Range: bytes (\d+)-(\d+)/(\d+)", head)
            assert found is not None
            start, end, total = (int(x) for x in found.groups())
            assert total == size and 0 <= start <= end < size
            assert body.removesuffix(b"\r\n") == data[start : end + 1]
    else:
        single = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", response.headers["content-range"])
        assert single is not None
        start, end, total = (int(x) for x in single.groups())
        assert total == size and 0 <= start <= end < size
        assert response.content == data[start : end + 1]


number = st.one_of(
    st.integers(min_value=0, max_value=SIZE * 2),
    st.integers(min_value=0, max_value=10**30),
    st.just(SIZE - 1),
    st.just(SIZE),
)
one_range = st.one_of(
    st.tuples(number, number).map(lambda p: f"{p[0]}-{p[1]}"),
    number.map(lambda n: f"{n}-"),
    number.map(lambda n: f"-{n}"),
    st.text(alphabet="0123456789-, =abx", max_size=12),
)
range_header = st.one_of(
    st.lists(one_range, min_size=1, max_size=20).map(lambda r: "bytes=" + ",".join(r)),
    st.tuples(st.sampled_from(["bytes", "Bytes", "items", "", "bytes "]), one_range).map(
        lambda p: f"{p[0]}={p[1]}"
    ),
    st.text(max_size=40).filter(lambda t: t.isascii() and t.isprintable()),
)


async def test_generated_range_headers(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    app_settings = api_settings(tmp_path)
    job, data = await completed_job(aconn, app_settings, DATA)
    url = f"/api/v1/jobs/{job.job_id}/download"
    etag = f'"{job.package_sha256}"'
    headers_seen: list[dict[str, str]] = []

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        header=range_header,
        if_range=st.one_of(st.none(), st.just(etag), st.just('"stale"'), st.text(max_size=5)),
    )
    def collect(header: str, if_range: str | None) -> None:
        extra = {"Range": header}
        if if_range is not None and if_range.isascii() and if_range.isprintable():
            extra["If-Range"] = if_range
        headers_seen.append(extra)

    # Generated before the app (and its connection pool, whose background
    # tasks draw from `random`) exists: hypothesis refuses a strategy run
    # during which the global random state changes.
    collect()
    async with api_client(app_settings, db_url) as client:
        for extra in headers_seen:
            started = time.monotonic()
            response = await client.get(url, headers={**bearer(), **extra})
            assert time.monotonic() - started < SECONDS_PER_REQUEST, extra
            check(response, data)
    assert len(headers_seen) == 300


EXPLICIT = [
    "bytes=0-0",
    f"bytes={SIZE - 1}-{SIZE - 1}",
    "bytes=0-10,5-15,10-20",  # overlapping: merged
    "bytes=0-10,11-20",  # adjacent
    "bytes=" + ",".join(f"{i}-{i}" for i in range(10_000)),  # 10 000 ranges
    "bytes=" + ",".join("0-" for _ in range(10_000)),
    "bytes=99999999999999999999999999-",
    "bytes=-99999999999999999999999999",
    "bytes=0-99999999999999999999999999",
    "bytes=-0",
    "bytes=--5",
    "bytes=-5-",
    "bytes=5--1",
    "bytes=1e3-2e3",
    "bytes=0x10-0x20",
    "lines=0-10",
    "bytes",
    "bytes=",
    "=0-10",
    "",
    " ",
    "bytes=,,,,",
    "bytes=\u0660-\u0669",  # non-ASCII digits
]


@pytest.mark.parametrize("header", EXPLICIT, ids=range(len(EXPLICIT)))
async def test_explicit_range_abuse(aconn: AConn, db_url: str, tmp_path: Path, header: str) -> None:
    app_settings = api_settings(tmp_path)
    job, data = await completed_job(aconn, app_settings, DATA)
    async with api_client(app_settings, db_url) as client:
        started = time.monotonic()
        response = await client.get(
            f"/api/v1/jobs/{job.job_id}/download",
            headers=[
                *[(k.encode(), v.encode()) for k, v in bearer().items()],
                (b"Range", header.encode()),
            ],
        )
        assert time.monotonic() - started < SECONDS_PER_REQUEST
    check(response, data)
