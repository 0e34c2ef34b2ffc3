-- 0001 jobs: the job record, its attempts and its downloads, with the state
-- machine enforced by a trigger. Idempotent: every object is created only if
-- it is missing, so applying this file twice changes nothing.

CREATE SCHEMA IF NOT EXISTS exportd;

DO $$
BEGIN
    CREATE TYPE exportd.job_status AS ENUM (
        'pending',      -- queued, waiting for a worker (or for scheduled_at)
        'in_progress',  -- a worker runs its steps
        'cancelling',   -- cancel requested while running; the pipeline stops at its next check
        'completed',    -- package written; downloadable until package_expires_at
        'failed',       -- gave up; rollback running or a rollback step raised
        'rolled_back',  -- gave up; every finished step rolled back cleanly
        'cancelled'     -- cancelled before or while running, rolled back
    );
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

DO $$
BEGIN
    CREATE TYPE exportd.attempt_outcome AS ENUM ('succeeded', 'failed', 'cancelled', 'lost');
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

CREATE TABLE IF NOT EXISTS exportd.jobs (
    job_id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind                text NOT NULL CHECK (kind <> ''),
    owner_id            text NULL,
    params              jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(params) = 'object'),
    status              exportd.job_status NOT NULL DEFAULT 'pending',
    priority            integer NOT NULL DEFAULT 0,
    run                 integer NOT NULL DEFAULT 1 CONSTRAINT jobs_run_positive CHECK (run >= 1),
    attempts            integer NOT NULL DEFAULT 0 CONSTRAINT jobs_attempts_nonnegative CHECK (attempts >= 0),
    max_attempts        integer NOT NULL DEFAULT 3 CONSTRAINT jobs_max_attempts_positive CHECK (max_attempts > 0),
    steps_completed     integer NOT NULL DEFAULT 0 CHECK (steps_completed >= 0),
    steps_total         integer NOT NULL DEFAULT 0 CHECK (steps_total >= 0),
    current_step        varchar(255) NULL,
    progress_percentage integer NOT NULL DEFAULT 0
        CONSTRAINT jobs_progress_percentage_range CHECK (progress_percentage BETWEEN 0 AND 100),
    result              jsonb NULL,
    error_message       text NULL,
    idempotency_key     text NULL,
    queue_job_id        bigint NULL,
    package_path        varchar(500) NULL
        -- relative to the storage root: never absolute, never climbing out
        CONSTRAINT jobs_package_path_relative
        CHECK (package_path !~ '^/' AND package_path !~ '(^|/)\.\.(/|$)' AND package_path <> ''),
    package_size_bytes  bigint NULL CONSTRAINT jobs_package_size_nonnegative CHECK (package_size_bytes >= 0),
    package_sha256      text NULL CONSTRAINT jobs_package_sha256_hex CHECK (package_sha256 ~ '^[0-9a-f]{64}$'),
    package_expires_at  timestamptz NULL,
    package_deleted_at  timestamptz NULL,
    download_count      integer NOT NULL DEFAULT 0 CHECK (download_count >= 0),
    last_downloaded_at  timestamptz NULL,
    scheduled_at        timestamptz NOT NULL DEFAULT now(),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz NULL,
    completed_at        timestamptz NULL,
    CONSTRAINT jobs_steps_completed_le_total CHECK (steps_completed <= steps_total),
    CONSTRAINT jobs_owner_idempotency_key UNIQUE (owner_id, idempotency_key)
);

COMMENT ON TABLE exportd.jobs IS 'One row per export job; status follows exportd.job_status_transition_allowed()';
COMMENT ON COLUMN exportd.jobs.run IS 'Run number: 1, then +1 for each manual retry or re-export';
COMMENT ON COLUMN exportd.jobs.attempts IS 'Attempts started in the current run';
COMMENT ON COLUMN exportd.jobs.queue_job_id IS 'procrastinate_jobs.id of the current run (no FK: the queue prunes its rows)';
COMMENT ON COLUMN exportd.jobs.package_path IS 'Relative to the storage root; NULL once the file is deleted';

