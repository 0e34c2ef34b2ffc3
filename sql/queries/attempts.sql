-- Settling an attempt: the domain row, its attempt row and procrastinate's
-- job change in ONE statement (one round trip, one commit), replacing the
-- commit procrastinate would make anyway. Each is guarded by the attempt's
-- identity (run, attempt) and the expected status, so an attempt that lost
-- its job (cancelled, rescued after a lost heartbeat) changes nothing.
-- daemon/db/attempts.py is the only caller.

-- name: complete_attempt
WITH job AS (
    UPDATE exportd.jobs
       SET status = 'completed',
           completed_at = coalesce(%(now)s, now()),
           steps_total = %(steps_total)s,
           steps_completed = %(steps_total)s,
           progress_percentage = 100,
           current_step = NULL,
           result = %(result)s,
           error_message = NULL,
           package_path = %(package_path)s,
           package_size_bytes = %(package_size_bytes)s,
           package_sha256 = %(package_sha256)s,
           package_expires_at = coalesce(%(now)s, now()) + make_interval(days => %(retention_days)s),
           package_deleted_at = NULL
     WHERE job_id = %(job_id)s AND run = %(run)s AND attempts = %(attempt)s
       AND status = 'in_progress'
    RETURNING job_id
), attempt AS (
    UPDATE exportd.job_attempts a
       SET finished_at = coalesce(%(now)s, now()), outcome = 'succeeded'
      FROM job
     WHERE a.job_id = job.job_id AND a.run = %(run)s AND a.attempt = %(attempt)s
    RETURNING 1
), queue AS (
    SELECT procrastinate_finish_job_v1(%(queue_job_id)s, 'succeeded', false) FROM job
)
SELECT (SELECT count(*) FROM job) AS settled, (SELECT count(*) FROM queue) AS queue_rows

-- name: mark_failed
-- Final failure: the job is 'failed' while its rollback runs.
UPDATE exportd.jobs SET status = 'failed', error_message = %(error)s
 WHERE job_id = %(job_id)s AND run = %(run)s AND attempts = %(attempt)s AND status = 'in_progress'
RETURNING job_id

-- name: fail_attempt
-- retry: in_progress -> pending, due at retry_at (procrastinate_retry_job_v2).
-- final: failed -> final_status (rolled_back, or failed when a rollback raised).
WITH job AS (
    UPDATE exportd.jobs
       SET status = CASE WHEN %(retry)s THEN 'pending'
                         ELSE %(final_status)s::exportd.job_status END,
           error_message = %(error)s,
           current_step = NULL,
           completed_at = CASE WHEN %(retry)s THEN NULL ELSE coalesce(%(now)s, now()) END,
           scheduled_at = CASE WHEN %(retry)s THEN %(retry_at)s ELSE scheduled_at END
     WHERE job_id = %(job_id)s AND run = %(run)s AND attempts = %(attempt)s
       AND status = CASE WHEN %(retry)s THEN 'in_progress'::exportd.job_status
                         ELSE 'failed'::exportd.job_status END
    RETURNING job_id
), attempt AS (
    UPDATE exportd.job_attempts a
       SET finished_at = coalesce(%(now)s, now()),
           outcome = %(outcome)s::exportd.attempt_outcome,
           error = %(error)s
      FROM job
     WHERE a.job_id = job.job_id AND a.run = %(run)s AND a.attempt = %(attempt)s
    RETURNING 1
), retried AS (
    SELECT procrastinate_retry_job_v2(%(queue_job_id)s, %(retry_at)s, NULL, NULL, NULL)
      FROM job WHERE %(retry)s
), finished AS (
    SELECT procrastinate_finish_job_v1(%(queue_job_id)s, 'failed', false)
      FROM job WHERE NOT %(retry)s
)
SELECT (SELECT count(*) FROM job) AS settled,
       (SELECT count(*) FROM retried) + (SELECT count(*) FROM finished) AS queue_rows

