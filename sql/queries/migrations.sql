-- Statements of the migration runner (daemon/db/migrations.py).

-- name: bootstrap
-- The runner's own bookkeeping; created before any numbered migration runs.
CREATE SCHEMA IF NOT EXISTS exportd;
CREATE TABLE IF NOT EXISTS exportd.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS exportd.queue_migrations (
    name       text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: lock
-- Serialises concurrent `exportd migrate` runs (session-level advisory lock).
SELECT pg_advisory_lock(7368121504957734)

-- name: unlock
SELECT pg_advisory_unlock(7368121504957734)

-- name: bookkeeping_exists
SELECT to_regclass('exportd.schema_migrations') IS NOT NULL
   AND to_regclass('exportd.queue_migrations') IS NOT NULL

-- name: applied_migrations
SELECT version, name, checksum, applied_at FROM exportd.schema_migrations ORDER BY version

-- name: record_migration
INSERT INTO exportd.schema_migrations (version, name, checksum) VALUES (%(version)s, %(name)s, %(checksum)s)

-- name: forget_migration
DELETE FROM exportd.schema_migrations WHERE version = %(version)s

-- name: applied_queue_migrations
SELECT name FROM exportd.queue_migrations ORDER BY name

-- name: record_queue_migration
INSERT INTO exportd.queue_migrations (name) VALUES (%(name)s) ON CONFLICT (name) DO NOTHING

-- name: queue_tables_exist
SELECT to_regclass('procrastinate_jobs') IS NOT NULL

-- name: limit_readiness_check
-- /readyz answers within seconds even when the catalog is locked.
SET statement_timeout = '2s'
