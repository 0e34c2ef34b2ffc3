-- 0002 views: what an operator reads with psql. They join exportd's tables
-- with procrastinate's (applied before exportd's migrations), so the queue
-- state and the worker heartbeat are visible next to the job.

-- One row per job with its queue entry and the worker holding it.
CREATE OR REPLACE VIEW exportd.job_overview AS
SELECT
    j.job_id,
    j.kind,
    j.owner_id,
    j.status,
    j.run,
    j.attempts,
    j.max_attempts,
    j.progress_percentage,
    j.steps_completed,
    j.steps_total,
    j.current_step,
    j.error_message,
    j.priority,
    now() - j.created_at                  AS age,
    j.created_at,
    j.scheduled_at,
    j.started_at,
    j.completed_at,
    j.queue_job_id,
    q.status                              AS queue_status,
    q.queue_name,
    q.attempts                            AS queue_attempts,
    q.worker_id,
    w.last_heartbeat                      AS worker_last_heartbeat,
    now() - w.last_heartbeat              AS worker_heartbeat_age,
    j.package_path IS NOT NULL            AS package_live,
    j.package_size_bytes,
    j.package_expires_at,
    j.download_count
FROM exportd.jobs j
LEFT JOIN procrastinate_jobs q ON q.id = j.queue_job_id
LEFT JOIN procrastinate_workers w ON w.id = q.worker_id;

-- Counts per kind and status, with the age of the oldest job in each group
-- (for pending: how long the queue has been waiting).
CREATE OR REPLACE VIEW exportd.queue_health AS
SELECT
    j.kind,
    j.status,
    count(*)                                        AS jobs,
    now() - min(j.created_at)                       AS oldest_age,
    now() - min(j.scheduled_at) FILTER (WHERE j.status = 'pending' AND j.scheduled_at <= now())
                                                    AS oldest_due_pending_age,
    count(*) FILTER (WHERE j.status = 'pending' AND j.scheduled_at > now())
                                                    AS scheduled_later
FROM exportd.jobs j
GROUP BY j.kind, j.status;

-- Running exports per worker, with the worker's heartbeat age.
CREATE OR REPLACE VIEW exportd.worker_health AS
SELECT
    w.id                          AS worker_id,
    w.last_heartbeat,
    now() - w.last_heartbeat      AS heartbeat_age,
    count(j.job_id)               AS running_jobs,
    array_remove(array_agg(j.job_id ORDER BY j.started_at), NULL) AS job_ids
FROM procrastinate_workers w
LEFT JOIN procrastinate_jobs q ON q.worker_id = w.id AND q.status = 'doing'
LEFT JOIN exportd.jobs j ON j.queue_job_id = q.id AND j.status IN ('in_progress', 'cancelling')
GROUP BY w.id, w.last_heartbeat;

-- Running exports whose worker stopped heartbeating (30 s, procrastinate's
-- stalled threshold) or is gone altogether.
CREATE OR REPLACE VIEW exportd.stalled_jobs AS
SELECT
    j.job_id,
    j.kind,
    j.owner_id,
    j.status,
    j.run,
    j.attempts,
    j.max_attempts,
    j.started_at,
    j.queue_job_id,
    q.worker_id,
    w.last_heartbeat              AS worker_last_heartbeat,
    now() - w.last_heartbeat      AS worker_heartbeat_age
FROM exportd.jobs j
LEFT JOIN procrastinate_jobs q ON q.id = j.queue_job_id
LEFT JOIN procrastinate_workers w ON w.id = q.worker_id
WHERE j.status IN ('in_progress', 'cancelling')
  AND (w.id IS NULL OR w.last_heartbeat < now() - interval '30 seconds');

-- Live packages per owner: how many, how many bytes, what expires next.
CREATE OR REPLACE VIEW exportd.package_usage AS
SELECT
    j.owner_id,
    count(*)                        AS live_packages,
    sum(j.package_size_bytes)       AS total_bytes,
    min(j.package_expires_at)       AS next_expires_at,
    max(j.package_expires_at)       AS last_expires_at,
    sum(j.download_count)           AS downloads
FROM exportd.jobs j
WHERE j.package_path IS NOT NULL
GROUP BY j.owner_id;