-- Owner history, newest first, with job_id as the keyset tie-breaker.
CREATE INDEX IF NOT EXISTS jobs_owner_created_idx ON exportd.jobs (owner_id, created_at DESC, job_id DESC);
CREATE INDEX IF NOT EXISTS jobs_status_created_idx ON exportd.jobs (status, created_at DESC);
CREATE INDEX IF NOT EXISTS jobs_created_idx ON exportd.jobs (created_at);
CREATE INDEX IF NOT EXISTS jobs_package_expires_idx ON exportd.jobs (package_expires_at)
    WHERE package_path IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_kind_idx ON exportd.jobs (kind);
CREATE INDEX IF NOT EXISTS jobs_queue_job_idx ON exportd.jobs (queue_job_id) WHERE queue_job_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS exportd.job_attempts (
    job_id       uuid NOT NULL REFERENCES exportd.jobs (job_id) ON DELETE CASCADE,
    run          integer NOT NULL CHECK (run >= 1),
    attempt      integer NOT NULL CHECK (attempt >= 1),
    queue_job_id bigint NULL,
    worker       text NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz NULL,
    outcome      exportd.attempt_outcome NULL,
    error        text NULL,
    PRIMARY KEY (job_id, run, attempt),
    CONSTRAINT job_attempts_finished_has_outcome CHECK ((finished_at IS NULL) = (outcome IS NULL))
);

COMMENT ON TABLE exportd.job_attempts IS 'Audit trail: one row per attempt of every run';

CREATE TABLE IF NOT EXISTS exportd.downloads (
    download_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id       uuid NOT NULL REFERENCES exportd.jobs (job_id) ON DELETE CASCADE,
    subject      text NULL,
    range_header text NULL,
    status_code  smallint NOT NULL CHECK (status_code IN (200, 206)),
    bytes_sent   bigint NOT NULL DEFAULT 0 CHECK (bytes_sent >= 0),
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz NULL,
    completed    boolean NOT NULL DEFAULT false
);

COMMENT ON TABLE exportd.downloads IS 'One row per download answered with 200 or 206';

CREATE INDEX IF NOT EXISTS downloads_job_idx ON exportd.downloads (job_id, started_at);

-- The state machine. A pure function so that docs, tests and the trigger
-- share one definition.
CREATE OR REPLACE FUNCTION exportd.job_status_transition_allowed(
    old_status exportd.job_status,
    new_status exportd.job_status,
    package_present boolean
) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE old_status
        WHEN 'pending'     THEN new_status IN ('in_progress', 'cancelled')
        WHEN 'in_progress' THEN new_status IN ('completed', 'failed', 'pending', 'cancelling')
        WHEN 'cancelling'  THEN new_status = 'cancelled'
        WHEN 'failed'      THEN new_status IN ('rolled_back', 'pending')
        WHEN 'rolled_back' THEN new_status = 'pending'
        WHEN 'cancelled'   THEN new_status = 'pending'
        WHEN 'completed'   THEN new_status = 'pending' AND NOT package_present
        ELSE false
    END
$$;

CREATE OR REPLACE FUNCTION exportd.jobs_check_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'pending' THEN
            RAISE EXCEPTION 'a new job must start as pending, not %', NEW.status
                USING ERRCODE = 'check_violation', CONSTRAINT = 'job_status_transition';
        END IF;
    ELSIF NOT exportd.job_status_transition_allowed(OLD.status, NEW.status, OLD.package_path IS NOT NULL) THEN
        RAISE EXCEPTION 'job % cannot go from % to %', OLD.job_id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'job_status_transition';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION exportd.jobs_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS jobs_status_insert ON exportd.jobs;
CREATE TRIGGER jobs_status_insert BEFORE INSERT ON exportd.jobs
    FOR EACH ROW EXECUTE FUNCTION exportd.jobs_check_status();

DROP TRIGGER IF EXISTS jobs_status_transition ON exportd.jobs;
CREATE TRIGGER jobs_status_transition BEFORE UPDATE OF status ON exportd.jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION exportd.jobs_check_status();

DROP TRIGGER IF EXISTS jobs_updated_at ON exportd.jobs;
CREATE TRIGGER jobs_updated_at BEFORE UPDATE ON exportd.jobs
    FOR EACH ROW EXECUTE FUNCTION exportd.jobs_touch_updated_at();
