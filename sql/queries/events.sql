-- Statements of the live-progress endpoint (web/events.py).

-- name: queue_entry_open
-- Whether a job's queue entry may still run or is running: a `failed` job
-- whose entry is open is rolling back (or will be retried) — not final yet.
SELECT status IN ('todo', 'doing')
  FROM procrastinate_jobs
 WHERE id = %(queue_job_id)s
