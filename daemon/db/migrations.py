"""Schema migrations: procrastinate's queue schema, then exportd's own.

exportd's migrations are `sql/migrations/NNNN_name.up.sql` / `.down.sql`
pairs. Each runs in its own transaction and is recorded with the sha256 of its
up file in `exportd.schema_migrations`; a file edited after it was applied is
refused rather than silently re-run.

procrastinate's schema comes from the installed procrastinate package, never
copied here: a fresh database gets its `schema.sql`, and every migration file
procrastinate ships is recorded in `exportd.queue_migrations`; after an upgrade
of procrastinate the files not yet recorded are applied in order.

A session-level advisory lock makes concurrent `exportd migrate` runs safe:
the second waits, then finds nothing left to do.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from importlib import resources
from pathlib import Path

import psycopg

from daemon.db.connect import connect, translated_errors
from daemon.db.queries import named_queries, sql_dir
from daemon.errors import MigrationError

Q = named_queries("migrations")
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(up|down)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One numbered pair of migration files."""

    version: int
    name: str
    up_path: Path
    down_path: Path

    @cached_property
    def up_sql(self) -> str:
        return self.up_path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.up_sql.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True)
class MigrationState:
    """A migration as `exportd migrate --status` reports it."""

    version: int
    name: str
    state: str  # "applied", "pending", "changed" (file edited) or "unknown" (no file)
    applied_at: datetime | None


def discover(directory: Path | None = None) -> list[Migration]:
    """All migrations in version order; every up file needs its down file."""
    directory = directory or sql_dir() / "migrations"
    found: dict[int, dict[str, Path]] = {}
    names: dict[int, str] = {}
    for path in sorted(directory.iterdir()):
        match = _FILE.match(path.name)
        if match is None:
            if path.suffix == ".sql":
                raise MigrationError(
                    f"{path.name}: not named NNNN_name.up.sql or NNNN_name.down.sql"
                )
            continue
        version, name, direction = int(match[1]), match[2], match[3]
        if names.setdefault(version, name) != name:
            raise MigrationError(f"two migrations share version {version:04d}")
        found.setdefault(version, {})[direction] = path
    migrations = []
    for version in sorted(found):
        pair = found[version]
        if set(pair) != {"up", "down"}:
            missing = ({"up", "down"} - set(pair)).pop()
            raise MigrationError(f"migration {version:04d}_{names[version]} has no {missing} file")
        migrations.append(Migration(version, names[version], pair["up"], pair["down"]))
    return migrations


def queue_migration_names() -> list[str]:
    """procrastinate's migration files, in the order they must run."""
    folder = resources.files("procrastinate.sql") / "migrations"
    return sorted(item.name for item in folder.iterdir() if item.name.endswith(".sql"))


def _queue_sql(name: str) -> bytes:
    base = resources.files("procrastinate.sql")
    path = base / "schema.sql" if name == "schema.sql" else base / "migrations" / name
    return path.read_bytes()


