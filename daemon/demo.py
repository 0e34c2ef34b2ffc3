"""The demo `exportd up` sets up when no exports file is configured.

It creates `demo.orders` with rows for a few owners (the current user among
them) and copies the demo exports file to `$EXPORTD_DATA_DIR/demo-exports.toml`.
Any exportd command using that data directory without EXPORTD_EXPORTS_FILE
loads it too, so `exportd export orders --wait` works from a second terminal.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg

from daemon.config import Settings
from daemon.sqlfiles import named_queries

DEMO_OWNERS = ("alice", "bob")
TEMPLATE = Path(__file__).parent / "demo" / "exports.toml"


def demo_exports_file(settings: Settings) -> Path:
    return settings.data_dir / "demo-exports.toml"


def install_demo(
    conn: psycopg.Connection[tuple[object, ...]], settings: Settings, owner: str
) -> Path:
    """Create and fill the demo schema (idempotent); return the demo exports file."""
    q = named_queries("demo")
    with conn.transaction():
        conn.execute(q["demo_schema"])
        conn.execute(q["demo_seed"], {"owners": sorted({owner, *DEMO_OWNERS})})
    target = demo_exports_file(settings)
    shutil.copyfile(TEMPLATE, target)
    return target
