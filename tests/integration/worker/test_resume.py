"""Resume (DESIGN §14): an automatic retry starts at the first step its run
had not finished, the kept steps are rolled back once when the run ends
(not between retries), and a manual retry starts a fresh run.

The worker runs in this process against a real database. Which export
queries ran is counted in a side table that a volatile function fills
through `dblink` (its own connection and transaction: the export's own
transaction is read-only, and rolled back when the query fails)."""

from __future__ import annotations

import asyncio
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from daemon.actions import cancel_export, retry_export
from daemon.config import Settings
from daemon.kinds.context import ExportContext
from daemon.kinds.exports_file import load_exports_file
from daemon.kinds.registry import Kind, KindRegistry
from daemon.models import JobStatus
from daemon.storage.local import LocalStorage
from tests.helpers import create, fast_settings, kinds_registry, poll_until, running_worker
from tests.helpers import wait_for as wait_for_job
from tests.resume_schema import four_queries, side_table_statements
from tests.s3_server import SeaweedServer
from tests.s3_settings import object_keys, s3_settings

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]

FOUR_QUERIES = four_queries("fail_once")


async def side_tables(aconn: AConn, db_url: str) -> None:
    """t.ran (which query ran), t.flag (q3 fails while it has a row)."""
    try:
        await aconn.execute("CREATE EXTENSION IF NOT EXISTS dblink")
    except psycopg.Error as exc:
        pytest.skip(f"the dblink extension is not available on this server: {exc}")
    for statement in side_table_statements(db_url):
        await aconn.execute(statement)


def sql_registry(tmp_path: Path, db_url: str) -> KindRegistry:
    path = tmp_path / "exports.toml"
    path.write_text(FOUR_QUERIES)
    registry = kinds_registry()
    for kind in load_exports_file(path, default_database_url=db_url):
        registry.register(kind)
    return registry


async def ran(aconn: AConn) -> dict[str, int]:
    cur = await aconn.execute("SELECT query, count(*) FROM t.ran GROUP BY query")
    return {str(q): int(n) for q, n in await cur.fetchall()}


async def attempts_with_resume(aconn: AConn, job_id: Any) -> list[tuple[Any, ...]]:
    cur = await aconn.execute(
        "SELECT run, attempt, outcome::text, resumed_from_step FROM exportd.job_attempts"
        " WHERE job_id = %s ORDER BY run, attempt",
        (job_id,),
    )
    return await cur.fetchall()


def checkpoint_entries(storage_dir: Path) -> list[Path]:
    return sorted((storage_dir / ".checkpoints").rglob("*"))


async def test_a_retry_resumes_at_the_step_that_failed(
    aconn: AConn, db_url: str, tmp_path: Path
) -> None:
    await side_tables(aconn, db_url)
    registry = sql_registry(tmp_path, db_url)
    settings = fast_settings(tmp_path)
    listener = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    await listener.execute("LISTEN exportd_job_events")
    events: list[dict[str, Any]] = []
    try:
        async with running_worker(settings, db_url, registry):
            job = await create(aconn, "four", registry=registry, max_attempts=3)
            async for note in listener.notifies(timeout=30):
                event = json.loads(note.payload)
                if event["job_id"] == str(job.job_id):
                    events.append(event)
                    if event["status"] in ("completed", "rolled_back", "failed"):
                        break
            done = await wait_for_job(aconn, job.job_id)
    finally:
        await listener.close()
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert await attempts_with_resume(aconn, job.job_id) == [
        (1, 1, "failed", None),
        (1, 2, "succeeded", 3),
    ]
    # Steps 1 and 2 ran once; step 3 twice (failed, then again); step 4 once.
    assert await ran(aconn) == {"q1": 1, "q2": 1, "q3": 2, "q4": 1}
    # The second attempt's progress (after the fetch's own event, which
    # starts every attempt at 0) starts with the two kept steps done.
    retried = events[[e["status"] for e in events].index("pending") + 1 :]
    running = [e["steps_completed"] for e in retried if e["status"] == "in_progress"]
    assert running[0] == 0 and running[1:] and min(running[1:]) == 2
    assert done.result == {"rows": {"q1": 10, "q2": 20, "q3": 30, "q4": 40}}
    assert done.package_path is not None
    path = LocalStorage(settings.storage_dir).resolve(done.package_path)
    with tarfile.open(path) as tar:
        top = tar.getnames()[0].split("/")[0]
        manifest_file = tar.extractfile(f"{top}/manifest.json")
        assert manifest_file is not None
        manifest = json.loads(manifest_file.read())
        contents = {
            entry["path"]: tar.extractfile(f"{top}/{entry['path']}").read()  # type: ignore[union-attr]
            for entry in manifest["files"]
        }
    assert {e["path"]: e["rows"] for e in manifest["files"]} == {
        "q1.csv": 10,
        "q2.csv": 20,
        "q3.csv": 30,
        "q4.csv": 40,
    }
    assert contents["q1.csv"].decode().splitlines() == ["n", *map(str, range(1, 11))]
    assert checkpoint_entries(settings.storage_dir) == []


