"""web.ranges: the Range header parser, If-Range and the multipart/byteranges
framing behind GET /api/v1/jobs/{id}/download (RFC 9110 §14)."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from web.ranges import (
    ByteRange,
    MalformedRange,
    Multipart,
    RangeNotSatisfiable,
    if_range_allows,
    parse_range,
)

SIZE = 300
MAX = 16
HUGE = "9" * 5000  # more digits than int() converts by default


def parse(header: str, size: int = SIZE) -> list[ByteRange] | None:
    return parse_range(header, size, max_ranges=MAX)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", [(0, 100)]),
        ("bytes=0-0", [(0, 1)]),
        (f"bytes={SIZE - 1}-{SIZE - 1}", [(SIZE - 1, SIZE)]),
        ("bytes=100-", [(100, SIZE)]),
        ("bytes=0-", [(0, SIZE)]),
        ("bytes=-100", [(SIZE - 100, SIZE)]),
        ("bytes=-1", [(SIZE - 1, SIZE)]),
        (f"bytes=-{SIZE}", [(0, SIZE)]),
        (f"bytes=-{SIZE * 2}", [(0, SIZE)]),  # a suffix longer than the file: all of it
        (f"bytes=0-{SIZE}", [(0, SIZE)]),  # an end past the file is clamped
        ("bytes=10-99999999999999999999999999", [(10, SIZE)]),
        (f"bytes=10-{HUGE}", [(10, SIZE)]),
        (f"bytes=-{HUGE}", [(0, SIZE)]),
        ("bytes=000000000000000000000000000000005-0009", [(5, 10)]),
        ("Bytes=0-9", [(0, 10)]),
        ("BYTES=0-9", [(0, 10)]),
        (" bytes =0-9", [(0, 10)]),
        ("bytes= 0 - 9 ", [(0, 10)]),
        ("bytes=\t0-9", [(0, 10)]),
    ],
)
def test_single_ranges(header: str, expected: list[ByteRange]) -> None:
    assert parse(header) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9,20-29", [(0, 10), (20, 30)]),
        ("bytes=20-29,0-9", [(0, 10), (20, 30)]),  # sorted
        ("bytes=0-9, 20-29 , -10", [(0, 10), (20, 30), (SIZE - 10, SIZE)]),
        ("bytes=0-10,5-15,10-20", [(0, 21)]),  # overlapping: merged into one
        ("bytes=0-10,11-20", [(0, 21)]),  # adjacent: merged too
        ("bytes=0-9,0-9", [(0, 10)]),
        ("bytes=5-,0-", [(0, SIZE)]),
        ("bytes=0-1,-5,10-20,3-4", [(0, 2), (3, 5), (10, 21), (SIZE - 5, SIZE)]),
        ("bytes=" + ",".join("0-" for _ in range(MAX)), [(0, SIZE)]),
    ],
)
def test_several_ranges_sorted_and_merged(header: str, expected: list[ByteRange]) -> None:
    assert parse(header) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=abc,0-9", [(0, 10)]),
        ("bytes=,0-9,", [(0, 10)]),
        ("bytes=-,0-9", [(0, 10)]),
        ("bytes=5,0-9", [(0, 10)]),  # no dash
        ("bytes=1e3-2e3,0-9", [(0, 10)]),
        ("bytes=0-1-2,0-9", [(0, 10)]),
        ("bytes=+1-5,0-9", [(0, 10)]),  # no sign
        ("bytes=1_0-20,0-9", [(0, 10)]),  # no digit separator
    ],
)
def test_parts_that_do_not_parse_are_skipped(header: str, expected: list[ByteRange]) -> None:
    assert parse(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        "",
        " ",
        "bytes",
        "bytes=",
        "bytes=,,,,",
        "bytes=-",
        "=0-10",
        "items=0-10",
        "lines=0-10",
        "bytes0-10",
        "bytes=abc",
        "bytes=5-1",  # last position before the first
        "bytes=0-9,5-1",
        "bytes=1e3-2e3",
        "bytes=0x10-0x20",
        "bytes=--5",
        "bytes=-5-",
        "bytes=5--1",
        "bytes=+5-10",
        "bytes=-+5",
        "bytes=\u0660-\u0669",  # non-ASCII digits are not DIGIT
        "bytes=\u00b2-\u00b3",  # nor superscripts, which str.isdigit() accepts
    ],
)
def test_malformed_headers(header: str) -> None:
    with pytest.raises(MalformedRange):
        parse(header)


@pytest.mark.parametrize(
    ("header", "size"),
    [
        (f"bytes={SIZE}-", SIZE),
        (f"bytes={SIZE + 10}-{SIZE + 20}", SIZE),
        ("bytes=99999999999999999999999999-", SIZE),
        (f"bytes={HUGE}-", SIZE),
        ("bytes=-0", SIZE),  # an empty suffix
        ("bytes=0-9,400-", SIZE),  # one range beyond the end is enough (as in Starlette)
        (f"bytes={SIZE}-3", SIZE),  # beyond the end wins over the reversed range
        ("bytes=0-", 0),  # nothing of an empty file is satisfiable
        ("bytes=0-0", 0),
        ("bytes=-5", 0),
    ],
)
def test_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as raised:
        parse(header, size)
    assert raised.value.size == size


def test_more_than_max_ranges_is_ignored_before_parsing() -> None:
    sixteen = ",".join(f"{i * 10}-{i * 10 + 4}" for i in range(16))
    seventeen = ",".join(f"{i * 10}-{i * 10 + 4}" for i in range(17))
    parsed = parse(f"bytes={sixteen}")
    assert parsed is not None and len(parsed) == 16
    assert parse(f"bytes={seventeen}") is None
    assert parse("bytes=" + ",".join(f"{i}-{i}" for i in range(10_000))) is None
    # Counted by commas, whatever the parts: unsatisfiable or empty ones too.
    assert parse("bytes=" + ",".join(f"{SIZE + i}-" for i in range(17))) is None
    assert parse("bytes=" + "," * 16) is None
    with pytest.raises(MalformedRange):  # 16 empty parts: within the limit, none usable
        parse("bytes=" + "," * 15)
    assert parse_range("bytes=0-0,2-2", SIZE, max_ranges=1) is None
    assert parse_range("bytes=0-0", SIZE, max_ranges=1) == [(0, 1)]


def test_if_range() -> None:
    etag = '"abc123"'
    date = "Mon, 23 Nov 2026 12:02:20 GMT"
    assert if_range_allows(etag, etag=etag, last_modified=date)
    assert if_range_allows(date, etag=etag, last_modified=date)
    assert not if_range_allows('"stale"', etag=etag, last_modified=date)
    assert not if_range_allows("abc123", etag=etag, last_modified=date)  # unquoted
    assert not if_range_allows("Mon, 23 Nov 2026 12:02:21 GMT", etag=etag, last_modified=date)
    assert not if_range_allows("", etag=etag, last_modified=date)
    # A weak validator never allows a range, even one naming the same tag.
    assert not if_range_allows('W/"abc123"', etag='W/"abc123"', last_modified=date)


def test_multipart_framing() -> None:
    multipart = Multipart("b0undary", "application/gzip", 1000)
    assert multipart.media_type == "multipart/byteranges; boundary=b0undary"
    assert multipart.part_head(0, 10) == (
        b"--b0undary\r\nContent-Type: application/gzip\r\nContent-Range: bytes 0-9/1000\r\n\r\n"
    )
    assert multipart.part_tail == b"\r\n"
    assert multipart.closing() == b"--b0undary--"


def test_multipart_content_length_is_the_body_length() -> None:
    data = bytes(range(256)) * 4
    ranges = [(0, 10), (100, 356), (1000, 1024)]
    multipart = Multipart("x" * 26, "application/gzip", len(data))
    body = b"".join(
        multipart.part_head(start, end) + data[start:end] + multipart.part_tail
        for start, end in ranges
    )
    body += multipart.closing()
    assert multipart.content_length(ranges) == len(body)
    # The length Starlette's generate_multipart computed, for the same ranges.
    static = 49 + 26 + len("application/gzip") + len(str(len(data)))
    expected = sum(len(str(s)) + len(str(e - 1)) + static + (e - s) for s, e in ranges) + 4 + 26
    assert multipart.content_length(ranges) == expected


number = st.one_of(
    st.integers(min_value=0, max_value=2_000),
    st.integers(min_value=0, max_value=10**30),
)
part = st.one_of(
    st.tuples(number, number).map(lambda p: f"{p[0]}-{p[1]}"),
    number.map(lambda n: f"{n}-"),
    number.map(lambda n: f"-{n}"),
    st.text(alphabet="0123456789-, =abx\t", max_size=12),
)
header = st.one_of(
    st.lists(part, min_size=1, max_size=20).map(lambda parts: "bytes=" + ",".join(parts)),
    st.text(max_size=40),
)


@settings(max_examples=500, deadline=None, database=None)
@given(header=header, size=st.integers(min_value=0, max_value=1_000))
def test_any_header_gives_valid_ranges_or_a_clear_answer(header: str, size: int) -> None:
    try:
        ranges = parse_range(header, size, max_ranges=MAX)
    except (MalformedRange, RangeNotSatisfiable):
        return
    if ranges is None:
        assert header.count(",") + 1 > MAX
        return
    assert 1 <= len(ranges) <= MAX
    for start, end in ranges:
        assert 0 <= start < end <= size
    # Sorted, and no two ranges overlap or touch.
    for (_, end), (start, _) in pairwise(ranges):
        assert end < start
