-- Runtime statements on exportd.jobs (daemon/db/jobs.py is the only caller).
-- Every timestamp takes an optional %(now)s so tests can move the clock.

-- name: create_job
-- The job row and its procrastinate queue entry in ONE statement: they commit
-- together or not at all. The queue entry carries what the worker needs
-- (kind, owner, params, run, max_attempts) so starting costs no extra read.
-- request_hash (migration 0005) is what a replay of the Idempotency-Key is
-- compared with. No row at all when the owner already has max_pending jobs
-- waiting (exportd.may_queue, migration 0009; NULL: no limit): nothing is
-- written, queue entry included. notify_url (migration 0010) was checked
-- against EXPORTD_WEBHOOK_ALLOWED_HOSTS by daemon/actions.py.
WITH new AS (
    SELECT gen_random_uuid() AS job_id, coalesce(%(now)s::timestamptz, now()) AS created_at
     WHERE exportd.may_queue(%(owner_id)s::text, %(max_pending)s::integer)
), queued AS (
    SELECT (procrastinate_defer_jobs_v1(ARRAY[ROW(
        %(queue)s::text, %(task)s::text, %(priority)s::integer, NULL, NULL,
        jsonb_build_object(
            'job_id', new.job_id, 'kind', %(kind)s::text, 'owner_id', %(owner_id)s::text,
            'params', %(params)s::jsonb, 'run', 1, 'max_attempts', %(max_attempts)s::integer,
            'created_at', new.created_at),
        %(scheduled_at)s::timestamptz
    )::procrastinate_job_to_defer_v1]))[1] AS queue_job_id
    FROM new
)
INSERT INTO exportd.jobs (job_id, kind, owner_id, params, priority, max_attempts, idempotency_key,
                          request_hash, scheduled_at, created_at, updated_at, queue_job_id,
                          notify_url)
SELECT new.job_id, %(kind)s::text, %(owner_id)s::text, %(params)s::jsonb,
       %(priority)s::integer, %(max_attempts)s::integer, %(idempotency_key)s::text,
       %(request_hash)s::text,
       coalesce(%(scheduled_at)s::timestamptz, new.created_at), new.created_at, new.created_at,
       queued.queue_job_id, %(notify_url)s::text
  FROM new, queued
RETURNING *

-- name: release_gone_package
-- Before a re-export (same transaction as retry_job): a completed job whose
-- package the download already refuses as gone — past package_expires_at
-- while the cleanup has not deleted it yet, or marked deleted — but whose row
-- still points at a file lets go of it, as the expiry would: package_path
-- NULL, package_deleted_at set. The file, referenced by no row, is removed by
-- the orphan sweep once the new run has ended. A live package is untouched.
UPDATE exportd.jobs
   SET package_path = NULL,
       package_deleted_at = coalesce(package_deleted_at, %(now)s::timestamptz, now())
 WHERE job_id = %(job_id)s
   AND status = 'completed'
   AND package_path IS NOT NULL
   AND (package_deleted_at IS NOT NULL
        OR package_expires_at <= coalesce(%(now)s::timestamptz, now()))

-- name: mark_package_missing
-- A download found no usable file where the row says the package is
-- (restored from a backup without it, removed by hand): the row stops
-- pointing at it and records when it was found missing, so the API's 410
-- tells the truth and the job can be re-exported at once. Guarded by the
-- path the download tried: a package published meanwhile is never touched.
UPDATE exportd.jobs
   SET package_path = NULL,
       package_deleted_at = coalesce(package_deleted_at, %(now)s::timestamptz, now())
 WHERE job_id = %(job_id)s
   AND status = 'completed'
   AND package_path = %(package_path)s
RETURNING *

-- name: retry_job
-- A new run of a finished job: allowed from failed, rolled_back, cancelled,
-- and from completed once its package is gone (package_path NULL: deleted by
-- the expiry, released by release_gone_package just before, or found
-- missing by a download — the state machine trigger asks the same). The row lock makes concurrent
-- retries produce exactly one new run (the others see 'pending' and match
-- nothing). Attempts restart at 0; a new queue entry is deferred.
WITH target AS (
    SELECT * FROM exportd.jobs
     WHERE job_id = %(job_id)s
       AND (status IN ('failed', 'rolled_back', 'cancelled')
            OR (status = 'completed' AND package_path IS NULL))
       FOR UPDATE
), queued AS (
    SELECT (procrastinate_defer_jobs_v1(ARRAY[ROW(
        %(queue)s::text, %(task)s::text, t.priority, NULL, NULL,
        jsonb_build_object(
            'job_id', t.job_id, 'kind', t.kind, 'owner_id', t.owner_id, 'params', t.params,
            'run', t.run + 1, 'max_attempts', t.max_attempts, 'created_at', t.created_at),
        NULL
    )::procrastinate_job_to_defer_v1]))[1] AS queue_job_id
    FROM target t
)
UPDATE exportd.jobs j
   SET status = 'pending', run = j.run + 1, attempts = 0, queue_job_id = queued.queue_job_id,
       scheduled_at = coalesce(%(now)s::timestamptz, now()),
       started_at = NULL, completed_at = NULL,
       error_message = NULL, result = NULL, steps_completed = 0, progress_percentage = 0,
       current_step = NULL, package_size_bytes = NULL, package_sha256 = NULL,
       package_expires_at = NULL
  FROM queued
 WHERE j.job_id = %(job_id)s
RETURNING j.*

-- name: request_cancel
SELECT * FROM exportd.request_cancel(%(job_id)s)

-- name: get_job
-- The columns of `Job` in its field order (daemon/db/jobs.py builds the job
-- from them by position; tests/integration/db/test_jobs.py checks the order).
-- Not request_hash: only the idempotency replay reads it.
SELECT job_id, kind, owner_id, params, status, priority, run, attempts, max_attempts,
       steps_completed, steps_total, current_step, progress_percentage, result,
       error_message, idempotency_key, queue_job_id, package_path, package_size_bytes,
       package_sha256, package_expires_at, package_deleted_at, download_count,
       last_downloaded_at, scheduled_at, created_at, updated_at, started_at,
       completed_at, notify_url
  FROM exportd.jobs WHERE job_id = %(job_id)s

-- name: get_job_by_idempotency_key
SELECT * FROM exportd.jobs WHERE owner_id = %(owner_id)s AND idempotency_key = %(idempotency_key)s

-- name: find_jobs_by_id_prefix
-- The jobs whose id starts with a prefix (`exportd jobs show 05132f10`): the
-- caller passes the lowest and highest uuid sharing the prefix, so the
-- primary key index answers it (uuid order is the order of its hex text).
-- Two rows are enough to tell "unique" from "ambiguous".
SELECT * FROM exportd.jobs
 WHERE job_id BETWEEN %(low)s::uuid AND %(high)s::uuid
 ORDER BY job_id
 LIMIT 2

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
-- Percentage stays below 100 until the job is completed. Returns the status
-- in the same round trip, so the pipeline learns about a cancellation free.
UPDATE exportd.jobs SET
    steps_completed = %(steps_completed)s,
    steps_total = %(steps_total)s,
    current_step = %(current_step)s,
    progress_percentage = least(99, greatest(0, %(percentage)s))
WHERE job_id = %(job_id)s AND status IN ('in_progress', 'cancelling')
RETURNING status

-- name: packages_due_for_expiry
-- Live packages whose retention has passed, oldest first, one batch at a time.
SELECT job_id, package_path, package_expires_at FROM exportd.jobs
WHERE package_path IS NOT NULL AND package_expires_at <= coalesce(%(now)s, now())
ORDER BY package_expires_at
LIMIT %(limit)s
