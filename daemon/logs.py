"""Logging to stdout/stderr: plain for a terminal, JSON for journald/collectors.

Records carry `job_id` and `action` (passed as `extra=`) so that output can
be filtered per job; the JSON form emits them as fields.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

CONTEXT_FIELDS = ("job_id", "action", "worker", "kind")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and context."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time level logger: message [job_id=… action=…]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(
            f"{field}={getattr(record, field)}"
            for field in CONTEXT_FIELDS
            if getattr(record, field, None) is not None
        )
        return f"{text} [{context}]" if context else text


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # procrastinate logs every job start and end at INFO; exportd logs its own
    # attempts with the job id, so keep only its warnings and errors.
    logging.getLogger("procrastinate").setLevel(max(level, logging.WARNING))
    # botocore (S3 storage) announces at INFO where it found credentials, at
    # every start: a line before any error of `exportd worker`'s start.
    logging.getLogger("botocore").setLevel(max(level, logging.WARNING))