-- name: cancel_attempt
-- cancelling -> cancelled after the pipeline stopped and rolled back.
WITH job AS (
    UPDATE exportd.jobs
       SET status = 'cancelled', completed_at = coalesce(%(now)s, now()), current_step = NULL
     WHERE job_id = %(job_id)s AND run = %(run)s AND attempts = %(attempt)s
       AND status = 'cancelling'
    RETURNING job_id
), attempt AS (
    UPDATE exportd.job_attempts a
       SET finished_at = coalesce(%(now)s, now()), outcome = 'cancelled', error = %(error)s
      FROM job
     WHERE a.job_id = job.job_id AND a.run = %(run)s AND a.attempt = %(attempt)s
    RETURNING 1
), queue AS (
    SELECT procrastinate_finish_job_v1(%(queue_job_id)s, 'aborted', false) FROM job
)
SELECT (SELECT count(*) FROM job) AS settled, (SELECT count(*) FROM queue) AS queue_rows

-- name: rescue_lost
SELECT exportd.rescue_lost(%(queue_job_id)s, %(retry_at)s)

-- name: attempts_of_job
SELECT job_id, run, attempt, queue_job_id, worker, started_at, finished_at, outcome, error,
       resumed_from_step
  FROM exportd.job_attempts WHERE job_id = %(job_id)s ORDER BY run, attempt

-- name: record_resume
-- The attempt continues its run at step `step` (1-based): the steps before
-- it finished in an earlier attempt and were kept.
UPDATE exportd.job_attempts SET resumed_from_step = %(step)s
 WHERE job_id = %(job_id)s AND run = %(run)s AND attempt = %(attempt)s
RETURNING 1

-- name: end_run
-- Claims the end of a run's kept steps: true for the one caller that
-- inserts the row (and so runs their rollback), false for everyone else
-- and for a job that is gone.
INSERT INTO exportd.ended_runs (job_id, run)
SELECT job_id, %(run)s FROM exportd.jobs WHERE job_id = %(job_id)s
ON CONFLICT DO NOTHING
RETURNING 1

-- name: run_states
-- What the checkpoint sweep may do with the checkpoint of each (job, run):
--   live       the run may still continue (queued, running, waiting for its
--              retry, or failed while its last attempt rolls back): keep it;
--   open       the run ended without a worker to roll its kept steps back
--              (cancelled while waiting for its retry, its last worker lost);
--   completed  the run produced its package: only delete;
--   ended      its end was claimed (exportd.ended_runs) over `rollback_grace`
--              seconds ago: its kept steps were rolled back: only delete.
--              Claimed more recently, the claimer may still be rolling back
--              from the checkpoint's files: 'live', it deletes them itself;
--   gone       the job row is gone (deleted, pruned): only delete.
SELECT c.job_id, c.run,
       CASE WHEN j.job_id IS NULL THEN 'gone'
            WHEN e.job_id IS NOT NULL
                 AND e.ended_at > now() - make_interval(secs => %(rollback_grace)s) THEN 'live'
            WHEN e.job_id IS NOT NULL THEN 'ended'
            WHEN j.run = c.run
                 AND (j.status IN ('pending', 'in_progress', 'cancelling')
                      OR (j.status = 'failed'
                          AND EXISTS (SELECT 1 FROM procrastinate_jobs AS q
                                       WHERE q.id = j.queue_job_id
                                         AND q.status IN ('todo', 'doing')))) THEN 'live'
            WHEN EXISTS (SELECT 1 FROM exportd.job_attempts AS a
                          WHERE a.job_id = c.job_id AND a.run = c.run
                            AND a.outcome = 'succeeded') THEN 'completed'
            ELSE 'open'
       END AS state,
       j.kind, j.owner_id, j.params, j.created_at, j.attempts
  FROM unnest(%(job_ids)s::uuid[], %(runs)s::integer[]) AS c (job_id, run)
  LEFT JOIN exportd.jobs AS j ON j.job_id = c.job_id
  LEFT JOIN exportd.ended_runs AS e ON e.job_id = c.job_id AND e.run = c.run
