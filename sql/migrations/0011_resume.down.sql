-- Reverts 0011: attempts no longer record where they resumed, and the record
-- of ended runs goes (checkpoints still in storage are the orphan sweep's).
DROP TABLE IF EXISTS exportd.ended_runs;
ALTER TABLE exportd.job_attempts DROP COLUMN IF EXISTS resumed_from_step;
