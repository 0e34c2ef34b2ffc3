"""`make bench` / `make bench-quick`: every benchmark, then the results into
docs/benchmarks.md (between the `bench:begin` / `bench:end` markers; the
analysis around them is written by hand) and bench/results/latest.json.

Each benchmark is its own module, run as a subprocess so each starts its own
embedded PostgreSQL server (same binaries, same settings) and nothing leaks
from one into the next. Every figure inside is a ratio against a baseline
measured in the same run.

Each module also records its figures under stable names (`bench.results`):
`bench.run` gives every module a file of its own (EXPORTD_BENCH_JSON) and
merges them, with the machine, the targets and whether each was met, into
the JSON (`merge_results`; the shape is documented in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.results import ENV as RESULTS_ENV

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "bench" / "results" / "latest.json"
QUICK_RESULTS = ROOT / "bench" / "results" / "quick.json"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

FULL: list[tuple[str, list[str]]] = [
    (
        "Queue: drain, pickup latency, sustained arrival",
        ["bench.queue", "--jobs", "4000", "--rounds", "3", "--latency-samples", "200"],
    ),
    ("Status API and downloads", ["bench.http", "--size-mib", "1024", "--rounds", "3"]),
    ("Scale: 10 K vs 1 M job rows", ["bench.scale", "--small", "10000", "--large", "1000000"]),
    ("SQL export vs psql \\copy", ["bench.sql_export", "--rows", "5000000", "--rounds", "3"]),
    ("Packaging vs tar czf", ["bench.packaging", "--mib", "512", "--rounds", "3"]),
    (
        "Resume: the retry of a 4-step export that failed at step 4",
        ["bench.resume", "--rows", "2000000", "--rounds", "3"],
    ),
    (
        "S3 storage: worker memory, redirected downloads",
        ["bench.s3", "--package-mib", "2048", "--download-mib", "1024", "--rounds", "3"],
    ),
]
QUICK: list[tuple[str, list[str]]] = [
    (
        "Queue: drain, pickup latency, sustained arrival",
        [
            "bench.queue",
            "--jobs",
            "1000",
            "--rounds",
            "1",
            "--latency-samples",
            "50",
            "--sustain-seconds",
            "2",
            "--rates",
            "100",
            "--synchronous-commit",
            "on",
            "--ready-samples",
            "60",
        ],
    ),
    (
        "Status API and downloads",
        ["bench.http", "--size-mib", "64", "--rounds", "1", "--seconds", "2", "--watchers", "1000"],
    ),
    (
        "Scale: 10 K vs 1 M job rows",
        ["bench.scale", "--small", "1000", "--large", "50000", "--repeat", "20"],
    ),
    ("SQL export vs psql \\copy", ["bench.sql_export", "--rows", "100000", "--rounds", "1"]),
    ("Packaging vs tar czf", ["bench.packaging", "--mib", "32", "--rounds", "1"]),
    (
        "Resume: the retry of a 4-step export that failed at step 4",
        ["bench.resume", "--rows", "100000", "--rounds", "1"],
    ),
    (
        "S3 storage: worker memory, redirected downloads",
        ["bench.s3", "--package-mib", "64", "--download-mib", "64", "--rounds", "1"],
    ),
]


# The targets of the benchmarks: name -> (comparison, value). A name is looked
# up among the ratios first, then among the raw figures (a few targets are
# absolute: milliseconds, MiB).
TARGETS: dict[str, tuple[str, float]] = {
    "sql_export_vs_copy": (">=", 0.8),
    "sql_export_vs_copy_gzip": (">=", 2.5),
    "resume_retry_vs_from_scratch": (">=", 2.0),
    "queue_drain_c10_vs_procrastinate": (">=", 0.7),
    "queue_drain_c10_vs_c1": (">=", 1.0),
    "queue_sustained_rate_vs_procrastinate": (">=", 1.0),
    "time_to_ready_p50_ms": ("<=", 10.0),
    "time_to_ready_p99_ms": ("<=", 20.0),
    "api_job_status_vs_bare": (">=", 0.4),
    "sse_5000_rss_mib": ("<=", 200.0),
    "packaging_vs_tar_czf": (">=", 4.0),
    "packaging_size_vs_tar_czf": ("<=", 1.05),
}


def machine() -> dict[str, str]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = found.group(1).strip() if found else cpu
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few minutes")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    facts = machine()
    sections: list[dict[str, Any]] = []
    recorded: list[Path | None] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="exportd-bench-run-") as scratch:
        for number, (title, argv) in enumerate(plan):
            command = " ".join([".venv/bin/python -m", *argv])
            print(f"== {title}: {command}", flush=True)
            figures = Path(scratch) / f"{number}-{argv[0]}.json"
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", *argv],
                cwd=ROOT,
                env={**os.environ, RESULTS_ENV: str(figures)},
                capture_output=True,
                text=True,
                check=False,
            )
            seconds = time.monotonic() - started
            output = done.stdout.strip()
            if done.returncode != 0:
                output += f"\n\n(failed with exit status {done.returncode})\n{done.stderr[-2000:]}"
                failed.append(title)
            print(output, flush=True)
            sections.append(
                {
                    "title": title,
                    "module": argv[0],
                    "command": command,
                    "seconds": round(seconds, 1),
                    "output": output,
                }
            )
            recorded.append(figures)
        results = merge_results(facts, sections, recorded, quick=args.quick)
    target = QUICK_RESULTS if args.quick else RESULTS
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=2) + "\n")
    if args.quick:
        print(f"quick run: results in {target.relative_to(ROOT)}; docs/benchmarks.md unchanged")
    else:
        write_docs(facts, sections, results["targets"])
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


def merge_results(
    facts: dict[str, str],
    sections: Sequence[dict[str, Any]],
    recorded: Sequence[Path | None],
    *,
    quick: bool,
) -> dict[str, Any]:
    """The JSON of one run from each module's file (`bench.results.record`),
    `recorded[i]` being the file of `sections[i]` (absent: nothing recorded,
    e.g. the module failed first). Each section lists the ratios it recorded;
    a name recorded by two modules keeps the later value and is reported."""
    ratios: dict[str, float] = {}
    raw: dict[str, Any] = {}
    merged: list[dict[str, Any]] = []
    for section, path in zip(sections, recorded, strict=True):
        figures: dict[str, Any] = {}
        if path is not None and path.exists():
            figures = json.loads(path.read_text())
        own_ratios = figures.get("ratios", {})
        own_raw = figures.get("raw", {})
        for name in sorted((own_ratios.keys() & ratios.keys()) | (own_raw.keys() & raw.keys())):
            print(f"warning: {section['title']} records {name} again", file=sys.stderr)
        ratios.update(own_ratios)
        raw.update(own_raw)
        merged.append({**section, "ratios": dict(sorted(own_ratios.items()))})
    return {
        "machine": facts,
        "quick": quick,
        "ratios": dict(sorted(ratios.items())),
        "targets": check_targets(ratios, raw),
        "raw": dict(sorted(raw.items())),
        "sections": merged,
    }


def check_targets(ratios: dict[str, float], raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with the figure measured (None: not measured) and whether it is met."""
    checked: dict[str, dict[str, Any]] = {}
    for name, (comparison, value) in TARGETS.items():
        measured = ratios.get(name, raw.get(name))
        if not isinstance(measured, int | float) or isinstance(measured, bool):
            measured = None
        met = measured is not None and (
            measured >= value if comparison == ">=" else measured <= value
        )
        checked[name] = {
            "target": value,
            "comparison": comparison,
            "measured": measured,
            "met": met,
        }
    return checked


