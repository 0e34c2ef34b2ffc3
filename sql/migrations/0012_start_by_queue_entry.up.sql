-- 0012 the start of an attempt finds its job by the queue entry's index,
-- whatever the statistics say.
--
-- The start trigger of migration 0003 ran
--     UPDATE exportd.jobs ... WHERE queue_job_id = NEW.id AND status = 'pending'
-- inside every fetch, with a plan cached per connection. `status = 'pending'`
-- also matches the partial index of the waiting jobs (migration 0009), and
-- with statistics taken before a burst of jobs arrived (the table analyzed
-- while nearly empty, autovacuum not there yet) the planner combined that
-- index with the queue entry's: every start then read the whole queue of
-- waiting jobs — 20 000 index entries per fetch with 20 000 waiting, a drain
-- quadratic in its length. Here the job is found by `queue_job_id` alone
-- (only jobs_queue_job_idx can answer that) and locked, its status checked in
-- plpgsql, and the row updated by its primary key: no index of the waiting
-- jobs is on the way, whatever the plan. Same effect, same locks (the queue
-- entry first, then the job row), same notifications.
CREATE OR REPLACE FUNCTION exportd.queue_job_started() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    job record;
    started record;
BEGIN
    SELECT job_id, status INTO job
      FROM exportd.jobs
     WHERE queue_job_id = NEW.id
       FOR NO KEY UPDATE;
    IF NOT FOUND OR job.status <> 'pending' THEN
        RETURN NULL;
    END IF;
    UPDATE exportd.jobs
       SET status = 'in_progress',
           attempts = attempts + 1,
           started_at = now(),
           steps_completed = 0,
           progress_percentage = 0,
           current_step = NULL
     WHERE job_id = job.job_id
    RETURNING job_id, run, attempts INTO started;
    INSERT INTO exportd.job_attempts (job_id, run, attempt, queue_job_id, worker, started_at)
    VALUES (started.job_id, started.run, started.attempts, NEW.id,
            nullif(current_setting('application_name'), '') || '#' || coalesce(NEW.worker_id::text, '?'),
            now())
    ON CONFLICT (job_id, run, attempt) DO NOTHING;
    RETURN NULL;
END
$$;
