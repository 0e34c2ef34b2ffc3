"""bench.queue's figures keep their stable names and compare like with like
(medians of the same synchronous_commit and concurrency; the arrival rate
whose p99 stayed under 1 s)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from bench.queue import figures


def drain(system: str, sc: str, c: int, rate: float) -> dict[str, Any]:
    return {
        "system": system,
        "synchronous_commit": sc,
        "concurrency": c,
        "jobs_per_second": rate,
        "commits_per_job": 2.0,
        "wal_bytes_per_job": 4000.0,
        "wal_fsyncs_per_job": 2.0,
        "worker_cpu_ms_per_job": 3.0,
        "server_cpu_ms_per_job": 2.0,
    }


def test_ratios_and_raw_figures_have_their_stable_names() -> None:
    results: dict[str, Any] = {
        "drain": [
            drain("procrastinate", "on", 1, 400),
            drain("procrastinate", "on", 10, 700),
            drain("procrastinate", "on", 10, 800),
            drain("procrastinate", "on", 10, 900),
            drain("exportd", "on", 1, 300),
            drain("exportd", "on", 10, 100),
            drain("exportd", "on", 10, 560),
            drain("exportd", "on", 10, 600),
            drain("procrastinate", "off", 1, 500),
            drain("procrastinate", "off", 10, 1000),
            drain("exportd", "off", 1, 250),
            drain("exportd", "off", 10, 500),
        ],
        "latency": {"exportd": [0.004] * 99 + [0.5], "procrastinate": [0.003] * 100},
        "sustained": {
            "exportd": {100: {"p50": 0.01, "p99": 0.02}, 300: {"p50": 0.5, "p99": 1.5}},
            "procrastinate": {100: {"p50": 0.01, "p99": 0.02}, 300: {"p50": 0.01, "p99": 0.3}},
        },
        "ready": [0.008] * 98 + [0.03, 0.04],
        "ready_attempt": [0.005] * 100,
    }
    args = argparse.Namespace(
        synchronous_commit=["on", "off"],
        systems=["procrastinate", "exportd"],
        rates=[100, 300],
        concurrency=[1, 10],
    )
    ratios, raw = figures(results, args)
    assert ratios == {
        "queue_drain_c1_vs_procrastinate": pytest.approx(300 / 400),
        "queue_drain_c10_vs_procrastinate": pytest.approx(560 / 800),  # medians
        "queue_drain_c10_vs_c1": pytest.approx(560 / 300),
        "queue_drain_c1_sync_off_vs_procrastinate": pytest.approx(250 / 500),
        "queue_drain_c10_sync_off_vs_procrastinate": pytest.approx(500 / 1000),
        "queue_drain_c10_vs_c1_sync_off": pytest.approx(500 / 250),
        "queue_sustained_rate_vs_procrastinate": pytest.approx(100 / 300),
    }
    assert raw["queue_drain_c10_exportd_jobs_per_s"] == 560
    assert raw["queue_drain_c1_sync_off_procrastinate_worker_cpu_ms_per_job"] == 3.0
    assert raw["queue_sustained_rate_exportd"] == 100
    assert raw["queue_sustained_rate_procrastinate"] == 300
    assert raw["pickup_p50_ms"] == 4.0
    assert raw["pickup_procrastinate_p99_ms"] == 3.0
    assert raw["time_to_ready_p50_ms"] == 8.0
    assert raw["time_to_ready_p99_ms"] == 30.0
    assert raw["time_to_ready_attempt_p50_ms"] == 5.0
