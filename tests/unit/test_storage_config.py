"""The storage and link settings of DESIGN §10/§11: what is accepted, what
stops the program with one line naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import load_settings
from daemon.errors import ConfigError
from daemon.storage.local import LocalStorage
from daemon.storage.select import open_storage


def test_the_default_is_the_local_directory(tmp_path: Path) -> None:
    settings = load_settings({"EXPORTD_DATA_DIR": str(tmp_path)})
    assert settings.storage_url is None and not settings.uses_s3
    storage = open_storage(settings)
    assert isinstance(storage, LocalStorage) and storage.root == (tmp_path / "packages").resolve()
    assert settings.work_dir == tmp_path / "work"


def test_a_file_url_is_the_storage_directory(tmp_path: Path) -> None:
    settings = load_settings({"EXPORTD_STORAGE_URL": f"file://{tmp_path}/pk"})
    assert settings.storage_dir == tmp_path / "pk"
    same = load_settings(
        {
            "EXPORTD_STORAGE_URL": f"file://{tmp_path}/pk",
            "EXPORTD_STORAGE_DIR": str(tmp_path / "pk"),
        }
    )
    assert same.storage_dir == tmp_path / "pk"
    with pytest.raises(ConfigError) as info:
        load_settings(
            {"EXPORTD_STORAGE_URL": f"file://{tmp_path}/a", "EXPORTD_STORAGE_DIR": str(tmp_path)}
        )
    assert info.value.variable == "EXPORTD_STORAGE_URL"


def test_an_s3_url_selects_the_bucket_without_a_request(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "EXPORTD_DATA_DIR": str(tmp_path),
            "EXPORTD_STORAGE_URL": "s3://acme-exports/exportd/prod",
            "EXPORTD_S3_ENDPOINT_URL": "http://127.0.0.1:1",  # nothing listens: no call made
            "EXPORTD_S3_REGION": "eu-central-1",
        }
    )
    storage = open_storage(settings)
    assert storage.name == "s3" and settings.uses_s3
    assert storage.work_root == (tmp_path / "work" / ".work").resolve()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EXPORTD_STORAGE_URL", "s3://"),
        ("EXPORTD_STORAGE_URL", "s3://Bad_Bucket/x"),
        ("EXPORTD_STORAGE_URL", "s3://bucket/../up"),
        ("EXPORTD_STORAGE_URL", "file://relative/path"),
        ("EXPORTD_STORAGE_URL", "ftp://host/x"),
        ("EXPORTD_STORAGE_URL", "/var/lib/exportd"),
        ("EXPORTD_S3_ENDPOINT_URL", "seaweed:8333"),
        ("EXPORTD_S3_ENDPOINT_URL", "http://host:99999"),
        ("EXPORTD_S3_ENDPOINT_URL", "http://host/?x=1"),
        ("EXPORTD_S3_URL_TTL", "0"),
        ("EXPORTD_S3_URL_TTL", "604801"),
        ("EXPORTD_S3_DOWNLOAD", "stream"),
        ("EXPORTD_PUBLIC_URL", "exports.example.com"),
        ("EXPORTD_PUBLIC_URL", "javascript:alert(1)"),
        ("EXPORTD_LINK_SECRET", "short"),
        ("EXPORTD_LINK_SECRET", "change-me-to-a-long-random-secret-of-at-least-32-bytes"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({variable: value})
    assert info.value.variable == variable
    if "SECRET" in variable:
        assert value not in str(info.value)


def test_the_public_url_defaults_to_where_the_api_listens() -> None:
    assert load_settings({}).base_url == "http://127.0.0.1:8000"
    assert load_settings({"EXPORTD_HOST": "::1", "EXPORTD_PORT": "9"}).base_url == "http://[::1]:9"
    given = load_settings({"EXPORTD_PUBLIC_URL": "https://exports.example.com/"})
    assert given.base_url == "https://exports.example.com"