class Migrator:
    """Applies, rolls back and reports migrations over one autocommit connection."""

    def __init__(
        self,
        conn: psycopg.Connection[tuple[object, ...]],
        migrations: list[Migration] | None = None,
    ) -> None:
        if not conn.autocommit:
            raise ValueError("Migrator needs an autocommit connection (it manages transactions)")
        self.conn = conn
        self.migrations = discover() if migrations is None else migrations

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.conn.execute(Q["lock"])
        try:
            self.conn.execute(Q["bootstrap"])
            yield
        finally:
            self.conn.execute(Q["unlock"])

    def _applied(self) -> dict[int, tuple[str, str, datetime]]:
        rows = self.conn.execute(Q["applied_migrations"]).fetchall()
        return {int(str(v)): (str(n), str(c), a) for v, n, c, a in rows if isinstance(a, datetime)}

    # -- up ----------------------------------------------------------------

    def upgrade(self) -> list[str]:
        """Apply the queue schema and every pending migration; returns what ran."""
        with self._locked():
            ran = self._upgrade_queue()
            applied = self._applied()
            self._check_checksums(applied)
            for migration in self.migrations:
                if migration.version in applied:
                    continue
                try:
                    with self.conn.transaction():
                        self.conn.execute(migration.up_sql.encode())
                        self.conn.execute(
                            Q["record_migration"],
                            {
                                "version": migration.version,
                                "name": migration.name,
                                "checksum": migration.checksum,
                            },
                        )
                except psycopg.Error as exc:
                    raise MigrationError(f"{migration.up_path.name}: {_first_line(exc)}") from None
                ran.append(migration.label)
            return ran

    def _check_checksums(self, applied: dict[int, tuple[str, str, datetime]]) -> None:
        known = {m.version: m for m in self.migrations}
        for version, (name, checksum, _) in applied.items():
            migration = known.get(version)
            if migration is None:
                raise MigrationError(
                    f"the database has migration {version:04d}_{name}, which this exportd does not "
                    "know; run a newer exportd"
                )
            if migration.checksum != checksum:
                raise MigrationError(
                    f"{migration.up_path.name} was edited after it was applied "
                    f"(recorded sha256 {checksum[:12]}…, file {migration.checksum[:12]}…); "
                    "restore the file and put the change in a new migration"
                )

    def _upgrade_queue(self) -> list[str]:
        available = queue_migration_names()
        applied = {str(row[0]) for row in self.conn.execute(Q["applied_queue_migrations"])}
        if not applied:
            exists = self.conn.execute(Q["queue_tables_exist"]).fetchone()
            if exists and exists[0]:
                raise MigrationError(
                    "procrastinate's tables already exist but exportd has no record of their "
                    "version; migrate them with procrastinate to its installed version, then "
                    "record its migration file names in exportd.queue_migrations"
                )
            self._run_queue_step("schema.sql", record=available)
            return [f"procrastinate schema ({available[-1].removesuffix('.sql')})"]
        ran = []
        for name in available:
            if name not in applied:
                self._run_queue_step(name, record=[name])
                ran.append(f"procrastinate {name.removesuffix('.sql')}")
        return ran

    def _run_queue_step(self, name: str, *, record: list[str]) -> None:
        try:
            with self.conn.transaction():
                self.conn.execute(_queue_sql(name))
                for item in record:
                    self.conn.execute(Q["record_queue_migration"], {"name": item})
        except psycopg.Error as exc:
            raise MigrationError(f"procrastinate {name}: {_first_line(exc)}") from None

    # -- down --------------------------------------------------------------

    def downgrade(self, target: int) -> list[str]:
        """Roll back every applied migration above `target`, newest first."""
        if target < 0:
            raise MigrationError("--down needs a version >= 0")
        with self._locked():
            applied = self._applied()
            known = {m.version: m for m in self.migrations}
            ran = []
            for version in sorted(applied, reverse=True):
                if version <= target:
                    break
                migration = known.get(version)
                if migration is None:
                    raise MigrationError(f"no down file for applied migration {version:04d}")
                try:
                    with self.conn.transaction():
                        self.conn.execute(migration.down_path.read_bytes())
                        self.conn.execute(Q["forget_migration"], {"version": version})
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"{migration.down_path.name}: {_first_line(exc)}"
                    ) from None
                ran.append(migration.label)
            return ran

    # -- status ------------------------------------------------------------

    def status(self) -> list[MigrationState]:
        """Every migration, known or applied, with its state. Changes nothing."""
        applied: dict[int, tuple[str, str, datetime]] = {}
        exists = self.conn.execute(Q["bookkeeping_exists"]).fetchone()
        if exists and exists[0]:
            applied = self._applied()
        states = []
        for migration in self.migrations:
            record = applied.pop(migration.version, None)
            if record is None:
                states.append(MigrationState(migration.version, migration.name, "pending", None))
            else:
                state = "applied" if record[1] == migration.checksum else "changed"
                states.append(MigrationState(migration.version, migration.name, state, record[2]))
        for version, (name, _, applied_at) in sorted(applied.items()):
            states.append(MigrationState(version, name, "unknown", applied_at))
        return states

    def pending_queue_migrations(self) -> list[str]:
        """procrastinate migration files not yet applied (all, on a fresh database)."""
        exists = self.conn.execute(Q["bookkeeping_exists"]).fetchone()
        if not (exists and exists[0]):
            return queue_migration_names()
        applied = {str(row[0]) for row in self.conn.execute(Q["applied_queue_migrations"])}
        return [name for name in queue_migration_names() if name not in applied]

    def is_current(self) -> bool:
        """True when nothing is pending, changed or unknown (what /readyz asks)."""
        return not self.pending_queue_migrations() and all(
            s.state == "applied" for s in self.status()
        )


def schema_is_current(url: str) -> bool:
    """What /readyz asks: reachable, and every migration applied unchanged."""
    with connect(url, autocommit=True) as conn, translated_errors():
        conn.execute(Q["limit_readiness_check"])
        return Migrator(conn).is_current()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
