-- 0003 queue tracking: the domain row follows the queue inside the
-- transactions procrastinate already makes, so tracking costs no extra
-- commit. Also: change notifications for live progress, and cancellation
-- that locks in the same order as procrastinate's fetch (no deadlock).

-- When procrastinate hands a job to a worker (todo -> doing, inside its
-- fetch transaction), the export becomes in_progress and the attempt is
-- opened. The worker is identified by procrastinate's worker id and the
-- fetching connection's application_name (host and pid).
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

DROP TRIGGER IF EXISTS exportd_queue_job_started ON procrastinate_jobs;
CREATE TRIGGER exportd_queue_job_started
    AFTER UPDATE OF status ON procrastinate_jobs
    FOR EACH ROW WHEN (OLD.status = 'todo' AND NEW.status = 'doing')
    EXECUTE FUNCTION exportd.queue_job_started();

-- Every status or progress change is announced on channel exportd_job_events
-- (payload: JSON with job_id, status and progress) for live progress.
CREATE OR REPLACE FUNCTION exportd.jobs_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('exportd_job_events', json_build_object(
        'job_id', NEW.job_id,
        'status', NEW.status,
        'steps_completed', NEW.steps_completed,
        'steps_total', NEW.steps_total,
        'current_step', NEW.current_step,
        'percentage', NEW.progress_percentage
    )::text);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS jobs_notify ON exportd.jobs;
CREATE TRIGGER jobs_notify AFTER UPDATE ON exportd.jobs
    FOR EACH ROW WHEN (
        OLD.status IS DISTINCT FROM NEW.status
        OR OLD.steps_completed IS DISTINCT FROM NEW.steps_completed
        OR OLD.steps_total IS DISTINCT FROM NEW.steps_total
        OR OLD.progress_percentage IS DISTINCT FROM NEW.progress_percentage
        OR OLD.current_step IS DISTINCT FROM NEW.current_step)
    EXECUTE FUNCTION exportd.jobs_notify();

-- Cancel: pending -> cancelled at once (its queue entry too, so it never
-- runs); in_progress -> cancelling plus procrastinate's abort request, which
-- notifies the worker running it. Other statuses are returned unchanged.
-- Locks the queue row before the job row: the order procrastinate's fetch
-- (and its start trigger) uses, so the two can never deadlock.
CREATE OR REPLACE FUNCTION exportd.request_cancel(p_job_id uuid)
RETURNS SETOF exportd.jobs
LANGUAGE plpgsql AS $$
DECLARE
    queue_id bigint;
    job exportd.jobs;
BEGIN
    SELECT queue_job_id INTO queue_id FROM exportd.jobs WHERE job_id = p_job_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM 1 FROM procrastinate_jobs WHERE id = queue_id FOR UPDATE;
    SELECT * INTO job FROM exportd.jobs WHERE job_id = p_job_id FOR UPDATE;
    IF job.status = 'pending' THEN
        PERFORM procrastinate_cancel_job_v1(job.queue_job_id, false, false);
        UPDATE exportd.jobs SET status = 'cancelled', completed_at = now()
         WHERE job_id = p_job_id RETURNING * INTO job;
    ELSIF job.status = 'in_progress' THEN
        PERFORM procrastinate_cancel_job_v1(job.queue_job_id, true, false);
        UPDATE exportd.jobs SET status = 'cancelling'
         WHERE job_id = p_job_id RETURNING * INTO job;
    END IF;
    RETURN NEXT job;
END
$$;

-- Rescue of a job whose worker stopped heartbeating (called by the periodic
-- rescue task for each stalled queue entry). The open attempt is recorded as
-- lost; the job is retried while attempts remain (max_attempts is honoured,
-- unlike procrastinate's own retry), else it ends failed (no rollback could
-- run: the worker that held its state is gone). A job being cancelled ends
-- cancelled. Returns what it did.
CREATE OR REPLACE FUNCTION exportd.rescue_lost(p_queue_job_id bigint, p_retry_at timestamptz)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    job exportd.jobs;
    reason constant text := 'WorkerLost: the worker running this export stopped responding';
BEGIN
    PERFORM 1 FROM procrastinate_jobs WHERE id = p_queue_job_id AND status = 'doing' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'gone';
    END IF;
    SELECT * INTO job FROM exportd.jobs WHERE queue_job_id = p_queue_job_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'not_an_export';
    END IF;
    UPDATE exportd.job_attempts
       SET finished_at = now(), outcome = 'lost', error = reason
     WHERE job_id = job.job_id AND run = job.run AND finished_at IS NULL;
    IF job.status = 'cancelling' THEN
        UPDATE exportd.jobs SET status = 'cancelled', completed_at = now(), current_step = NULL
         WHERE job_id = job.job_id;
        PERFORM procrastinate_finish_job_v1(p_queue_job_id, 'aborted', false);
        RETURN 'cancelled';
    ELSIF job.status <> 'in_progress' THEN
        RETURN 'skipped';
    ELSIF job.attempts >= job.max_attempts THEN
        UPDATE exportd.jobs
           SET status = 'failed', completed_at = now(), current_step = NULL,
               error_message = reason || '; no attempts left'
         WHERE job_id = job.job_id;
        PERFORM procrastinate_finish_job_v1(p_queue_job_id, 'failed', false);
        RETURN 'failed';
    ELSE
        UPDATE exportd.jobs
           SET status = 'pending', error_message = reason, scheduled_at = p_retry_at
         WHERE job_id = job.job_id;
        PERFORM procrastinate_retry_job_v2(p_queue_job_id, p_retry_at, NULL, NULL, NULL);
        RETURN 'retried';
    END IF;
END
$$;
