"""The storage backend the settings name: `open_storage(settings)`."""

from __future__ import annotations

from daemon.config import Settings
from daemon.storage.backend import Storage
from daemon.storage.local import LocalStorage, WorkArea


def open_storage(settings: Settings) -> Storage:
    """The local directory, or the S3 bucket of `EXPORTD_STORAGE_URL`.

    Builds the client only (no request is made): `Storage.ensure()` is the
    check that the store answers, run where a failure should stop a process.
    """
    if settings.uses_s3:
        assert settings.storage_url is not None
        # Imported here: boto3 costs ~0.3 s and 30 MB, which local setups skip.
        from daemon.storage.s3 import S3Storage
        from daemon.storage.s3_backend import S3PackageStorage

        s3 = S3Storage.from_url(
            settings.storage_url,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
        )
        return S3PackageStorage(s3, WorkArea(settings.work_dir))
    return LocalStorage(settings.storage_dir)