def write_docs(
    facts: dict[str, str], sections: list[dict[str, Any]], targets: dict[str, dict[str, Any]]
) -> None:
    """Replace the generated section of docs/benchmarks.md (the rest is by hand)."""
    body = [
        BEGIN,
        "",
        f"Generated by `make bench` on {facts['date']}: {facts['cpu']}, {facts['cores']} cores,"
        f" Linux {facts['kernel']}, Python {facts['python']}; raw output in"
        " `bench/results/latest.json`.",
        "",
    ]
    for section in sections:
        body += [
            f"### {section['title']}",
            "",
            f"`{section['command']}` ({section['seconds']} s)",
            "",
            str(section["output"]),
            "",
        ]
    body += ["### Targets", "", "| name | target | measured | met |", "|---|---|---|---|"]
    for name, check in targets.items():
        measured = "—" if check["measured"] is None else f"{check['measured']:g}"
        body.append(
            f"| `{name}` | {check['comparison']} {check['target']:g} | {measured}"
            f" | {'yes' if check['met'] else 'no'} |"
        )
    body += ["", END]
    text = DOC.read_text()
    generated = "\n".join(body)
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + generated + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n## Latest `make bench`\n\n" + generated + "\n"
    DOC.write_text(text)
    print(f"wrote {DOC.relative_to(ROOT)} and {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
