"""GET /metrics: Prometheus text with request, download, job and queue figures."""

from __future__ import annotations

import asyncio
import random
import string
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.maintenance.cleanup import Cleanup
from daemon.storage.local import LocalStorage
from tests.api_helpers import api_client, api_settings, bearer, live_app
from tests.e2e.processes import EXPORTD, worker_env
from tests.helpers import completed_job, create
from tests.tmpfs import MiB, mounted_tmpfs
from web.app import routes as app_routes
from web.metrics import KNOWN_METHODS

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


# -- cleanup totals: counted in PostgreSQL, reported by any API process ----------


def cleanup_figures(found: dict[Any, float]) -> dict[str, float]:
    prefix, suffix = "exportd_cleanup_", "_total"
    return {
        name[len(prefix) : -len(suffix)]: value
        for (name, labels), value in found.items()
        if name.startswith(prefix) and name.endswith(suffix) and not labels
    }


async def test_cleanup_in_another_process_shows_on_the_api_metrics(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    """The retention of a worker (here `exportd cleanup`, a process of its own)
    is counted in exportd.maintenance_totals; /metrics of the API reports it."""
    settings = api_settings(tmp_path)
    _, data = await completed_job(aconn, settings, expires_in=-timedelta(days=1))
    async with api_client(settings, db_url) as client:
        before = cleanup_figures(await scrape(client))
        env = worker_env(db_url, settings.storage_dir)
        ran = await asyncio.to_thread(
            subprocess.run,
            [EXPORTD, "cleanup"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert ran.returncode == 0, ran.stderr
        after = cleanup_figures(await scrape(client))
    assert before == {
        "packages_deleted": 0,
        "bytes_freed": 0,
        "jobs_pruned": 0,
        "queue_rows_pruned": 0,
        "orphans_removed": 0,
        "failures": 0,
        "runs": 0,
    }
    assert after["packages_deleted"] == 1
    assert after["bytes_freed"] == len(data)
    assert after["runs"] == 1


async def test_cleanup_totals_add_up_across_runs(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    cleanup = Cleanup(settings, LocalStorage(settings.storage_dir))
    for _ in range(2):
        await completed_job(aconn, settings, expires_in=-timedelta(days=1))
        report = await cleanup.run(aconn)
        assert report.packages_deleted == 1
    await cleanup.run(aconn, dry_run=True)  # a dry run changes nothing, counts included
    async with api_client(settings, db_url) as client:
        found = cleanup_figures(await scrape(client))
    assert (found["packages_deleted"], found["runs"]) == (2, 2)
    assert found["bytes_freed"] == 600_000


# -- label values come from fixed sets -------------------------------------------


async def test_unknown_methods_are_4xx_and_mint_no_label_values(
    db_url: str, tmp_path: Path
) -> None:
    """200 random methods through a real uvicorn: each is answered 4xx, and
    /metrics holds no label value a request chose."""
    rng = random.Random(200)  # noqa: S311 - reproducible methods, not a secret
    alphabet = string.ascii_uppercase + string.digits + "!#$%&'*+-.^_`|~"
    methods = ["".join(rng.choices(alphabet, k=rng.randint(1, 24))) for _ in range(200)]
    paths = ["/api/v1/jobs", "/metrics", "/nope", "/api/v1/jobs/x/retry", "/healthz"]
    async with live_app(api_settings(tmp_path), db_url) as (base, _), httpx.AsyncClient() as http:
        baseline = (await http.get(f"{base}/metrics")).text
        for i, method in enumerate(methods):
            response = await http.request(method, f"{base}{paths[i % len(paths)]}")
            assert 400 <= response.status_code < 500, (method, response.status_code)
        text = (await http.get(f"{base}/metrics")).text
    found = samples(text)
    label_methods = {
        dict(labels)["method"] for name, labels in found if name == "exportd_http_requests_total"
    }
    assert label_methods <= KNOWN_METHODS | {"other"}
    assert "other" in label_methods
    routes = {
        dict(labels)["route"] for name, labels in found if name == "exportd_http_requests_total"
    }
    assert routes <= {route.path for route in app_routes()} | {"unmatched"}
    # The random methods added a handful of series (route x "other" x status), not 200.
    assert len(text) - len(baseline) < 8_000, len(text) - len(baseline)


async def test_webhook_deliveries_by_outcome(aconn: AConn, db_url: str, tmp_path: Path) -> None:
    """What the workers' attempts added up to, every outcome shown (0 too)."""
    await aconn.execute(
        "INSERT INTO exportd.webhook_totals (outcome, total)"
        " VALUES ('delivered', 7), ('timeout', 2)"
    )
    async with api_client(api_settings(tmp_path), db_url) as client:
        found = await scrape(client)
    by_outcome = {
        labels[0][1]: value
        for (name, labels), value in found.items()
        if name == "exportd_webhook_deliveries_total"
    }
    assert by_outcome == {
        "delivered": 7,
        "rejected": 0,
        "timeout": 2,
        "unreachable": 0,
        "refused": 0,
    }


async def test_free_bytes_of_the_work_and_storage_volumes(db_url: str, tmp_path: Path) -> None:
    """On a tmpfs of 4 MiB holding 1 MiB: 3 MiB free on both volumes (the
    work directories live in the storage root), and the workers' floor."""
    with mounted_tmpfs(tmp_path / "volume", 4) as volume:
        (volume / "held").write_bytes(b"\0" * MiB)
        settings = api_settings(tmp_path, storage_dir=volume, min_free_bytes=5 * MiB)
        async with api_client(settings, db_url) as client:
            found = await scrape(client)
            (volume / "held").unlink()
            after = await scrape(client)
    free = "exportd_volume_free_bytes"
    assert found[(free, (("volume", "storage"),))] == 3 * MiB
    assert found[(free, (("volume", "work"),))] == 3 * MiB
    assert found[("exportd_min_free_bytes", ())] == 5 * MiB
    assert after[(free, (("volume", "storage"),))] == 4 * MiB  # read at every scrape


async def test_with_s3_only_the_work_volume_is_reported(db_url: str, tmp_path: Path) -> None:
    settings = api_settings(tmp_path, storage_url="s3://bucket/prefix")
    async with api_client(settings, db_url) as client:
        found = await scrape(client)
    volumes = {dict(labels)["volume"] for name, labels in found if "_volume_" in name}
    assert volumes == {"work"}
