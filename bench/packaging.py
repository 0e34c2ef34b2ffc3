"""Packaging: exportd's tar.gz writer vs `tar czf` on the same files.

Run: .venv/bin/python -m bench.packaging --mib 512 --rounds 3

Files: four CSV-like text files (compressible like real exports) of
`--mib` MiB in all: what a files export packages. exportd's side is
`daemon.worker.packaging.build_package` (streamed tar + ISA-L gzip at the
default `EXPORTD_COMPRESSION_LEVEL` on every core + sha256 of every file and
of the package + manifest + fsync); the baseline is GNU `tar czf` (gzip
level 6 via -z). Reports seconds (median, min, max), the speed ratio tar ÷
exportd, the size ratio exportd ÷ tar, and the growth of this process's
peak RSS while packaging (the same code a worker runs). Records
`packaging_vs_tar_czf` and `packaging_size_vs_tar_czf`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.http import peak_rss_mib
from bench.results import record
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
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="exportd-bench-packaging-"))
    ours: list[float] = []
    tar: list[float] = []
    ours_size = tar_size = 0
    try:
        files = make_files(base / "files", args.mib)
        rss_base = peak_rss_mib(os.getpid())
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
            ours_size = target.stat().st_size
            target.unlink()
            started = time.perf_counter()
            subprocess.run(
                ["tar", "czf", str(base / "tar.tar.gz"), "-C", str(base / "files"), "."],
                check=True,
            )
            tar.append(time.perf_counter() - started)
            tar_size = (base / "tar.tar.gz").stat().st_size
            (base / "tar.tar.gz").unlink()
        rss_growth = peak_rss_mib(os.getpid()) - rss_base
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{args.mib} MiB of CSV in 4 files, {args.rounds} rounds\n")
    print("| packer | s median | min | max |\n|---|---|---|---|")
    for name, values in (("exportd build_package", ours), ("tar czf", tar)):
        print(
            f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |"
        )
    speed = statistics.median(tar) / statistics.median(ours)
    size = ours_size / tar_size
    print(f"\nratio (speed) exportd / tar czf: {speed:.2f}")
    print(f"ratio (size) exportd / tar czf: {size:.3f}")
    print(f"peak RSS growth while packaging: {rss_growth:.1f} MiB")
    record(
        ratios={"packaging_vs_tar_czf": speed, "packaging_size_vs_tar_czf": size},
        raw={
            "packaging_mib": args.mib,
            "packaging_mb_per_s": round(args.mib * 2**20 / statistics.median(ours) / 1e6, 1),
            "packaging_tar_czf_mb_per_s": round(args.mib * 2**20 / statistics.median(tar) / 1e6, 1),
            "packaging_rss_growth_mib": round(rss_growth, 1),
        },
    )


if __name__ == "__main__":
    main()
