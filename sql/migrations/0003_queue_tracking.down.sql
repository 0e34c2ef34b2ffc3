-- Reverts 0003: the queue trigger, change notifications and request_cancel.
DROP FUNCTION IF EXISTS exportd.rescue_lost(bigint, timestamptz);
DROP FUNCTION IF EXISTS exportd.request_cancel(uuid);
DROP TRIGGER IF EXISTS jobs_notify ON exportd.jobs;
DROP FUNCTION IF EXISTS exportd.jobs_notify();
DROP TRIGGER IF EXISTS exportd_queue_job_started ON procrastinate_jobs;
DROP FUNCTION IF EXISTS exportd.queue_job_started();
