"""Progress inside one SQL step, as a watcher of the job's SSE stream sees it:
rows and bytes so far in `current_step`, and a percentage from the planner's
estimate that rises while the single query runs."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.kinds.exports_file import load_exports_file
from daemon.kinds.registry import KindRegistry
from tests.api_helpers import api_settings, bearer, live_app
from tests.helpers import poll_until, running_worker
from tests.integration.web.test_events import collect

pytestmark = pytest.mark.anyio
ALICE = bearer("alice")
ROWS = 2_000_000

BIG = f"""
[exports.big]
[[exports.big.queries]]
name = "numbers"
estimate = "planner"
sql = '''
SELECT i, md5(i::text) AS label FROM generate_series(1, {ROWS}) AS i
WHERE %(owner_id)s IS NOT NULL
'''
"""


async def test_a_long_query_shows_rows_and_a_rising_percentage(db_url: str, tmp_path: Path) -> None:
    exports = tmp_path / "exports.toml"
    exports.write_text(BIG)
    registry = KindRegistry(load_exports_file(exports, default_database_url=db_url))
    settings = api_settings(tmp_path)
    async with (
        live_app(settings, db_url, registry) as (base, app),
        httpx.AsyncClient(base_url=base) as client,
    ):
        created = await client.post("/api/v1/jobs", json={"kind": "big"}, headers=ALICE)
        assert created.status_code == 202, created.text
        job_id = created.json()["data"]["job_id"]
        so_far: list[tuple[str, Any]] = []
        stream = asyncio.create_task(collect(client, f"/api/v1/jobs/{job_id}/events", so_far))
        await poll_until(
            lambda: bool(so_far) and app.state.events.listening.is_set(),
            "the stream's first event, with the listener connected",
        )
        async with running_worker(settings, db_url, registry):
            received = await asyncio.wait_for(stream, timeout=120)
    assert received[-1][1]["status"] == "completed", received[-1]
    inside = [
        data
        for name, data in received
        if name == "progress"
        and data["steps_completed"] == 0
        and (data["current_step"] or "").startswith("Exporting numbers: ")
    ]
    # One query step of two (the package is the second): 0-49 % inside it.
    percentages = [data["percentage"] for data in inside]
    assert percentages == sorted(percentages), percentages
    assert len(set(percentages) - {0}) >= 3, percentages
    assert max(percentages) <= 49
    shown = [
        re.fullmatch(
            r"Exporting numbers: [\d.,]+( [KM])? rows, \d+ [KM]B written", d["current_step"]
        )
        for d in inside
    ]
    assert all(shown), [d["current_step"] for d in inside]
