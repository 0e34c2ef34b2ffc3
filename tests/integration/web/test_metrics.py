"""GET /metrics: Prometheus text with request, download, job and queue figures."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api_helpers import api_client, api_settings, bearer
from tests.helpers import completed_job, create

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return samples(response.text)


def requests(found: dict[Any, float], route: str, status: str, method: str = "GET") -> float:
    key = (
        "exportd_http_requests_total",
        (("method", method), ("route", route), ("status", status)),
    )
    return found.get(key, 0.0)


async def test_request_download_and_job_figures(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    job, data = await completed_job(aconn, settings)
    await create(aconn, "noop", owner="alice")
    await create(aconn, "noop", owner="bob")
    async with api_client(settings, db_url) as client:
        before = await scrape(client)
        assert (await client.get(f"/api/v1/jobs/{job.job_id}", headers=bearer())).status_code == 200
        await client.get("/api/v1/jobs/not-a-uuid", headers=bearer())
        await client.get("/no/such/route")
        download = await client.get(f"/api/v1/jobs/{job.job_id}/download", headers=bearer())
        assert download.content == data
        after = await scrape(client)
    one = "/api/v1/jobs/{job_id}"
    assert requests(after, one, "200") - requests(before, one, "200") == 1
    assert requests(after, one, "400") - requests(before, one, "400") == 1
    assert requests(after, "unmatched", "404") - requests(before, "unmatched", "404") == 1
    sent = (
        after[("exportd_download_bytes_total", ())] - before[("exportd_download_bytes_total", ())]
    )
    assert sent == len(data)
    assert after[("exportd_database_up", ())] == 1
    assert after[("exportd_jobs", (("status", "pending"),))] == 2
    assert after[("exportd_jobs", (("status", "completed"),))] == 1
    assert after[("exportd_jobs", (("status", "failed"),))] == 0
    # Three queue entries: the completed job's was never run by a worker.
    assert after[("exportd_queue_depth", (("queue", "exports"),))] == 3
    assert after[("exportd_packages", ())] == 1
    assert after[("exportd_package_bytes", ())] == len(data)
    assert after[("exportd_job_duration_seconds_gcount", ())] == 1
    assert after[("exportd_job_duration_seconds_bucket", (("le", "+Inf"),))] == 1
    route_seconds = ("exportd_http_request_duration_seconds_count", (("route", one),))
    assert after[route_seconds] >= 1


async def test_database_down_still_answers_quickly(tmp_path: Path) -> None:
    unreachable = "host=127.0.0.1 port=1 dbname=nothing user=nobody connect_timeout=1"
    async with api_client(api_settings(tmp_path), unreachable) as client:
        started = time.monotonic()
        found = await scrape(client)
        took = time.monotonic() - started
    assert found[("exportd_database_up", ())] == 0
    assert not any(name == "exportd_jobs" for name, _ in found)
    assert took < 5
