-- 0011 resume (DESIGN §14): an automatic retry, or the rescue after a lost
-- worker, continues from the first step its run had not finished.
--
-- The step an attempt started at, when it did not start at the first one
-- (1-based, as the steps are numbered for people; NULL: from the start).
-- No column comment: a down and up again gives the column another position.
ALTER TABLE exportd.job_attempts ADD COLUMN IF NOT EXISTS resumed_from_step integer NULL;

-- The runs whose kept steps were ended: rolled back, or released after a
-- completion. Whoever inserts the row (the worker whose attempt ended the
-- run, or the checkpoint sweep for a run that ended without a worker: a
-- cancel while the job waited for its retry, a lost worker's last attempt)
-- runs the rollback; anyone else only deletes the checkpoint. So a rollback
-- runs once even when two sweeps meet or a checkpoint could not be deleted.
CREATE TABLE IF NOT EXISTS exportd.ended_runs (
    job_id   uuid        NOT NULL REFERENCES exportd.jobs (job_id) ON DELETE CASCADE,
    run      integer     NOT NULL,
    ended_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, run)
);
