"""The volumes an export writes to, and how much room is left on them.

Two volumes matter (DESIGN §14): the *work* volume, where running steps write
their files (`.work/` under the storage root for the local backend, under
`EXPORTD_WORK_DIR` with S3), and the *storage* volume, where packages are
written and published (the local backend's root; with S3 the bucket, whose
room is not a file system's question, so there is no storage volume).

Both the worker (its free-space floor, `daemon.worker.free_space`) and the
API process (`/metrics`) read them from the settings alone, so the API need
not open the storage backend. The figure is what an unprivileged writer may
still use (`f_bavail`, not `f_bfree`: the blocks reserved for root do not
count), read with one `statvfs` per volume.
"""

from __future__ import annotations

import os
from pathlib import Path

from daemon.config import Settings
from daemon.storage.layout import WORK_DIR

# The label values of exportd_volume_free_bytes, in this order.
VOLUMES = ("work", "storage")


def volume_paths(settings: Settings) -> dict[str, Path]:
    """{volume: a directory on it} for the configured backend."""
    if settings.uses_s3:
        return {"work": settings.work_dir / WORK_DIR}
    return {"work": settings.storage_dir / WORK_DIR, "storage": settings.storage_dir}


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged writer may still put on the volume of `path`.

    A directory not created yet (a fresh install, before the worker's first
    start) is on the volume of its nearest existing parent. None when even
    that cannot be read (a permission problem, a vanished mount).
    """
    current = path.absolute()
    while True:
        try:
            info = os.statvfs(current)
        except (FileNotFoundError, NotADirectoryError):
            if current.parent == current:
                return None
            current = current.parent
            continue
        except OSError:
            return None
        return info.f_bavail * info.f_frsize


def free_space(settings: Settings) -> dict[str, int | None]:
    """{volume: free bytes or None} of every volume of the configuration.
    Blocking (a stalled network mount blocks it): call it from a thread."""
    return {name: free_bytes(path) for name, path in volume_paths(settings).items()}
