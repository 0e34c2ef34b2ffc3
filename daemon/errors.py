"""The one exception hierarchy of exportd.

Lower layers raise these; the CLI turns them into one-line messages and the
HTTP layer into JSON error bodies. psycopg errors are translated into these
at the store boundary so callers never match on driver exceptions.
"""

from __future__ import annotations


class ExportdError(Exception):
    """Base class: an error exportd knows how to explain in one line."""


class ConfigError(ExportdError):
    """A setting is missing, unknown or invalid. Names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")


class DatabaseUnavailable(ExportdError):
    """The database could not be reached (refused, timed out, wrong credentials)."""


class EmbeddedPostgresError(ExportdError):
    """The embedded PostgreSQL server could not be initialised or started."""


class MigrationError(ExportdError):
    """A migration could not be applied or rolled back, or its file changed."""


class JobNotFound(ExportdError):
    """No job has this id."""


class InvalidTransition(ExportdError):
    """The database refused a job status change (state machine trigger)."""


class IdempotencyConflict(ExportdError):
    """The idempotency key is already used by this owner for another job."""


class ConstraintViolation(ExportdError):
    """A value broke a table constraint (e.g. progress outside 0..100)."""


class QueryFailed(ExportdError):
    """A configured export query failed on the server. The message is the
    server's one line and SQLSTATE; `sqlstate` lets callers classify it."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        self.sqlstate = sqlstate
        super().__init__(message)


class PackagingError(ExportdError):
    """A file could not be packaged (not a regular file, vanished, bad name)."""
