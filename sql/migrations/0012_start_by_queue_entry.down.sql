-- Reverts 0012: the start trigger's function as migration 0003 made it.
CREATE OR REPLACE FUNCTION exportd.queue_job_started() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    started record;
BEGIN
    UPDATE exportd.jobs
       SET status = 'in_progress',
           attempts = attempts + 1,
           started_at = now(),
           steps_completed = 0,
           progress_percentage = 0,
           current_step = NULL
     WHERE queue_job_id = NEW.id AND status = 'pending'
    RETURNING job_id, run, attempts INTO started;
    IF FOUND THEN
        INSERT INTO exportd.job_attempts (job_id, run, attempt, queue_job_id, worker, started_at)
        VALUES (started.job_id, started.run, started.attempts, NEW.id,
                nullif(current_setting('application_name'), '') || '#' || coalesce(NEW.worker_id::text, '?'),
                now())
        ON CONFLICT (job_id, run, attempt) DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;
