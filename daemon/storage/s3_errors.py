"""Errors of the S3 backend, and which failures of the store are worth a retry.

Messages never name the endpoint, the bucket, a key or a credential: they
end up in a job's `error_message`.
"""

from __future__ import annotations

import re

import botocore.exceptions

from daemon.errors import ExportdError
from daemon.storage.backend import UnsafeLocation

_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
    }
)
# What the owner reads when the store says no: never the key, bucket or endpoint.
_REFUSALS = {
    "AccessDenied": "access denied",
    "403": "access denied",
    "AllAccessDisabled": "access denied",
    "AccountProblem": "access denied",
    "InvalidAccessKeyId": "unknown access key",
    "SignatureDoesNotMatch": "wrong secret key",
    "InvalidToken": "invalid credentials",
    "ExpiredToken": "expired credentials",
    "NoSuchBucket": "no such bucket",
}


class S3Error(ExportdError):
    """Object storage failed; the message is safe to show a job's owner."""


class S3Refused(S3Error):
    """The store refused the request for good (credentials, permissions, no
    such bucket): a retry cannot help until the operator changes something."""

    permanent = True


class S3Unavailable(S3Error):
    """The store could not be reached or kept failing (connection errors, 5xx,
    throttling) after the bounded retries."""


class S3RequestFailed(S3Error):
    """The store rejected one request (an S3 error code we do not retry)."""

    def __init__(self, message: str, *, code: str) -> None:
        self.code = code
        super().__init__(message)


class ObjectMissing(S3Error):
    """The object a row names is not in the bucket (expired, swept, deleted)."""


class RangeNotSatisfiable(S3Error):
    """A Range the object cannot satisfy (the store answered 416)."""


class UnsafeKey(UnsafeLocation):
    """An object key (from a row) is not under the configured prefix, or not a
    key exportd could have written. Mirrors `local.UnsafePath`."""


# -- configuration -----------------------------------------------------------------


def _error_code(exc: botocore.exceptions.ClientError) -> tuple[str, int]:
    error = exc.response.get("Error", {})
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return str(error.get("Code") or status or "Unknown"), status


def is_transient(exc: BaseException) -> bool:
    """A failure another attempt may not meet: the connection (refused, reset,
    timed out), a 5xx, a 429 or S3's throttling and timeout codes."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code, status = _error_code(exc)
        return code in _TRANSIENT_CODES or status >= 500 or status == 429
    return isinstance(
        exc,
        botocore.exceptions.ConnectionError
        | botocore.exceptions.HTTPClientError
        | botocore.exceptions.IncompleteReadError,
    )


def translate(exc: BaseException, operation: str, *, attempts: int = 1) -> S3Error:
    """The exportd error for a botocore failure, with a message that names no
    endpoint, bucket, key or credential."""
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if isinstance(exc, botocore.exceptions.ClientError):
        code = _error_code(exc)[0]
        if code in _REFUSALS:
            return S3Refused(f"object storage refused the request ({_REFUSALS[code]})")
        if is_transient(exc):
            return S3Unavailable(f"object storage unavailable ({_safe_code(code)}){tries}")
        safe = _safe_code(code)
        return S3RequestFailed(f"object storage {operation} failed ({safe})", code=safe)
    if isinstance(
        exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError
    ):
        return S3Refused("object storage refused the request (no credentials configured)")
    if is_transient(exc):
        return S3Unavailable(f"object storage unreachable ({describe_error(exc)}){tries}")
    return S3Error(f"object storage {operation} failed ({type(exc).__name__})")


def _safe_code(code: str) -> str:
    """An S3 error code as echoed back: letters and digits only, bounded."""
    return re.sub(r"[^A-Za-z0-9]", "", code)[:64] or "Unknown"


def describe_error(exc: BaseException) -> str:
    """A word for the log and messages (botocore's own text names the URL)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return _safe_code(_error_code(exc)[0])
    if isinstance(
        exc, botocore.exceptions.ReadTimeoutError | botocore.exceptions.ConnectTimeoutError
    ):
        return "timed out"
    if isinstance(exc, botocore.exceptions.ConnectionError | botocore.exceptions.HTTPClientError):
        return "connection failed"
    return type(exc).__name__
