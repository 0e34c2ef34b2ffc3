"""The parts of procrastinate exportd relies on beyond its documented use.

exportd subclasses `procrastinate.manager.JobManager` (`SettlingJobManager`,
daemon/worker) and overrides `finish_job` and `retry_job`; its worker calls
other manager methods and reads context and job attributes; its SQL calls
procrastinate's SQL functions and reads its tables. None of this is a stable
API, so pyproject.toml pins procrastinate to one minor series. When an
upgrade changes any of it, this test fails by name: check the override (and
the SQL) against the new procrastinate before moving the pin.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from importlib import resources
from typing import Any

import pytest
from procrastinate import App, JobContext, PsycopgConnector, exceptions, jobs, manager, worker
from procrastinate.job_context import AbortReason

POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD
EMPTY = inspect.Parameter.empty

# (name, kind, default) of every parameter, in order.
Params = list[tuple[str, object, object]]


def params(function: Callable[..., Any]) -> Params:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def keyword_names(function: Callable[..., Any]) -> set[str]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in inspect.signature(function).parameters.values() if p.kind in kinds}


# -- what SettlingJobManager overrides -------------------------------------------------


def test_finish_job_signature_is_the_one_exportd_overrides() -> None:
    assert params(manager.JobManager.finish_job) == [
        ("self", POSITIONAL, EMPTY),
        ("job", POSITIONAL, EMPTY),
        ("status", POSITIONAL, EMPTY),
        ("delete_job", POSITIONAL, EMPTY),
    ]
    assert inspect.iscoroutinefunction(manager.JobManager.finish_job)


def test_retry_job_signature_is_the_one_exportd_overrides() -> None:
    assert params(manager.JobManager.retry_job) == [
        ("self", POSITIONAL, EMPTY),
        ("job", POSITIONAL, EMPTY),
        ("retry_at", POSITIONAL, None),
        ("priority", POSITIONAL, None),
        ("queue", POSITIONAL, None),
        ("lock", POSITIONAL, None),
    ]
    assert inspect.iscoroutinefunction(manager.JobManager.retry_job)


def test_job_manager_constructor_takes_the_connector() -> None:
    assert params(manager.JobManager.__init__) == [
        ("self", POSITIONAL, EMPTY),
        ("connector", POSITIONAL, EMPTY),
    ]


def test_the_worker_settles_jobs_through_the_overridden_methods() -> None:
    """If the worker stopped calling app.job_manager.finish_job / retry_job, the
    overrides would be skipped silently and settled jobs persisted twice."""
    source = inspect.getsource(worker.Worker)
    assert "self.app.job_manager.finish_job(" in source
    assert "self.app.job_manager.retry_job(" in source


def test_app_job_manager_is_a_replaceable_attribute() -> None:
    app = App(connector=PsycopgConnector(conninfo="postgresql://unused"))
    assert isinstance(app.job_manager, manager.JobManager)
    replacement = manager.JobManager(app.connector)
    app.job_manager = replacement
    assert app.job_manager is replacement


# -- what exportd calls or reads ------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "names"),
    [
        (manager.JobManager.get_stalled_jobs, {"task_name", "seconds_since_heartbeat"}),
        (manager.JobManager.update_heartbeat, {"worker_id"}),
        (App.task, {"name", "pass_context", "queue"}),
        (App.periodic, {"cron", "periodic_id"}),
        (PsycopgConnector.__init__, {"pool_factory"}),
        (
            worker.Worker.__init__,
            {
                "app",
                "queues",
                "name",
                "concurrency",
                "wait",
                "fetch_job_polling_interval",
                "abort_job_polling_interval",
                "shutdown_graceful_timeout",
                "listen_notify",
                "install_signal_handlers",
                "update_heartbeat_interval",
                "stalled_worker_timeout",
            },
        ),
    ],
    ids=[
        "get_stalled_jobs",
        "update_heartbeat",
        "App.task",
        "App.periodic",
        "PsycopgConnector",
        "Worker",
    ],
)
def test_keywords_exportd_passes_are_accepted(
    function: Callable[..., Any], names: set[str]
) -> None:
    assert names <= keyword_names(function)


def test_get_stalled_jobs_keywords_keep_their_meaning() -> None:
    signature = inspect.signature(manager.JobManager.get_stalled_jobs)
    assert signature.parameters["task_name"].default is None
    assert signature.parameters["seconds_since_heartbeat"].default == 30


def test_abort_reason() -> None:
    assert {reason.name: reason.value for reason in AbortReason} == {
        "USER_REQUEST": "user_request",
        "SHUTDOWN": "shutdown",
    }


def test_job_context_and_job_attributes() -> None:
    context_fields = keyword_names(JobContext)
    assert {"job", "abort_reason"} <= context_fields
    assert {"id", "task_name", "attempts", "task_kwargs"} <= keyword_names(jobs.Job)
    assert {status.value for status in jobs.Status} >= {"succeeded", "failed", "aborted"}


def test_worker_and_connector_members_exportd_uses() -> None:
    assert callable(worker.Worker.run) and inspect.iscoroutinefunction(worker.Worker.run)
    assert callable(worker.Worker.stop)
    assert "self.worker_id" in inspect.getsource(worker.Worker.__init__)
    assert isinstance(PsycopgConnector.pool, property)
    assert issubclass(exceptions.ConnectorException, Exception)


# -- the SQL exportd's queries and migrations call -------------------------------------


def schema() -> str:
    return (resources.files("procrastinate.sql") / "schema.sql").read_text()


def sql_arguments(name: str) -> str:
    found = re.search(rf"CREATE FUNCTION {name}\((.*?)\)\s*RETURNS", schema(), re.S)
    assert found is not None, f"procrastinate no longer defines {name}"
    return " ".join(found.group(1).split())


@pytest.mark.parametrize(
    ("function", "arguments"),
    [
        (
            "procrastinate_finish_job_v1",
            "job_id bigint, end_status procrastinate_job_status, delete_job boolean",
        ),
        (
            "procrastinate_retry_job_v2",
            "job_id bigint, retry_at timestamp with time zone, new_priority integer,"
            " new_queue_name character varying, new_lock character varying",
        ),
        ("procrastinate_cancel_job_v1", "job_id bigint, abort boolean, delete_job boolean"),
        ("procrastinate_defer_jobs_v1", "jobs procrastinate_job_to_defer_v1[]"),
    ],
)
def test_sql_functions_exportd_calls(function: str, arguments: str) -> None:
    assert sql_arguments(function) == arguments


def test_sql_job_to_defer_type_field_order() -> None:
    """exportd builds it positionally: ROW(queue, task, priority, lock, queueing_lock, args, at)."""
    found = re.search(r"CREATE TYPE procrastinate_job_to_defer_v1 AS \((.*?)\);", schema(), re.S)
    assert found is not None
    fields = [line.strip().split()[0] for line in found.group(1).split(",")]
    assert fields == [
        "queue_name",
        "task_name",
        "priority",
        "lock",
        "queueing_lock",
        "args",
        "scheduled_at",
    ]


def test_sql_job_statuses_and_columns_exportd_reads() -> None:
    text = schema()
    statuses = re.search(r"CREATE TYPE procrastinate_job_status AS ENUM \((.*?)\);", text, re.S)
    assert statuses is not None
    assert set(re.findall(r"'(\w+)'", statuses.group(1))) >= {
        "todo",
        "doing",
        "succeeded",
        "failed",
        "aborted",
    }
    for table, columns in {
        "procrastinate_jobs": {"id", "queue_name", "status", "attempts", "worker_id"},
        "procrastinate_workers": {"id", "last_heartbeat"},
    }.items():
        found = re.search(rf"CREATE TABLE {table}\s*\((.*?)\n\);", text, re.S)
        assert found is not None, table
        defined = {line.strip().split()[0] for line in found.group(1).splitlines() if line.strip()}
        assert columns <= defined, table
