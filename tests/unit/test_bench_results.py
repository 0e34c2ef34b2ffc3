"""bench/results/latest.json: each module's recorded figures merged into one
document of the shape docs/benchmarks.md describes, with the targets checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import results
from bench.run import TARGETS, merge_results

FACTS = {"date": "2026-12-03 08:00 UTC", "cpu": "test", "cores": "2", "python": "3.11"}


def recorded(path: Path, monkeypatch: pytest.MonkeyPatch, **figures: dict[str, float]) -> Path:
    """A module's file as `bench.results.record` writes it under `bench.run`."""
    monkeypatch.setenv(results.ENV, str(path))
    results.record(ratios=figures["ratios"], raw=figures.get("raw"))
    monkeypatch.delenv(results.ENV)
    return path


def section(title: str) -> dict[str, object]:
    return {"title": title, "module": "bench.x", "command": "…", "seconds": 1.0, "output": "…"}


def test_the_merge_has_the_documented_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    http = recorded(
        tmp_path / "http.json",
        monkeypatch,
        ratios={"api_job_status_vs_bare": 0.4512, "download_vs_nginx": 1.07},
        raw={"sse_5000_rss_mib": 180.4, "api_bare_rps": 10861.0},
    )
    sql = recorded(
        tmp_path / "sql.json",
        monkeypatch,
        ratios={"sql_export_vs_copy": 0.79, "sql_export_vs_copy_gzip": 2.6},
    )
    merged = merge_results(
        FACTS,
        [section("API"), section("SQL"), section("failed before recording")],
        [http, sql, tmp_path / "never-written.json"],
        quick=True,
    )
    assert list(merged) == ["machine", "quick", "ratios", "targets", "raw", "sections"]
    assert merged["machine"] == FACTS
    assert merged["ratios"] == {
        "api_job_status_vs_bare": 0.451,  # rounded by record()
        "download_vs_nginx": 1.07,
        "sql_export_vs_copy": 0.79,
        "sql_export_vs_copy_gzip": 2.6,
    }
    assert merged["raw"] == {"api_bare_rps": 10861.0, "sse_5000_rss_mib": 180.4}
    assert [s["ratios"] for s in merged["sections"]] == [
        {"api_job_status_vs_bare": 0.451, "download_vs_nginx": 1.07},
        {"sql_export_vs_copy": 0.79, "sql_export_vs_copy_gzip": 2.6},
        {},
    ]
    targets = merged["targets"]
    assert set(targets) == set(TARGETS)
    assert targets["api_job_status_vs_bare"] == {
        "target": 0.4,
        "comparison": ">=",
        "measured": 0.451,
        "met": True,
    }
    assert targets["sql_export_vs_copy"]["met"] is False  # 0.79 < 0.8
    assert targets["sql_export_vs_copy_gzip"]["met"] is True
    # An absolute target, from the raw figures, where lower is better.
    assert targets["sse_5000_rss_mib"] == {
        "target": 200.0,
        "comparison": "<=",
        "measured": 180.4,
        "met": True,
    }
    # Not measured in this run: listed, not met.
    assert targets["packaging_vs_tar_czf"]["measured"] is None
    assert targets["packaging_vs_tar_czf"]["met"] is False
    json.dumps(merged)  # what bench.run writes


def test_a_name_recorded_twice_keeps_the_later_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first = recorded(tmp_path / "a.json", monkeypatch, ratios={"download_vs_nginx": 1.0})
    second = recorded(tmp_path / "b.json", monkeypatch, ratios={"download_vs_nginx": 0.5})
    merged = merge_results(FACTS, [section("a"), section("b")], [first, second], quick=False)
    assert merged["ratios"] == {"download_vs_nginx": 0.5}
    assert "download_vs_nginx" in capsys.readouterr().err


def test_record_without_bench_run_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(results.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    results.record(ratios={"download_vs_nginx": 1.0})
    assert list(tmp_path.iterdir()) == []