# -- a kind whose rollback matters: it counts its rollbacks ---------------------------------

UNDONE: list[str] = []
FAILING = {"step two": True}
# Set by a test to hold a rollback in the middle (two sweeps meeting).
GATE: dict[str, asyncio.Event | None] = {"event": None}


def undo_kind() -> Kind:
    kind = Kind("undo-counted", max_attempts=3)

    @kind.step("Reserve", resumable=True)
    async def reserve(ctx: ExportContext) -> None:
        ctx.file("reserved.txt").write_text("reserved\n")
        ctx.state["reservation"] = "r-42"
        ctx.result["runs_of_reserve"] = ctx.result.get("runs_of_reserve", 0) + 1
        UNDONE.append("ran reserve")

    @reserve.rollback
    async def release(ctx: ExportContext) -> None:
        # What a rollback of a kept step sees: its file and state put back.
        text = (ctx.work_dir / "reserved.txt").read_text()
        gate, GATE["event"] = GATE["event"], None  # holds the first rollback only
        if gate is not None:
            UNDONE.append("releasing")
            await gate.wait()
        UNDONE.append(f"released {ctx.state['reservation']} {text.strip()}")

    @kind.step("Use it")
    async def use(ctx: ExportContext) -> None:
        if FAILING["step two"]:
            raise RuntimeError("planned failure in step two")

    return kind


def undo_registry() -> KindRegistry:
    registry = kinds_registry()
    registry.register(undo_kind())
    return registry


@pytest.fixture
def undo_log() -> list[str]:
    UNDONE.clear()
    FAILING["step two"] = True
    GATE["event"] = None
    return UNDONE


