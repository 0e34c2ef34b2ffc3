"""Test harness: one PostgreSQL server per session, a migrated template
database built once, and a fresh copy of it for every test that asks.

The server is the embedded one (the same code `exportd up` uses), unless
`EXPORTD_TEST_DATABASE_URL` points at another server (a superuser, or a role
with CREATEDB, is needed). Databases are created and copied with
pytest-postgresql's `DatabaseJanitor`.

Tests of the S3 backend get a real S3 server the same way: SeaweedFS started
once per session on loopback (`tests/s3_server.py`), and a bucket per test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pytest_postgresql.janitor import DatabaseJanitor

from daemon.db.embedded import EmbeddedPostgres
from daemon.db.migrations import Migrator

if TYPE_CHECKING:
    from tests.s3_server import SeaweedServer

# Durability is not what the tests check; these make them several times faster.
TEST_SERVER_OPTIONS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


@dataclass(frozen=True)
class PgServer:
    """Connection facts of the session's server, in the shape the janitor wants."""

    conninfo: str  # points at the maintenance database

    @property
    def params(self) -> dict[str, Any]:
        return conninfo_to_dict(self.conninfo)

    def url(self, dbname: str) -> str:
        return make_conninfo(self.conninfo, dbname=dbname)

    def janitor(self, dbname: str, **kwargs: Any) -> DatabaseJanitor:
        p = self.params
        return DatabaseJanitor(
            user=str(p.get("user") or "postgres"),
            host=str(p.get("host") or "localhost"),
            port=str(p.get("port") or 5432),
            password=p.get("password"),
            dbname=dbname,
            maintenance_dbname=str(p.get("dbname") or "postgres"),
            **kwargs,
        )


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    external = os.environ.get("EXPORTD_TEST_DATABASE_URL")
    if external:
        yield PgServer(external)
        return
    base = Path(tmp_path_factory.mktemp("pgserver"))
    with EmbeddedPostgres(base / "pg", server_options=TEST_SERVER_OPTIONS) as server:
        yield PgServer(server.url("postgres"))


def _migrate(**kwargs: Any) -> None:
    """pytest-postgresql loader: builds the template with `exportd migrate`."""
    kwargs.pop("autocommit", None)
    with psycopg.connect(**kwargs, autocommit=True) as conn:
        Migrator(conn).upgrade()


@pytest.fixture(scope="session")
def template_db(pg_server: PgServer) -> Iterator[str]:
    """Name of a database with every migration applied, used as a template."""
    name = f"exportd_tmpl_{uuid.uuid4().hex[:8]}"
    janitor = pg_server.janitor(name, as_template=True)
    with janitor:
        janitor.load(_migrate)
        yield name


@pytest.fixture
def db_url(pg_server: PgServer, template_db: str) -> Iterator[str]:
    """A fresh, fully migrated database for this test; dropped afterwards."""
    name = f"exportd_test_{uuid.uuid4().hex[:12]}"
    with pg_server.janitor(name, template_dbname=template_db):
        yield pg_server.url(name)


@pytest.fixture
def empty_db_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh database with nothing in it (for migration tests)."""
    name = f"exportd_empty_{uuid.uuid4().hex[:12]}"
    with pg_server.janitor(name):
        yield pg_server.url(name)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """Autocommit connection to the test's database."""
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A real S3 server (SeaweedFS `weed mini`) on loopback for the session."""
    from tests.s3_server import seaweed  # boto3 is loaded only by sessions that use S3

    with seaweed(Path(tmp_path_factory.mktemp("seaweed"))) as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: SeaweedServer) -> Iterator[str]:
    """A fresh, empty bucket for this test; dropped with its contents afterwards."""
    name = s3_server.create_bucket()
    try:
        yield name
    finally:
        s3_server.drop_bucket(name)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def aconn(db_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """Async autocommit connection to the test's database."""
    connection = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    try:
        yield connection
    finally:
        await connection.close()


# Directories whose tests each run real processes for seconds.
SLOW_DIRECTORIES = ("tests/e2e/", "tests/faults/", "tests/fuzz/")


def _run_order(item: pytest.Item) -> tuple[bool, bool]:
    path = item.nodeid.replace("\\", "/")
    slow = path.startswith(SLOW_DIRECTORIES) or item.get_closest_marker("slow") is not None
    return "tests/browser/" in path, not slow


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The browser tests run last: Playwright's sync API leaves an event loop
    set on the main thread, which `asyncio.run` in later tests refuses.

    Before them, the slow tests come first (the sort is stable: each
    module's tests keep their order). `make test` hands tests to its worker
    processes one at a time in this order, so the long ones start early and
    the short ones fill the gaps: the run does not end with one worker busy
    on a long test while the other is idle."""
    items.sort(key=_run_order)
