"""The one exception hierarchy of exportd.

Lower layers raise these; the CLI turns them into one-line messages and the
HTTP layer into JSON error bodies. psycopg errors are translated into these
at the store boundary so callers never match on driver exceptions.
"""

from __future__ import annotations

import errno

# The errnos of a full volume: no space left, or the user's quota used up.
STORAGE_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class ExportdError(Exception):
    """Base class: an error exportd knows how to explain in one line.

    `permanent` says a retry cannot help (DESIGN §16): an export attempt that
    fails with such an error ends the job at once instead of burning its
    remaining attempts and their backoff.
    """

    permanent: bool = False


class PermanentError(ExportdError):
    """An export error no retry can fix (a step may raise it: bad input, missing
    object). The worker fails the job on the first attempt."""

    permanent = True


def is_permanent(exc: BaseException) -> bool:
    """True when `exc`, or an error it was explicitly raised from
    (`raise … from err`), is an ExportdError marked permanent. A full disk
    never is (`is_storage_full`): space comes back, the retry may succeed."""
    if is_storage_full(exc):
        return False
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ExportdError) and current.permanent:
            return True
        seen.add(id(current))
        current = current.__cause__
    return False


def is_storage_full(exc: BaseException) -> bool:
    """True when `exc`, or an error it was raised from or while handling, is an
    OS error saying the volume is full (ENOSPC, EDQUOT). The context counts
    (unless hidden with `from None`): a failing write inside a COPY or a tar
    stream may surface as the error of whatever cleaned up after it (the
    COPY ended early, the file closed)."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in STORAGE_FULL_ERRNOS:
            return True
        if current.__cause__ is not None:
            pending.append(current.__cause__)
        if current.__context__ is not None and not current.__suppress_context__:
            pending.append(current.__context__)
    return False


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
    server's one line and SQLSTATE; `sqlstate` lets callers classify it, and
    `permanent` (decided where the driver error is translated) says whether
    running the query again could ever succeed."""

    def __init__(
        self, message: str, *, sqlstate: str | None = None, permanent: bool = False
    ) -> None:
        self.sqlstate = sqlstate
        self.permanent = permanent
        super().__init__(message)


class PackagingError(ExportdError):
    """A file could not be packaged (not a regular file, vanished, bad name)."""


class PackageTooLarge(PackagingError):
    """The package grew past its kind's `max_package_bytes`. Permanent: the
    same export would produce the same package on the next attempt."""

    permanent = True


class DeadlineExceeded(ExportdError):
    """An attempt ran past its kind's `timeout`: it was cancelled and rolled
    back, and is retried while attempts remain."""


class TooManyExports(ExportdError):
    """The owner already has EXPORTD_OWNER_MAX_PENDING exports waiting to run."""


class KindError(ExportdError):
    """A kind is declared wrongly (bad name, duplicate, no steps)."""


class UnknownKind(ExportdError):
    """No kind has this name. Permanent: a worker that does not know the kind
    of a job will not know it on the next attempt either."""

    permanent = True


class ParamError(ExportdError):
    """A job parameter is missing, unknown or of the wrong type. Names the field."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"params.{field}: {problem}")
