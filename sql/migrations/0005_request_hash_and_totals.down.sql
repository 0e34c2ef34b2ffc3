-- Reverts 0005: replays of older jobs fall back to comparing stored values,
-- and the cleanup totals are lost (counters restart at 0, as after a reset).
DROP TABLE IF EXISTS exportd.maintenance_totals;
ALTER TABLE exportd.jobs DROP CONSTRAINT IF EXISTS jobs_request_hash_hex;
ALTER TABLE exportd.jobs DROP COLUMN IF EXISTS request_hash;
