"""Packaging: streamed tar.gz, hashes, manifest last, only regular files."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from daemon.compression import GzipMemberWriter
from daemon.errors import PackagingError
from daemon.kinds.context import PackageFile, check_arcname
from daemon.worker.packaging import CHUNK, OVERLAP_MIN, build_package


def test_package_has_files_then_manifest_with_hashes(tmp_path: Path) -> None:
    a = tmp_path / "a.csv"
    a.write_bytes(b"id\n1\n")
    b = tmp_path / "big.bin"
    b.write_bytes(os.urandom(3 * 1024 * 1024))
    target = tmp_path / "out.tar.gz"
    built = build_package(
        target,
        [PackageFile(a, "a.csv", rows=1), PackageFile(b, "data/big.bin")],
        top_dir="export-x-2026-11-23",
        manifest_header={"job_id": "j", "kind": "x"},
    )
    data = target.read_bytes()
    assert built.size_bytes == len(data)
    assert built.sha256 == hashlib.sha256(data).hexdigest()
    with tarfile.open(target) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [
            "export-x-2026-11-23/a.csv",
            "export-x-2026-11-23/data/big.bin",
            "export-x-2026-11-23/manifest.json",
        ]
        assert all(m.isreg() and m.uid == 0 and m.mode == 0o644 for m in members)
        handle = tar.extractfile(members[-1])
        assert handle is not None
        manifest = json.loads(handle.read())
    assert manifest["files"] == [
        {"path": "a.csv", "size": 5, "sha256": hashlib.sha256(b"id\n1\n").hexdigest(), "rows": 1},
        {
            "path": "data/big.bin",
            "size": b.stat().st_size,
            "sha256": hashlib.sha256(b.read_bytes()).hexdigest(),
        },
    ]
    assert manifest["job_id"] == "j" and "exportd_version" in manifest


def test_symlinks_are_never_packaged(tmp_path: Path) -> None:
    link = tmp_path / "passwd"
    link.symlink_to("/etc/passwd")
    with pytest.raises(PackagingError, match="cannot open 'passwd'"):
        build_package(
            tmp_path / "out.tar.gz",
            [PackageFile(link, "passwd")],
            top_dir="t",
            manifest_header={},
        )


def test_fifos_and_directories_are_not_regular_files(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for source in (fifo, tmp_path):
        with pytest.raises(PackagingError, match="not a regular file"):
            build_package(
                tmp_path / f"out-{source.name}.tar.gz",
                [PackageFile(source, "x")],
                top_dir="t",
                manifest_header={},
            )


@pytest.mark.parametrize("name", ["", "/etc/x", "../x", "a/../b", "./", "manifest.json", "a\nb"])
def test_unsafe_member_names_are_refused(name: str) -> None:
    with pytest.raises(PackagingError):
        check_arcname(name)


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.write_text("x")
    with pytest.raises(PackagingError, match="same name"):
        build_package(
            tmp_path / "o.tar.gz",
            [PackageFile(a, "a"), PackageFile(a, "a")],
            top_dir="t",
            manifest_header={},
        )


def _big_text(path: Path, mib: int) -> None:
    line = b"1234,alice,2026-11-23T00:00:00Z,some text that compresses,42.5\n"
    with path.open("wb") as out:
        for index in range(mib * 1024 * 1024 // len(line) + 1):
            out.write(line.replace(b"1234", str(index).encode()))


def test_parallel_members_are_one_ordinary_tar_gz(tmp_path: Path) -> None:
    """Blocks compressed on several threads read back, in order, with GNU tar and gzip."""
    big = tmp_path / "big.csv"
    _big_text(big, 5)
    outputs = {}
    for threads in (1, 4):
        target = tmp_path / f"out-{threads}.tar.gz"
        built = build_package(
            target, [PackageFile(big, "big.csv")], top_dir="t", manifest_header={}, threads=threads
        )
        assert built.sha256 == hashlib.sha256(target.read_bytes()).hexdigest()
        outputs[threads] = target
        subprocess.run(["gzip", "-t", str(target)], check=True)
        listing = subprocess.run(
            ["tar", "tzf", str(target)], check=True, capture_output=True, text=True
        ).stdout.split()
        assert listing == ["t/big.csv", "t/manifest.json"]
        extracted = tmp_path / f"x-{threads}"
        extracted.mkdir()
        subprocess.run(["tar", "xzf", str(target), "-C", str(extracted)], check=True)
        assert (extracted / "t" / "big.csv").read_bytes() == big.read_bytes()
    one, four = (gzip.decompress(outputs[n].read_bytes()) for n in (1, 4))
    # Same tar stream (the manifest's mtime aside), hence same member layout.
    assert len(one) == len(four) and one[: 5 * 1024 * 1024] == four[: 5 * 1024 * 1024]
    # More than one member: the file is a series of gzip members.
    assert outputs[4].read_bytes().count(b"\x1f\x8b\x08") >= 5


def test_failure_mid_package_stops_the_pool(tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    _big_text(big, 3)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    before = threading.active_count()
    with pytest.raises(PackagingError, match="not a regular file"):
        build_package(
            tmp_path / "out.tar.gz",
            [PackageFile(big, "big.csv"), PackageFile(fifo, "fifo")],
            top_dir="t",
            manifest_header={},
            threads=3,
        )
    assert threading.active_count() == before


def gzip_member(tmp_path: Path, name: str, content: bytes) -> PackageFile:
    """What the SQL step leaves: the content as one gzip member, its size and hash."""
    member = tmp_path / f"{name}.gz"
    writer = GzipMemberWriter(member, level=1)
    for start in range(0, len(content), 1 << 20):
        writer.write(content[start : start + (1 << 20)])
    sha256 = writer.finish()
    assert sha256 == hashlib.sha256(content).hexdigest() and writer.size == len(content)
    return PackageFile(
        member, name, rows=content.count(b"\n"), compressed=True, size=len(content), sha256=sha256
    )


def test_a_precompressed_member_is_spliced_in_verbatim(tmp_path: Path) -> None:
    rows = b"".join(b"%d,row %d,xxxxxxxx\n" % (i, i * 7) for i in range(150_000))  # ~3 MiB
    odd = b"no newline at the end, 513 bytes" + b"y" * 481  # padding that is not a block
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"between\n")
    files = [
        gzip_member(tmp_path, "rows.csv", rows),
        PackageFile(plain, "plain.txt"),
        gzip_member(tmp_path, "odd.csv", odd),
        gzip_member(tmp_path, "empty.csv", b""),
    ]
    target = tmp_path / "out.tar.gz"
    built = build_package(target, files, top_dir="export", manifest_header={}, threads=2)
    data = target.read_bytes()
    assert built.sha256 == hashlib.sha256(data).hexdigest()
    # The compressed members are in the package as they are (not compressed again).
    assert files[0].source.read_bytes() in data
    with tarfile.open(target) as tar:
        contents = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert contents["export/rows.csv"] == rows
    assert contents["export/plain.txt"] == b"between\n"
    assert contents["export/odd.csv"] == odd
    assert contents["export/empty.csv"] == b""
    manifest = json.loads(contents["export/manifest.json"])
    assert [(f["path"], f["size"], f["sha256"]) for f in manifest["files"]] == [
        (f.arcname, len(c), hashlib.sha256(c).hexdigest())
        for f, c in zip(files, [rows, b"between\n", odd, b""], strict=True)
    ]
    assert manifest["files"][0]["rows"] == 150_000
    # GNU tar reads the multi-member stream as one archive too.
    listing = subprocess.run(
        ["tar", "tzf", str(target)], capture_output=True, check=True, text=True
    )
    assert listing.stdout.split() == [
        "export/rows.csv",
        "export/plain.txt",
        "export/odd.csv",
        "export/empty.csv",
        "export/manifest.json",
    ]
    assert len(gzip.decompress(data)) % tarfile.RECORDSIZE == 0


def test_a_large_spliced_member_is_hashed_whole_while_it_is_copied(tmp_path: Path) -> None:
    """A member past OVERLAP_MIN is hashed on a second thread: the package's
    sha256 still covers every byte, in order, and the progress still moves."""
    content = os.urandom(3 * OVERLAP_MIN // 2) + b"last row\n"  # incompressible: spliced as big
    files = [gzip_member(tmp_path, "rows.csv", content)]
    assert files[0].source.stat().st_size > OVERLAP_MIN + CHUNK
    seen: list[int] = []
    target = tmp_path / "out.tar.gz"
    built = build_package(
        target, files, top_dir="export", manifest_header={}, threads=2, progress=seen.append
    )
    data = target.read_bytes()
    assert built.size_bytes == len(data)
    assert built.sha256 == hashlib.sha256(data).hexdigest()
    assert len(seen) >= 5 and seen == sorted(seen)
    with tarfile.open(target) as tar:
        assert tar.extractfile("export/rows.csv").read() == content  # type: ignore[union-attr]


def test_packaging_reports_the_bytes_written(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(5 * 1024 * 1024))  # incompressible: ~5 MiB out
    seen: list[int] = []
    built = build_package(
        tmp_path / "out.tar.gz",
        [PackageFile(big, "big.bin")],
        top_dir="export",
        manifest_header={},
        progress=seen.append,
    )
    assert len(seen) >= 4 and seen == sorted(seen)
    assert 0 < seen[-1] <= built.size_bytes


def test_the_compression_level_is_applied(tmp_path: Path) -> None:
    text = tmp_path / "rows.csv"
    text.write_bytes(b"".join(b"%d,label %d,%d\n" % (i, i % 977, i * 31) for i in range(200_000)))
    sizes = {
        level: build_package(
            tmp_path / f"level-{level}.tar.gz",
            [PackageFile(text, "rows.csv")],
            top_dir="export",
            manifest_header={},
            level=level,
        ).size_bytes
        for level in (0, 3)
    }
    assert sizes[0] > sizes[3] * 1.1, sizes
