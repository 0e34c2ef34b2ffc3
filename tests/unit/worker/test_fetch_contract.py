"""The parts of procrastinate exportd's fair fetch stands in for (DESIGN §13).

exportd's workers fetch with `exportd.fetch_job` (migration 0009) through an
override of `JobManager.fetch_job` (`daemon/worker/fair_fetch.py`). It copies
procrastinate's candidate rules (queue filter, schedule, `lock`, order) and
returns the columns procrastinate's own fetch query returns. When an upgrade
of procrastinate changes any of that, these tests fail by name: port the
change into `exportd.fetch_job` (a new migration) before moving the pin.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from importlib import resources

from procrastinate import manager, sql, worker

from daemon.db.queries import named_queries
from daemon.worker.fair_fetch import FairJobManager

POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD
EMPTY = inspect.Parameter.empty
# sha256 of procrastinate_fetch_job_v2 (whitespace collapsed), procrastinate 3.10.
FETCH_FUNCTION_SHA256 = "cc5c9db470f3cac245778c4497ce59a510b8e7932f2164b11cab3bf5fc2c98aa"


def columns(query: str) -> list[str]:
    found = re.search(r"SELECT\s+(.*?)\s+FROM", query, re.S)
    assert found is not None, query
    return [name.strip() for name in found.group(1).split(",")]


def test_fetch_job_signature_is_the_one_exportd_overrides() -> None:
    params = [
        (p.name, p.kind, p.default)
        for p in inspect.signature(manager.JobManager.fetch_job).parameters.values()
    ]
    assert params == [
        ("self", POSITIONAL, EMPTY),
        ("queues", POSITIONAL, EMPTY),
        ("worker_id", POSITIONAL, EMPTY),
    ]
    assert inspect.iscoroutinefunction(manager.JobManager.fetch_job)
    assert FairJobManager.fetch_job is not manager.JobManager.fetch_job


def test_the_worker_fetches_through_the_job_manager() -> None:
    """If the worker fetched some other way, the caps would be skipped silently."""
    assert "self.app.job_manager.fetch_job(" in inspect.getsource(worker.Worker)


def test_exportd_returns_the_columns_procrastinate_reads() -> None:
    ours = columns(named_queries("fetch")["fetch_job"])
    assert ours == columns(sql.queries["fetch_job"])
    source = inspect.getsource(manager.JobManager.fetch_job)
    assert "jobs_module.Job.from_row(row)" in source
    assert 'row["id"] is None' in source


def test_procrastinates_candidate_rules_are_the_ones_exportd_copied() -> None:
    schema = (resources.files("procrastinate.sql") / "schema.sql").read_text()
    found = re.search(r"CREATE FUNCTION procrastinate_fetch_job_v2\(.*?\n\$\$;", schema, re.S)
    assert found is not None, "procrastinate no longer defines procrastinate_fetch_job_v2"
    digest = hashlib.sha256(" ".join(found.group(0).split()).encode()).hexdigest()
    assert digest == FETCH_FUNCTION_SHA256, (
        "procrastinate's fetch changed: compare it with exportd.fetch_job (migration 0009)"
    )
