"""HTTP byte ranges (RFC 9110 §14): the Range header, If-Range, multipart/byteranges.

exportd's own parser, so the download endpoint needs no private part of
Starlette. It keeps the semantics Starlette's `FileResponse` (1.x) had when
exportd relied on it:

- `bytes=a-b`, open `bytes=a-`, suffix `bytes=-n`, several ranges separated
  by commas; the unit is case-insensitive, blanks around parts are allowed.
- ranges are half-open `(start, end)` pairs: `bytes=0-99` is `(0, 100)`; an
  end past the file is clamped to its size, a suffix longer than the file is
  the whole file.
- several ranges are sorted and overlapping or adjacent ones merged, so the
  result may be a single range.
- parts that do not parse (`abc`, `1e3-`, `,`) are skipped; a header with no
  usable part, another unit than bytes, or a last position before the first
  is malformed (`MalformedRange`): the caller ignores the header (§14.2).
- a range starting at or after the end of the file makes the request
  unsatisfiable (`RangeNotSatisfiable`, a 416), as any range of an empty file.
- more than `max_ranges` ranges: the header is ignored (`None`, the whole
  file), checked before any part is parsed so work stays bounded.

Unlike Python's `int()`, positions are ASCII digits only (no sign, `_` or
non-ASCII digits, as in RFC 9110's `1*DIGIT`); a part with anything else is
skipped like any other part that does not parse. Positions of any length are
accepted without converting thousands of digits.
"""

from __future__ import annotations

from collections.abc import Sequence

# A half-open byte interval of a representation: bytes start .. end - 1.
ByteRange = tuple[int, int]

_BLANKS = " \t"


class MalformedRange(ValueError):
    """The Range header cannot be used: ignore it and send the whole file."""


class RangeNotSatisfiable(Exception):
    """A requested range starts at or after the end: 416, `bytes */size`."""

    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable for {size} bytes")
        self.size = size


def _position(text: str, size: int) -> int | None:
    """A byte position (ASCII digits), capped at size + 1; None if not one.

    Every value above `size` behaves the same (an unsatisfiable start, an end
    clamped to the size, a suffix covering the whole file), so a huge number
    is never converted.
    """
    if not text or not text.isascii() or not text.isdigit():
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(size)):
        return size + 1
    return min(int(digits), size + 1)


def _parse_part(part: str, size: int) -> ByteRange | None:
    """One range-spec of the header, or None if it is to be skipped."""
    part = part.strip(_BLANKS)
    if not part or part == "-" or "-" not in part:
        return None
    first, last = (text.strip(_BLANKS) for text in part.split("-", 1))
    if not first:  # suffix range: the last n bytes
        length = _position(last, size)
        if length is None:
            return None
        return max(size - length, 0), size
    start = _position(first, size)
    if start is None:
        return None
    if not last:  # open range: from start to the end
        return start, size
    end = _position(last, size)
    if end is None:
        return None
    return start, (end + 1 if end < size else size)


def _merge(ranges: list[ByteRange]) -> list[ByteRange]:
    """Sorted, with overlapping and adjacent ranges joined."""
    ranges = sorted(ranges)
    merged = [ranges[0]]
    for start, end in ranges[1:]:
        last_start, last_end = merged[-1]
        if start <= last_end:
            merged[-1] = (last_start, max(last_end, end))
        else:
            merged.append((start, end))
    return merged


def parse_range(header: str, size: int, *, max_ranges: int) -> list[ByteRange] | None:
    """The ranges a Range header asks of a `size`-byte representation.

    Returns a non-empty list of half-open ranges (sorted and merged when
    there are several), or None when the header lists more than `max_ranges`
    ranges (ignore it: the whole file). Raises `MalformedRange` (ignore the
    header) or `RangeNotSatisfiable` (answer 416).
    """
    unit, equals, spec = header.partition("=")
    if not equals:
        raise MalformedRange("no '=' in the Range header")
    if unit.strip(_BLANKS).lower() != "bytes":
        raise MalformedRange("only bytes ranges are supported")
    if spec.count(",") + 1 > max_ranges:
        return None
    ranges = [r for r in (_parse_part(part, size) for part in spec.split(",")) if r is not None]
    if not ranges:
        raise MalformedRange("no range in the Range header")
    if any(not 0 <= start < size for start, _ in ranges):
        raise RangeNotSatisfiable(size)
    if any(start >= end for start, end in ranges):
        raise MalformedRange("a range ends before it starts")
    return ranges if len(ranges) == 1 else _merge(ranges)


def if_range_allows(if_range: str, *, etag: str, last_modified: str) -> bool:
    """Whether an If-Range validator lets the Range header apply (RFC 9110 §13.1.5).

    Only an exact match of the strong entity tag or of the Last-Modified date
    does; a weak tag never does. Otherwise the whole file is sent.
    """
    if if_range.startswith("W/"):
        return False
    return if_range in (etag, last_modified)


class Multipart:
    """The multipart/byteranges framing of a response with several ranges (§14.6).

    Body: for each range `--boundary CRLF Content-Type CRLF Content-Range
    CRLF CRLF`, the bytes, CRLF; then `--boundary--` (no trailing CRLF).
    """

    def __init__(self, boundary: str, content_type: str, size: int) -> None:
        self.boundary = boundary
        self.content_type = content_type
        self.size = size

    @property
    def media_type(self) -> str:
        return f"multipart/byteranges; boundary={self.boundary}"

    def part_head(self, start: int, end: int) -> bytes:
        return (
            f"--{self.boundary}\r\n"
            f"Content-Type: {self.content_type}\r\n"
            f"Content-Range: bytes {start}-{end - 1}/{self.size}\r\n"
            "\r\n"
        ).encode("latin-1")

    part_tail = b"\r\n"

    def closing(self) -> bytes:
        return f"--{self.boundary}--".encode("latin-1")

    def content_length(self, ranges: Sequence[ByteRange]) -> int:
        parts = sum(
            len(self.part_head(start, end)) + (end - start) + len(self.part_tail)
            for start, end in ranges
        )
        return parts + len(self.closing())
