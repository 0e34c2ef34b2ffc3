"""Packaging: streamed tar.gz, hashes, manifest last, only regular files."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest

from daemon.packaging import PackageFile, PackagingError, build_package, check_arcname


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
