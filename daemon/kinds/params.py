"""Declared parameters of a kind: their types, and the values each accepts.

A job's params arrive as JSON; each declared `Param` checks a value and
returns its canonical JSON form (stored in the job), and converts it to the
Python value a step uses. The accepted ranges are what PostgreSQL accepts
when the value is bound into an export query, so a job that was accepted
never fails at run time for its params.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from daemon.errors import KindError, ParamError

PARAM_TYPES = ("text", "int", "float", "bool", "date", "timestamp", "uuid")
MAX_TEXT_PARAM = 10_000
# What PostgreSQL accepts for a value bound into an export query (checked
# against a real server, tests/integration/kinds/test_param_ranges.py):
# bigint, less its lowest value — psycopg writes a negative number as ` -n`,
# and `-9223372036854775808::bigint` parses as -(9223372036854775808::bigint),
# which overflows;
INT_PARAM_MIN = -(2**63) + 1
INT_PARAM_MAX = 2**63 - 1
# a time zone offset of whole seconds up to 15:59:59 either way (Python
# accepts ±23:59:59.999999). Dates and timestamps in Python's years 1…9999
# are all within PostgreSQL's range.
MAX_UTC_OFFSET = timedelta(hours=15, minutes=59, seconds=59)


@dataclass(frozen=True)
class Param:
    """A declared parameter: its type, whether it is required, its default.

    Values arrive as JSON; dates, timestamps and uuids as ISO strings. The
    validated value is stored back in the job as JSON (so `date` stays an ISO
    string in `params`) and converted with `convert()` when a step needs it.
    """

    type: str = "text"
    required: bool = False
    default: Any = None

    def __post_init__(self) -> None:
        if self.type not in PARAM_TYPES:
            known = ", ".join(PARAM_TYPES)
            raise KindError(f"unknown param type {self.type!r} (use one of {known})")
        if self.default is not None:
            self.check(self.default, "default")

    def check(self, value: Any, name: str) -> Any:
        """Validate a JSON value; return its canonical JSON form."""
        kind = self.type
        if kind == "text":
            if not isinstance(value, str):
                raise ParamError(name, "must be a string")
            if "\x00" in value:
                raise ParamError(name, "must not contain NUL characters")
            if not _encodable(value):
                raise ParamError(name, "must be valid Unicode (no lone surrogates)")
            if len(value) > MAX_TEXT_PARAM:
                raise ParamError(name, f"must be at most {MAX_TEXT_PARAM} characters")
            return value
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ParamError(name, "must be an integer")
            if not INT_PARAM_MIN <= value <= INT_PARAM_MAX:
                raise ParamError(name, f"must be between {INT_PARAM_MIN} and {INT_PARAM_MAX}")
            return value
        if kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ParamError(name, "must be a number")
            try:
                number = float(value)
            except OverflowError:  # an integer beyond any double
                raise ParamError(name, "must be a finite number") from None
            if not math.isfinite(number):
                raise ParamError(name, "must be a finite number")
            return number
        if kind == "bool":
            if not isinstance(value, bool):
                raise ParamError(name, "must be true or false")
            return value
        if not isinstance(value, str):
            raise ParamError(name, f"must be a {kind} string")
        try:
            if kind == "date":
                return date.fromisoformat(value).isoformat()
            if kind == "timestamp":
                parsed = datetime.fromisoformat(value)
                offset = parsed.utcoffset()
                if offset is None:
                    raise ParamError(name, "must include a time zone offset (e.g. Z or +02:00)")
                if abs(offset) > MAX_UTC_OFFSET or offset.microseconds:
                    raise ParamError(
                        name, "time zone offset must be whole seconds within ±15:59:59"
                    )
                return parsed.isoformat()
            return str(uuid.UUID(value))
        except ValueError:
            raise ParamError(name, f"is not a valid {kind}: {value[:40]!r}") from None

    def convert(self, value: Any) -> Any:
        """The Python value (date, datetime, UUID…) for a validated JSON value."""
        if value is None:
            return None
        if self.type == "date":
            return date.fromisoformat(value)
        if self.type == "timestamp":
            return datetime.fromisoformat(value)
        if self.type == "uuid":
            return uuid.UUID(value)
        return value


def _encodable(text: str) -> bool:
    """True when `text` is valid Unicode, i.e. can be sent to PostgreSQL as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
