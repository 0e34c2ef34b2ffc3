"""The custom kind from docs/kinds.md runs as documented, rollback included."""

from __future__ import annotations

import importlib.util
import tarfile
from pathlib import Path
from typing import Any

import psycopg
import pytest

from daemon.kinds.registry import Kind, KindRegistry
from daemon.models import JobStatus
from daemon.storage.local import LocalStorage
from tests.helpers import create, fast_settings, running_worker, wait_for

pytestmark = pytest.mark.anyio
AConn = psycopg.AsyncConnection[Any]
EXAMPLE = Path(__file__).resolve().parents[3] / "docs" / "examples" / "tool_export.py"


def example_registry() -> KindRegistry:
    spec = importlib.util.spec_from_file_location("tool_export", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return KindRegistry(v for v in vars(module).values() if isinstance(v, Kind))


async def test_tool_export_renders_a_project(
    aconn: AConn, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOOL_CATALOGUE_DIR", str(tmp_path / "catalogue"))
    registry = example_registry()
    settings = fast_settings(tmp_path)
    async with running_worker(settings, db_url, registry):
        job = await create(
            aconn, "tool", {"name": "csv-cleaner", "description": "Cleans CSV"}, registry=registry
        )
        done = await wait_for(aconn, job.job_id)
    assert done.status is JobStatus.COMPLETED
    assert done.result == {"files": 4}
    path = LocalStorage(settings.storage_dir).resolve(done.package_path or "")
    with tarfile.open(path) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames()}
    assert names == {
        "csv-cleaner/pyproject.toml",
        "csv-cleaner/README.md",
        "csv-cleaner/src/csv_cleaner/__init__.py",
        "csv-cleaner/tests/test_csv_cleaner.py",
        "manifest.json",
    }
    assert (tmp_path / "catalogue" / f"{job.job_id}.json").exists()


async def test_tool_export_rolls_back_its_catalogue_entry(
    aconn: AConn, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOOL_CATALOGUE_DIR", str(tmp_path / "catalogue"))
    registry = example_registry()
    async with running_worker(fast_settings(tmp_path), db_url, registry):
        job = await create(aconn, "tool", {"name": "broken-tool"}, registry=registry)
        done = await wait_for(aconn, job.job_id)
    assert done.status is JobStatus.ROLLED_BACK
    assert done.attempts == 2  # the kind's own max_attempts
    assert done.error_message == "RuntimeError: the rendered project did not pass its checks"
    assert list((tmp_path / "catalogue").iterdir()) == []
