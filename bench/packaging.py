"""Packaging: exportd's tar.gz writer vs `tar czf` on the same files.

Run: .venv/bin/python -m bench.packaging --mib 256 --rounds 3

Files: four CSV-like text files (compressible like real exports) of
`--mib` MiB in all. exportd's side is `daemon.worker.packaging.build_package`
(streamed tar + gzip level 6 + sha256 of every file and of the package +
manifest + fsync); the baseline is GNU `tar czf` (gzip level 6 via -z).
Reports seconds (median, min, max) and the speed ratio tar ÷ exportd.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from daemon.kinds.context import PackageFile
from daemon.worker.packaging import build_package


def make_files(directory: Path, mib: int) -> list[Path]:
    directory.mkdir(parents=True)
    line = b"12345,bench,2026-01-01T00:00:00Z,5f56012f74cd4e3a97a438cb08b41b81,1234.56,xxxxxxxxxx\n"
    per_file = mib * (1 << 20) // 4
    paths = []
    for index in range(4):
        path = directory / f"part-{index}.csv"
        with path.open("wb") as out:
            written = 0
            counter = 0
            while written < per_file:
                chunk = b"".join(
                    line.replace(b"12345", str(counter + i).encode()) for i in range(4096)
                )
                out.write(chunk)
                written += len(chunk)
                counter += 4096
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="exportd-bench-packaging-"))
    ours: list[float] = []
    tar: list[float] = []
    try:
        files = make_files(base / "files", args.mib)
        for round_ in range(args.rounds):
            target = base / f"exportd-{round_}.tar.gz"
            started = time.perf_counter()
            build_package(
                target,
                [PackageFile(source=p, arcname=p.name) for p in files],
                top_dir="export",
                manifest_header={"job_id": "bench"},
            )
            ours.append(time.perf_counter() - started)
            target.unlink()
            started = time.perf_counter()
            subprocess.run(
                ["tar", "czf", str(base / "tar.tar.gz"), "-C", str(base / "files"), "."],
                check=True,
            )
            tar.append(time.perf_counter() - started)
            (base / "tar.tar.gz").unlink()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{args.mib} MiB of CSV in 4 files, {args.rounds} rounds\n")
    print("| packer | s median | min | max |\n|---|---|---|---|")
    for name, values in (("exportd build_package", ours), ("tar czf", tar)):
        print(
            f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |"
        )
    print(
        f"\nratio (speed) exportd / tar czf: {statistics.median(tar) / statistics.median(ours):.2f}"
    )


if __name__ == "__main__":
    main()
