-- The channel of job events (daemon/db/listen.py). A trigger of migration
-- 0003 notifies it on every status or progress change of a job.

-- name: listen
LISTEN exportd_job_events
