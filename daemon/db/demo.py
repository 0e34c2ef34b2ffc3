"""The demo data `exportd up` creates: `demo.orders` with rows for a few owners."""

from __future__ import annotations

from collections.abc import Iterable

from daemon.db.connect import SyncConnection
from daemon.db.queries import named_queries

Q = named_queries("demo")


def install_demo_data(conn: SyncConnection, owners: Iterable[str]) -> None:
    """Create and fill the demo schema (idempotent), in one transaction."""
    with conn.transaction():
        conn.execute(Q["demo_schema"])
        conn.execute(Q["demo_seed"], {"owners": sorted(set(owners))})
