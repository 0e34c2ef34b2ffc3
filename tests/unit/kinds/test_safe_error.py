"""`safe_error` is what a job's owner reads: one line, and never a server path."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from daemon.errors import QueryFailed, is_permanent, is_storage_full
from daemon.kinds.context import safe_error
from daemon.kinds.sql import SqlExportError

PATH = "/srv/exportd/packages/5e/5e7a0c1d-1111-4222-8333-944445555666/r1-a1-ab12.tar.gz"
OTHER = "/srv/exportd/packages/.tmp/5e7a0c1d-r1-a1.tar.gz.part"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), PATH), "OSError: storage full"),
        (OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), PATH), "OSError: storage full"),
        (
            PermissionError(errno.EACCES, "Permission denied", PATH),
            "PermissionError: permission denied",
        ),
        (
            PermissionError(errno.EPERM, "Operation not permitted", PATH),
            "PermissionError: permission denied",
        ),
        (
            FileNotFoundError(errno.ENOENT, "No such file or directory", PATH),
            "FileNotFoundError: file not found",
        ),
        # two file names (rename, link): neither is shown
        (
            OSError(errno.EXDEV, "Invalid cross-device link", OTHER, None, PATH),
            "OSError: Invalid cross-device link",
        ),
        (OSError(errno.EIO, "Input/output error", PATH), "OSError: Input/output error"),
        (OSError(errno.EMFILE, "Too many open files", PATH), "OSError: Too many open files"),
        # no strerror given: the platform's text for the errno
        (OSError(errno.EROFS, None, PATH), f"OSError: {os.strerror(errno.EROFS)}"),
    ],
    ids=[
        "ENOSPC",
        "EDQUOT",
        "EACCES",
        "EPERM",
        "ENOENT",
        "EXDEV-two-paths",
        "EIO",
        "EMFILE",
        "EROFS-no-strerror",
    ],
)
def test_os_errors_are_told_by_errno_without_the_path(exc: OSError, expected: str) -> None:
    text = safe_error(exc)
    assert text == expected
    assert "/srv" not in text and "5e7a" not in text


def test_a_real_os_error_names_no_path(tmp_path: Path) -> None:
    missing = tmp_path / "secret-dir" / "file.txt"
    with pytest.raises(FileNotFoundError) as caught:
        missing.read_bytes()
    assert str(missing) in str(caught.value)  # what the owner used to see
    assert safe_error(caught.value) == "FileNotFoundError: file not found"


def test_an_os_error_without_errno_keeps_its_message() -> None:
    assert safe_error(OSError("cannot undo")) == "OSError: cannot undo"
    assert safe_error(TimeoutError()) == "TimeoutError"


def test_other_errors_are_one_redacted_line() -> None:
    exc = RuntimeError("connect to postgresql://u:secret@db/x failed\n  password=hunter2 again")
    text = safe_error(exc)
    assert text == "RuntimeError: connect to postgresql://… failed password=… again"


def raised_while_writing_to_a_full_disk() -> BaseException:
    """What a COPY interrupted by a full disk may raise: the driver's error
    from ending the COPY early, wrapped by the SQL step — the disk-full
    error only in its context."""
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), PATH)
        except OSError:
            try:
                raise QueryFailed("canceling statement due to user request", sqlstate="57014")
            except QueryFailed as failed:
                raise SqlExportError("query 'orders' failed: canceling", permanent=True) from failed
    except SqlExportError as exc:
        return exc
    raise AssertionError("unreachable")


def test_a_full_disk_under_another_error_still_reads_storage_full() -> None:
    exc = raised_while_writing_to_a_full_disk()
    assert safe_error(exc) == "OSError: storage full"
    assert is_storage_full(exc)
    assert not is_permanent(exc)  # space comes back: retried


def test_a_full_disk_hidden_on_purpose_is_not_reported() -> None:
    """`raise … from None` says the context is not the story."""

    def hides() -> None:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), PATH)
        except OSError:
            raise ValueError("bad value") from None

    with pytest.raises(ValueError, match="bad value") as caught:
        hides()
    assert safe_error(caught.value) == "ValueError: bad value"
    assert not is_storage_full(caught.value)
