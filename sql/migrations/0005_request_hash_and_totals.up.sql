-- 0005: what an idempotent replay is compared with, and where the worker's
-- retention work is counted so that any API process can report it.
--
-- jobs.request_hash: sha256 of the create request as the client sent it
-- (daemon/actions.py `request_hash`). A replay of the same Idempotency-Key
-- compares it instead of the stored, normalised values (a float parameter of
-- 1e23 comes back from jsonb as another number; delay_seconds is not stored).
-- NULL on rows written before this migration: those replays fall back to
-- comparing the stored values.
ALTER TABLE exportd.jobs ADD COLUMN IF NOT EXISTS request_hash text NULL;

DO $$
BEGIN
    ALTER TABLE exportd.jobs ADD CONSTRAINT jobs_request_hash_hex
        CHECK (request_hash ~ '^[0-9a-f]{64}$');
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

-- maintenance_totals: cumulative counts of the cleanup runs (packages
-- deleted, bytes freed, rows pruned, …), one row per figure, added to by one
-- statement at the end of every run (daemon/db/metrics.py). GET /metrics
-- reads them at scrape time as the exportd_cleanup_*_total counters.
CREATE TABLE IF NOT EXISTS exportd.maintenance_totals (
    name       text PRIMARY KEY CONSTRAINT maintenance_totals_name CHECK (name ~ '^[a-z][a-z_]{0,62}$'),
    total      bigint NOT NULL DEFAULT 0 CONSTRAINT maintenance_totals_nonnegative CHECK (total >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE exportd.maintenance_totals IS
    'Cumulative figures of every cleanup run (exportd_cleanup_*_total on /metrics)';
