"""Which failures the worker retries: the SQLSTATE classification of a failing
export query, and how permanence travels through `raise … from`."""

from __future__ import annotations

import pytest

from daemon.db.copy import never_transient
from daemon.errors import DatabaseUnavailable, PermanentError, QueryFailed, is_permanent
from daemon.kinds.sql import SqlExportError


@pytest.mark.parametrize(
    "sqlstate",
    [
        "42601",  # syntax_error
        "42P01",  # undefined_table
        "42703",  # undefined_column
        "42501",  # insufficient_privilege
        "42883",  # undefined_function
        "22003",  # numeric_value_out_of_range
        "22009",  # invalid_time_zone_displacement_value
        "22P02",  # invalid_text_representation
        "22012",  # division_by_zero
        "0A000",  # feature_not_supported
        "21000",  # cardinality_violation
        "25006",  # read_only_sql_transaction
        "3F000",  # invalid_schema_name
        "54001",  # statement_too_complex
    ],
)
def test_errors_of_the_query_itself_are_permanent(sqlstate: str) -> None:
    assert never_transient(sqlstate)


@pytest.mark.parametrize(
    "sqlstate",
    [
        None,
        "",
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "57014",  # query_canceled (statement timeout, cancel)
        "57P01",  # admin_shutdown
        "53100",  # disk_full
        "53200",  # out_of_memory
        "53300",  # too_many_connections
        "08006",  # connection_failure
        "55P03",  # lock_not_available
        "58030",  # io_error
        "XX000",  # internal_error
        "P0001",  # raise_exception (a user function's own error)
        "25001",  # active_sql_transaction: not the read-only refusal
    ],
)
def test_errors_that_may_pass_are_retried(sqlstate: str | None) -> None:
    assert not never_transient(sqlstate)


def test_permanence_travels_through_explicit_causes() -> None:
    failed = QueryFailed('relation "x" does not exist (SQLSTATE 42P01)', permanent=True)
    with pytest.raises(SqlExportError) as caught:
        raise SqlExportError("query 'q' failed", permanent=failed.permanent) from failed
    assert is_permanent(caught.value)
    with pytest.raises(RuntimeError) as wrapped:
        raise RuntimeError("wrapped") from PermanentError("bad input")
    assert is_permanent(wrapped.value)


def test_transient_and_foreign_errors_are_not_permanent() -> None:
    assert not is_permanent(QueryFailed("canceling statement due to statement timeout"))
    assert not is_permanent(SqlExportError("cannot connect to the export database"))
    assert not is_permanent(DatabaseUnavailable("refused"))
    assert not is_permanent(ValueError("anything else"))


def _handle_badly() -> None:
    try:
        raise PermanentError("first")
    except PermanentError:
        raise OSError("while handling it")  # noqa: B904 - the implicit context is the point


def test_an_implicit_context_is_not_a_cause() -> None:
    """An error raised while handling a permanent one says nothing of its own."""
    with pytest.raises(OSError, match="while handling") as caught:
        _handle_badly()
    assert caught.value.__context__ is not None
    assert not is_permanent(caught.value)
