-- Reverts 0001: drops exportd's tables, types and functions (all job data!).
DROP TABLE IF EXISTS exportd.downloads;
DROP TABLE IF EXISTS exportd.job_attempts;
DROP TABLE IF EXISTS exportd.jobs;
DROP FUNCTION IF EXISTS exportd.jobs_check_status();
DROP FUNCTION IF EXISTS exportd.jobs_touch_updated_at();
DROP FUNCTION IF EXISTS exportd.job_status_transition_allowed(exportd.job_status, exportd.job_status, boolean);
DROP TYPE IF EXISTS exportd.attempt_outcome;
DROP TYPE IF EXISTS exportd.job_status;
