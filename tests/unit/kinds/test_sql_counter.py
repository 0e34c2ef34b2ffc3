"""The SQL step's running row count: one block in COUNT_EVERY counted, the
others inferred from their bytes, never going down, exact for one block."""

from __future__ import annotations

from daemon.kinds.sql import COUNT_EVERY, _Counter


def test_a_single_block_is_counted_exactly_without_its_header() -> None:
    counter = _Counter(header=True)
    counter.add(b"id,name\n" + b"1,a\n" * 999)
    assert counter.rows == 999
    jsonl = _Counter(header=False)
    jsonl.add(b'{"id": 1}\n' * 10)
    assert jsonl.rows == 10


def test_only_one_block_in_count_every_is_counted() -> None:
    """The others count at the bytes per line of the counted ones: a block of
    the same size without a newline still adds as many rows as the first."""
    counter = _Counter(header=False)
    counter.add(b"row\n" * 1000)
    counter.add(b"x" * 4000)
    assert counter.bytes == 8000
    assert counter.rows == 2000


def test_the_inferred_count_is_close_and_never_goes_down() -> None:
    counter = _Counter(header=True)
    counter.add(b"id,label\n")
    shown: list[int] = []
    rows = 0
    for block in range(4 * COUNT_EVERY):
        width = 20 + (block * 7) % 30  # rows of varying length
        lines = 40_000 // width
        counter.add((b"y" * (width - 1) + b"\n") * lines)
        rows += lines
        shown.append(counter.rows)
    assert shown == sorted(shown)
    assert abs(shown[-1] - rows) <= rows * 0.1, (shown[-1], rows)
