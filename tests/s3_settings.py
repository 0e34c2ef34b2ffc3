"""Settings for exportd on the test S3 server: `EXPORTD_STORAGE_URL=s3://…`
with credentials in the standard AWS variables, as an operator sets them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from daemon.config import Settings
from tests.helpers import fast_settings
from tests.s3_server import SeaweedServer

PREFIX = "exports/prod"


def s3_settings(
    tmp_path: Path,
    server: SeaweedServer,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    **overrides: Any,
) -> Settings:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
    values: dict[str, Any] = {
        "storage_url": f"s3://{bucket}/{PREFIX}",
        "s3_endpoint_url": server.endpoint_url,
        "s3_region": server.region,
        **overrides,
    }
    return replace(fast_settings(tmp_path), **values)


def s3_env(server: SeaweedServer, bucket: str) -> dict[str, str]:
    """The same, as environment variables for an exportd process."""
    return {
        "EXPORTD_STORAGE_URL": f"s3://{bucket}/{PREFIX}",
        "EXPORTD_S3_ENDPOINT_URL": server.endpoint_url,
        "EXPORTD_S3_REGION": server.region,
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
    }


def object_keys(server: SeaweedServer, bucket: str) -> list[str]:
    pages = server.client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def pending_uploads(server: SeaweedServer, bucket: str) -> list[Any]:
    return list(server.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))
