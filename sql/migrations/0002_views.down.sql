-- Reverts 0002: the inspection views only; no data is lost.
DROP VIEW IF EXISTS exportd.package_usage;
DROP VIEW IF EXISTS exportd.stalled_jobs;
DROP VIEW IF EXISTS exportd.worker_health;
DROP VIEW IF EXISTS exportd.queue_health;
DROP VIEW IF EXISTS exportd.job_overview;
