"""The demo `exportd up` sets up when no exports file is configured.

It creates `demo.orders` with rows for a few owners (the current user among
them) and copies the demo exports file to `$EXPORTD_DATA_DIR/demo-exports.toml`.
Any exportd command using that data directory without EXPORTD_EXPORTS_FILE
loads it too, so `exportd export orders --wait` works from a second terminal.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from daemon.config import Settings
from daemon.db.connect import SyncConnection
from daemon.db.demo import install_demo_data

DEMO_OWNERS = ("alice", "bob")
TEMPLATE = Path(__file__).parent / "demo_exports.toml"


def demo_exports_file(settings: Settings) -> Path:
    return settings.data_dir / "demo-exports.toml"


def install_demo(conn: SyncConnection, settings: Settings, owner: str) -> Path:
    """Create and fill the demo schema (idempotent); return the demo exports file."""
    install_demo_data(conn, {owner, *DEMO_OWNERS})
    target = demo_exports_file(settings)
    shutil.copyfile(TEMPLATE, target)
    return target