@pytest.fixture(params=["local", "s3"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Settings, Callable[[], list[Any]]]:
    """Settings whose retry waits a minute and whose orphan sweep has no
    grace period, and a listing of the checkpoint area (files or objects)."""
    timings = {"retry_base_seconds": 60.0, "retry_max_seconds": 60.0, "orphan_grace_seconds": 0.0}
    if request.param == "local":
        settings = fast_settings(tmp_path, **timings)
        return settings, lambda: checkpoint_entries(settings.storage_dir)
    server: SeaweedServer = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    settings = s3_settings(tmp_path, server, bucket, monkeypatch, **timings)
    return settings, lambda: [k for k in object_keys(server, bucket) if "/.checkpoints/" in k]


async def test_cancel_while_waiting_for_the_retry_rolls_back_the_kept_steps_once(
    aconn: AConn,
    db_url: str,
    undo_log: list[str],
    backend: tuple[Settings, Callable[[], list[Any]]],
) -> None:
    registry = undo_registry()
    # The retry waits a minute: the job sits pending with its kept step.
    settings, checkpoint_entries_now = backend
    async with running_worker(settings, db_url, registry) as daemon:
        job = await create(aconn, "undo-counted", registry=registry, max_attempts=3)
        await poll_until(
            lambda: _attempt_count(aconn, job.job_id, 1), "the first attempt was recorded"
        )
        assert (await wait_for_job(aconn, job.job_id, {JobStatus.PENDING})).attempts == 1
        # Between automatic retries nothing is rolled back; the step is kept.
        assert undo_log == ["ran reserve"]
        assert checkpoint_entries_now() != []
        # Neither sweep (orphans, checkpoints) touches a live run's checkpoint.
        work_root = daemon.runtime.storage.work_root
        await daemon.runtime.cleanup()
        assert checkpoint_entries_now() != []

        cancelled = await cancel_export(aconn, job.job_id)
        assert cancelled.status is JobStatus.CANCELLED
        # Two sweeps meet (two workers' ticks): while the first is in the
        # middle of the rollback, the second runs to its end. One rollback.
        gate = asyncio.Event()
        GATE["event"] = gate
        first_sweep = asyncio.create_task(daemon.runtime.sweep_checkpoints())
        await poll_until(lambda: "releasing" in undo_log, "the first sweep's rollback began")
        await daemon.runtime.sweep_checkpoints()
        # The second sweep leaves the checkpoint to the rollback in progress.
        assert checkpoint_entries_now() != []
        gate.set()
        await first_sweep
        await daemon.runtime.sweep_checkpoints()
    assert undo_log == ["ran reserve", "releasing", "released r-42 reserved"]
    assert checkpoint_entries_now() == []
    assert list(work_root.iterdir()) == []


async def _attempt_count(aconn: AConn, job_id: Any, count: int) -> bool:
    cur = await aconn.execute(
        "SELECT count(*) FROM exportd.job_attempts WHERE job_id = %s AND outcome IS NOT NULL",
        (job_id,),
    )
    row = await cur.fetchone()
    return row is not None and row[0] >= count


async def test_the_final_failure_rolls_back_the_kept_steps_once(
    aconn: AConn, db_url: str, tmp_path: Path, undo_log: list[str]
) -> None:
    registry = undo_registry()
    settings = fast_settings(tmp_path)
    async with running_worker(settings, db_url, registry) as daemon:
        job = await create(aconn, "undo-counted", registry=registry, max_attempts=3)
        done = await wait_for_job(aconn, job.job_id)
        await daemon.runtime.sweep_checkpoints()  # the run's end is claimed: no second rollback
    assert done.status is JobStatus.ROLLED_BACK
    assert await attempts_with_resume(aconn, job.job_id) == [
        (1, 1, "failed", None),
        (1, 2, "failed", 2),
        (1, 3, "failed", 2),
    ]
    assert undo_log == ["ran reserve", "released r-42 reserved"]
    assert checkpoint_entries(settings.storage_dir) == []


async def test_a_manual_retry_starts_a_fresh_run_at_step_one(
    aconn: AConn, db_url: str, tmp_path: Path, undo_log: list[str]
) -> None:
    registry = undo_registry()
    settings = fast_settings(tmp_path, retry_base_seconds=60.0, retry_max_seconds=60.0)
    async with running_worker(settings, db_url, registry) as daemon:
        job = await create(aconn, "undo-counted", registry=registry, max_attempts=3)
        await poll_until(
            lambda: _attempt_count(aconn, job.job_id, 1), "the first attempt was recorded"
        )
        await cancel_export(aconn, job.job_id)
        # Run 1's checkpoint is still there (no sweep yet): run 2 must not use it.
        assert checkpoint_entries(settings.storage_dir) != []
        FAILING["step two"] = False
        retried = await retry_export(aconn, registry, job.job_id)
        assert retried.run == 2
        done = await wait_for_job(aconn, job.job_id)
        await daemon.runtime.sweep_checkpoints()
    assert done.status is JobStatus.COMPLETED
    assert await attempts_with_resume(aconn, job.job_id) == [
        (1, 1, "failed", None),
        (2, 1, "succeeded", None),
    ]
    assert done.result == {"runs_of_reserve": 1}
    # Step 1 ran again in run 2; run 1's kept step was rolled back by the sweep.
    assert undo_log == ["ran reserve", "ran reserve", "released r-42 reserved"]
    assert checkpoint_entries(settings.storage_dir) == []
