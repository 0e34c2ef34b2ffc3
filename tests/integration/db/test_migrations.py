"""Migrations on a real server: up, up again, down and up, edits, concurrency,
and procrastinate's upgrade path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest

from daemon.db.migrations import Migrator, discover, queue_migration_names
from daemon.db.queries import named_queries, sql_dir
from daemon.errors import MigrationError

EXPORTD = str(Path(sys.executable).with_name("exportd"))

# A catalog snapshot: everything a migration can create, by definition, in a
# stable order (OIDs and creation order do not matter, definitions do).
SNAPSHOT_QUERIES = {
    "columns": """
        SELECT table_schema, table_name, column_name, data_type, udt_name, is_nullable,
               column_default, character_maximum_length
        FROM information_schema.columns
        WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
        ORDER BY 1, 2, 3""",
    "constraints": """
        SELECT n.nspname, c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
        FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
        ORDER BY 1, 2, 3""",
    "indexes": """
        SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2, 3""",
    "views": """
        SELECT schemaname, viewname, definition FROM pg_views
        WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2""",
    "functions": """
        SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid),
               pg_get_functiondef(p.oid)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND p.prokind IN ('f', 'p')
        ORDER BY 1, 2, 3""",
    "triggers": """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE NOT t.tgisinternal ORDER BY 1, 2""",
    "enums": """
        SELECT n.nspname, t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder)::text
        FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
        JOIN pg_namespace n ON n.oid = t.typnamespace
        GROUP BY 1, 2 ORDER BY 1, 2""",
    "comments": """
        SELECT c.relname, d.objsubid, d.description
        FROM pg_description d JOIN pg_class c ON c.oid = d.objoid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'exportd' ORDER BY 1, 2""",
}


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, list[Any]]:
    return {name: conn.execute(query).fetchall() for name, query in SNAPSHOT_QUERIES.items()}


def test_up_on_empty_database_creates_everything(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        ran = Migrator(conn).upgrade()
        assert ran[0].startswith("procrastinate schema")
        assert ran[1:] == [m.label for m in discover()]
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'exportd'"
            )
        }
        assert {
            "jobs",
            "job_attempts",
            "downloads",
            "schema_migrations",
            "queue_migrations",
            "job_overview",
            "queue_health",
            "worker_health",
            "stalled_jobs",
            "package_usage",
        } <= tables
        assert conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone() == (
            "procrastinate_jobs",
        )
        recorded = [r[0] for r in conn.execute("SELECT name FROM exportd.queue_migrations")]
        assert sorted(recorded) == queue_migration_names()
        assert Migrator(conn).is_current()


def test_up_twice_is_a_no_op(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        Migrator(conn).upgrade()
        before = snapshot(conn)
        applied = conn.execute(
            "SELECT version, applied_at FROM exportd.schema_migrations"
        ).fetchall()
        assert Migrator(conn).upgrade() == []
        assert snapshot(conn) == before
        assert (
            conn.execute("SELECT version, applied_at FROM exportd.schema_migrations").fetchall()
            == applied
        )


def test_each_up_file_is_idempotent_on_its_own(empty_db_url: str) -> None:
    """Running an up file a second time (outside the runner), on the schema it
    was written for, changes nothing. (Not after the migrations that follow
    it: re-running 0002 once 0009 gave `queue_health` more columns would try
    to take them away — superseding it is what 0009 is for.)"""
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrations = discover()
        for count, migration in enumerate(migrations, start=1):
            Migrator(conn, migrations[:count]).upgrade()
            before = snapshot(conn)
            conn.execute(migration.up_sql.encode())
            assert snapshot(conn) == before, migration.label


def test_down_to_zero_then_up_leaves_an_identical_schema(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrator = Migrator(conn)
        migrator.upgrade()
        before = snapshot(conn)
        rolled = migrator.downgrade(0)
        assert rolled == [m.label for m in reversed(discover())]
        assert conn.execute("SELECT to_regclass('exportd.jobs')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM exportd.schema_migrations").fetchone() == (0,)
        assert leftovers(conn) == {
            "queue_migrations",
            "queue_migrations_pkey",
            "schema_migrations",
            "schema_migrations_pkey",
        }
        # procrastinate's schema is not exportd's to roll back
        assert conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone() is not None
        migrator.upgrade()
        assert snapshot(conn) == before


def leftovers(conn: psycopg.Connection[Any]) -> set[str]:
    """Names of every relation, type and function left in schema exportd."""
    rows = conn.execute(
        """
        SELECT relname FROM pg_class WHERE relnamespace = 'exportd'::regnamespace
        UNION ALL
        SELECT typname FROM pg_type WHERE typnamespace = 'exportd'::regnamespace
          AND typrelid = 0 AND typname NOT LIKE '\\_%'
        UNION ALL
        SELECT proname FROM pg_proc WHERE pronamespace = 'exportd'::regnamespace
        """
    ).fetchall()
    return {str(r[0]) for r in rows}


def test_each_down_then_up_is_identical(empty_db_url: str) -> None:
    """Every single step back and forth, not only the full round trip."""
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrator = Migrator(conn)
        migrator.upgrade()
        full = snapshot(conn)
        for migration in reversed(discover()):
            migrator.downgrade(migration.version - 1)
            migrator.upgrade()
            assert snapshot(conn) == full, migration.label


def test_down_to_a_version_keeps_earlier_ones(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrator = Migrator(conn)
        migrator.upgrade()
        migrator.downgrade(1)
        states = {s.version: s.state for s in migrator.status()}
        assert states[1] == "applied" and len(states) >= 4
        assert all(state == "pending" for version, state in states.items() if version > 1)
        assert conn.execute("SELECT to_regclass('exportd.jobs')").fetchone() == ("exportd.jobs",)
        assert conn.execute("SELECT to_regclass('exportd.job_overview')").fetchone() == (None,)
        assert not migrator.is_current()


def test_edited_migration_is_refused(empty_db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    shutil.copytree(sql_dir() / "migrations", folder)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        Migrator(conn, discover(folder)).upgrade()
        target = folder / "0002_views.up.sql"
        target.write_text(target.read_text() + "\n-- an innocent edit\n")
        with pytest.raises(
            MigrationError, match=r"0002_views\.up\.sql was edited after it was applied"
        ):
            Migrator(conn, discover(folder)).upgrade()
        states = {s.name: s.state for s in Migrator(conn, discover(folder)).status()}
        assert states["views"] == "changed"


def test_unknown_applied_migration_is_refused(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO exportd.schema_migrations (version, name, checksum) "
            "VALUES (999, 'future', 'x')"
        )
        with pytest.raises(MigrationError, match="0999_future, which this exportd does not know"):
            Migrator(conn).upgrade()
        assert {s.version: s.state for s in Migrator(conn).status()}[999] == "unknown"


def test_failing_migration_rolls_back_its_transaction(empty_db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    shutil.copytree(sql_dir() / "migrations", folder)
    (folder / "0099_broken.up.sql").write_text(
        "CREATE TABLE exportd.half_done (id int);\nSELECT no_such_function();\n"
    )
    (folder / "0099_broken.down.sql").write_text("DROP TABLE IF EXISTS exportd.half_done;\n")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        with pytest.raises(
            MigrationError, match=r"0099_broken\.up\.sql: function no_such_function"
        ):
            Migrator(conn, discover(folder)).upgrade()
        assert conn.execute("SELECT to_regclass('exportd.half_done')").fetchone() == (None,)
        versions = [r[0] for r in conn.execute("SELECT version FROM exportd.schema_migrations")]
        assert versions == [m.version for m in discover()]


def test_missing_down_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.up.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="0001_a has no down file"):
        discover(tmp_path)


def test_concurrent_migrate_processes_are_safe(empty_db_url: str) -> None:
    env = {**os.environ, "EXPORTD_DATABASE_URL": empty_db_url}
    procs = [
        subprocess.Popen(
            [EXPORTD, "migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    applied_lines = [
        line for out, _ in outputs for line in out.splitlines() if line.startswith("applied 0001")
    ]
    assert len(applied_lines) == 1  # exactly one process did the work
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM exportd.schema_migrations").fetchone() == (
            len(discover()),
        )


def test_procrastinate_upgrade_path_matches_fresh_install(empty_db_url: str, db_url: str) -> None:
    """An old procrastinate install (older migrations only) is brought up to the
    installed version by applying the missing migration files in order, and ends
    up with the same queue schema as a fresh install."""
    names = queue_migration_names()
    old = [n for n in names if n < "03.00.00"]  # as deployed by procrastinate 2.x
    migrations = resources.files("procrastinate.sql") / "migrations"
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        for name in old:
            conn.execute((migrations / name).read_bytes())
        conn.execute(named_queries("migrations")["bootstrap"])
        for name in old:
            conn.execute("INSERT INTO exportd.queue_migrations (name) VALUES (%s)", (name,))
        ran = Migrator(conn).upgrade()
        assert [r for r in ran if r.startswith("procrastinate")] == [
            f"procrastinate {n.removesuffix('.sql')}" for n in names if n not in old
        ]
        upgraded = queue_schema(conn)
    with psycopg.connect(db_url) as fresh:
        assert queue_schema(fresh) == upgraded


def queue_schema(conn: psycopg.Connection[Any]) -> dict[str, list[Any]]:
    """procrastinate's tables, columns, indexes and function signatures."""
    snap = snapshot(conn)
    return {
        "columns": sorted(r[1:6] for r in snap["columns"] if str(r[1]).startswith("procrastinate")),
        "indexes": sorted(r[2:] for r in snap["indexes"] if str(r[1]).startswith("procrastinate")),
        "functions": sorted(
            r[1:3] for r in snap["functions"] if str(r[1]).startswith("procrastinate")
        ),
        "enums": [r for r in snap["enums"] if str(r[1]).startswith("procrastinate")],
    }


def test_adopting_unrecorded_procrastinate_tables_is_refused(empty_db_url: str) -> None:
    schema = (resources.files("procrastinate.sql") / "schema.sql").read_bytes()
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(schema)
        with pytest.raises(MigrationError, match="no record of their version"):
            Migrator(conn).upgrade()
