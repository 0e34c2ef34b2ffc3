-- Runtime statements on exportd.jobs (daemon/store.py is the only caller).
-- Every timestamp takes an optional %(now)s so tests can move the clock.

-- name: insert_job
INSERT INTO exportd.jobs (kind, owner_id, params, priority, max_attempts, idempotency_key,
                          scheduled_at, created_at, updated_at)
VALUES (%(kind)s, %(owner_id)s, %(params)s, %(priority)s, %(max_attempts)s, %(idempotency_key)s,
        coalesce(%(scheduled_at)s, %(now)s, now()), coalesce(%(now)s, now()), coalesce(%(now)s, now()))
RETURNING *

-- name: get_job
SELECT * FROM exportd.jobs WHERE job_id = %(job_id)s

-- name: get_job_by_idempotency_key
SELECT * FROM exportd.jobs WHERE owner_id = %(owner_id)s AND idempotency_key = %(idempotency_key)s

-- name: list_owner_jobs
-- One owner's jobs, newest first. Keyset pagination on (created_at, job_id):
-- pass the last row's values as after_created_at/after_job_id for the next page.
SELECT * FROM exportd.jobs
WHERE owner_id = %(owner_id)s
  AND (%(status)s::exportd.job_status IS NULL OR status = %(status)s::exportd.job_status)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
  AND (%(after_created_at)s::timestamptz IS NULL
       OR (created_at, job_id) < (%(after_created_at)s::timestamptz, %(after_job_id)s::uuid))
ORDER BY created_at DESC, job_id DESC
LIMIT %(limit)s

-- name: list_all_jobs
-- Every owner's jobs (admins), newest first, same keyset as list_owner_jobs.
SELECT * FROM exportd.jobs
WHERE (%(status)s::exportd.job_status IS NULL OR status = %(status)s::exportd.job_status)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
  AND (%(after_created_at)s::timestamptz IS NULL
       OR (created_at, job_id) < (%(after_created_at)s::timestamptz, %(after_job_id)s::uuid))
ORDER BY created_at DESC, job_id DESC
LIMIT %(limit)s

-- name: set_status
-- Compare-and-set when expected_status is given (NULL: any current status).
-- Keeps the timestamps and progress consistent with the new status; the
-- state machine trigger rejects illegal transitions.
UPDATE exportd.jobs SET
    status = %(status)s::exportd.job_status,
    error_message = CASE WHEN %(status)s::exportd.job_status = 'pending' THEN NULL
                         ELSE coalesce(%(error_message)s, error_message) END,
    started_at = CASE WHEN %(status)s::exportd.job_status = 'in_progress'
                      THEN coalesce(%(now)s, now()) ELSE started_at END,
    completed_at = CASE
        WHEN %(status)s::exportd.job_status IN ('completed', 'failed', 'rolled_back', 'cancelled')
            THEN coalesce(completed_at, %(now)s, now())
        WHEN %(status)s::exportd.job_status = 'pending' THEN NULL
        ELSE completed_at END,
    progress_percentage = CASE WHEN %(status)s::exportd.job_status = 'completed' THEN 100
                               WHEN %(status)s::exportd.job_status = 'pending' THEN 0
                               ELSE progress_percentage END,
    steps_completed = CASE WHEN %(status)s::exportd.job_status = 'completed' THEN steps_total
                           WHEN %(status)s::exportd.job_status = 'pending' THEN 0
                           ELSE steps_completed END
WHERE job_id = %(job_id)s
  AND (%(expected_status)s::exportd.job_status IS NULL OR status = %(expected_status)s::exportd.job_status)
RETURNING *

-- name: update_progress
-- Percentage stays below 100 until the job is completed (set_status does that).
UPDATE exportd.jobs SET
    steps_completed = %(steps_completed)s,
    steps_total = %(steps_total)s,
    current_step = %(current_step)s,
    progress_percentage = CASE WHEN %(steps_total)s = 0 THEN 0
                               ELSE least(99, (100 * %(steps_completed)s) / %(steps_total)s) END
WHERE job_id = %(job_id)s AND status IN ('in_progress', 'cancelling')
RETURNING status

-- name: packages_due_for_expiry
-- Live packages whose retention has passed, oldest first, one batch at a time.
SELECT job_id, package_path, package_expires_at FROM exportd.jobs
WHERE package_path IS NOT NULL AND package_expires_at <= coalesce(%(now)s, now())
ORDER BY package_expires_at
LIMIT %(limit)s
