"""The gzip member a step writes while its data arrives (`daemon.compression`)."""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
from pathlib import Path

import pytest

from daemon import compression
from daemon.compression import WRITEBACK_BYTES, GzipMemberWriter


def test_the_member_is_written_back_while_it_grows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Write-out is requested every WRITEBACK_BYTES of output, each time for
    bytes already handed to the kernel, so that the fsync that keeps the
    file after the last row has little left to write."""
    requests: list[tuple[int, int]] = []  # (offset, file size at the request)
    real = compression.start_writeback

    def recording(fd: int, offset: int) -> None:
        requests.append((offset, os.fstat(fd).st_size))
        real(fd, offset)

    monkeypatch.setattr(compression, "start_writeback", recording)
    content = os.urandom(5 * WRITEBACK_BYTES // 2)  # incompressible: as large compressed
    path = tmp_path / "rows.csv.gz"
    writer = GzipMemberWriter(path, level=1)
    for start in range(0, len(content), 1 << 20):
        writer.write(content[start : start + (1 << 20)])
    sha256 = writer.finish()
    assert len(requests) == 2
    assert requests[0][0] == 0
    assert requests[1][0] >= WRITEBACK_BYTES
    assert all(size - offset >= WRITEBACK_BYTES for offset, size in requests)
    assert gzip.decompress(path.read_bytes()) == content
    assert sha256 == hashlib.sha256(content).hexdigest()


@pytest.mark.skipif(sys.platform != "linux", reason="sync_file_range is Linux's")
def test_write_back_is_available_on_linux(tmp_path: Path) -> None:
    assert compression._SYNC_FILE_RANGE is not None
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10_000)
    fd = os.open(path, os.O_RDONLY)
    try:
        compression.start_writeback(fd, 0)  # a hint: no error, no change
    finally:
        os.close(fd)
    assert path.read_bytes() == b"x" * 10_000
