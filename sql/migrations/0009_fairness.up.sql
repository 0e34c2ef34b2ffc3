-- 0009 fairness: one owner cannot fill every worker slot, a kind can be
-- capped or paused, and one owner's queue is bounded (docs/operations.md,
-- "Fairness and limits"). Enforced here, in PostgreSQL, so that every worker
-- on every host obeys the same counts at the same moment.
--
-- Advisory transaction locks used below (two-key form: class, hashtext(name)):
--   1702391809  one owner's running exports   (exportd.fetch_job)
--   1702391810  one kind's running exports    (exportd.fetch_job)
--   1702391811  one owner's pending exports   (exportd.may_queue)
-- A hash collision between two names only makes them wait for each other.

-- Paused kinds: a row here means no worker starts a pending job of the kind.
CREATE TABLE IF NOT EXISTS exportd.paused_kinds (
    kind      text PRIMARY KEY
        CONSTRAINT paused_kinds_kind_name CHECK (kind ~ '^[a-z][a-z0-9_-]{0,62}$'),
    paused_at timestamptz NOT NULL DEFAULT now(),
    paused_by text NULL
);

COMMENT ON TABLE exportd.paused_kinds IS
    'Kinds whose pending jobs no worker starts (exportd kinds pause/resume)';

-- One owner's waiting jobs (the EXPORTD_OWNER_MAX_PENDING check at creation).
CREATE INDEX IF NOT EXISTS jobs_pending_owner_idx ON exportd.jobs (owner_id)
    WHERE status = 'pending';
-- The running jobs, by owner and kind: the counts of the fetch. Only running
-- rows are in it (at most the workers' slots), so it stays tiny.
CREATE INDEX IF NOT EXISTS jobs_running_idx ON exportd.jobs (owner_id, kind)
    WHERE status IN ('in_progress', 'cancelling');

-- Whether `p_owner_id` may queue one more job: fewer than `p_max_pending` of
-- theirs are pending (NULL: no limit). Called inside the create statement.
-- The lock serialises one owner's concurrent creates, and the count, a
-- statement of its own, sees every create that committed before it: two
-- requests racing for the last place cannot both get it.
CREATE OR REPLACE FUNCTION exportd.may_queue(p_owner_id text, p_max_pending integer)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF p_max_pending IS NULL OR p_owner_id IS NULL THEN
        RETURN true;
    END IF;
    PERFORM pg_advisory_xact_lock(1702391811, hashtext(p_owner_id));
    RETURN (SELECT count(*)
              FROM (SELECT 1 FROM exportd.jobs
                     WHERE owner_id = p_owner_id AND status = 'pending'
                     LIMIT p_max_pending) AS waiting) < p_max_pending;
END
$$;

-- The fetch of exportd's workers: procrastinate's procrastinate_fetch_job_v2
-- (same candidates, same order: highest priority, then oldest; the same
-- `lock` rule), minus the jobs that must wait: a paused kind, an owner with
-- p_owner_max_running exports running, a kind with its max_running
-- (p_kind_limits: {"kind": n}) running. Such jobs stay pending and never
-- block the ones behind them. One statement, one round trip, like the fetch
-- it replaces; the start trigger of migration 0003 still runs inside it.
--
-- Racing workers: the running counts are read after taking the owner's (and
-- the kind's) advisory lock, in a statement of their own, so they include
-- every start committed before; the lock is held until this transaction
-- commits its own start. An owner or a kind can therefore never exceed its
-- cap, even for a moment. A worker waits for a lock only in the first
-- candidate that needs one, owner before kind; after that it only tries
-- (pg_try_advisory_xact_lock) and skips what another worker is deciding on,
-- like SKIP LOCKED. A worker that holds a lock thus never waits for one held
-- by a waiting worker: no deadlock.
--
-- "Running" is in_progress or cancelling. Queue entries with no export
-- (maintenance tasks) have no owner and no kind: only the queue rules apply.
--
-- Plans: the statements are planned once per connection (generic plans) —
-- replanning the candidate query at every fetch would cost more than running
-- it. Without a value for the kinds to leave out, the planner guesses that
-- almost no job passes (nearly every job has one of a few kinds) and would
-- sort the whole queue; enable_sort = off keeps it on the queue's priority
-- index, which is the order wanted. jit = off: a plan costed for the whole
-- queue must not be compiled at every fetch.
CREATE OR REPLACE FUNCTION exportd.fetch_job(
    p_queues character varying[],
    p_worker_id bigint,
    p_owner_max_running integer,
    p_kind_limits jsonb
) RETURNS procrastinate_jobs
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_sort = off
SET jit = off
AS $$
DECLARE
    paused text[];
    full_owners text[];
    full_kinds text[];
    candidate record;
    tried bigint[] := '{}';
    more boolean := true;
    kind_cap integer;
    may_wait boolean := true;
    wait_now boolean;
    fetched procrastinate_jobs;
BEGIN
    -- Paused kinds, and the owners and kinds already at their cap (few
    -- rows: only running jobs are read), so that the candidates below leave
    -- their jobs out at once. One statement.
    SELECT ARRAY(SELECT kind FROM exportd.paused_kinds),
           ARRAY(SELECT owner_id FROM exportd.jobs
                  WHERE p_owner_max_running IS NOT NULL
                    AND status IN ('in_progress', 'cancelling') AND owner_id IS NOT NULL
                  GROUP BY owner_id
                 HAVING count(*) >= p_owner_max_running),
           ARRAY(SELECT j.kind
                   FROM exportd.jobs AS j
                   JOIN jsonb_each_text(coalesce(p_kind_limits, '{}'::jsonb)) AS limits(kind, cap)
                     ON limits.kind = j.kind
                  WHERE j.status IN ('in_progress', 'cancelling')
                  GROUP BY j.kind, limits.cap
                 HAVING count(*) >= limits.cap::integer)
      INTO paused, full_owners, full_kinds;

    -- Candidates come in small batches (LIMIT: the planner walks the queue's
    -- priority index from the top instead of sorting every waiting job),
    -- each batch leaving out those already tried and the owners and kinds
    -- found full meanwhile; until one starts or none is left.
    WHILE more LOOP
    more := false;
    FOR candidate IN
        SELECT q.id, j.owner_id, j.kind
          FROM procrastinate_jobs AS q
          LEFT JOIN exportd.jobs AS j ON j.queue_job_id = q.id
         WHERE q.status = 'todo'
           AND (p_queues IS NULL OR q.queue_name = ANY (p_queues))
           AND (q.scheduled_at IS NULL OR q.scheduled_at <= now())
           -- procrastinate's rule: a job waits while a job with the same lock
           -- runs, or waits ahead of it
           AND NOT EXISTS (
               SELECT 1 FROM procrastinate_jobs AS other
                WHERE q.lock IS NOT NULL
                  AND other.lock = q.lock
                  AND (other.status = 'doing'
                       OR (other.status = 'todo'
                           AND (other.priority > q.priority
                                OR (other.priority = q.priority AND other.id < q.id)))))
           AND (j.kind IS NULL OR (j.kind <> ALL (paused) AND j.kind <> ALL (full_kinds)))
           AND (j.owner_id IS NULL OR j.owner_id <> ALL (full_owners))
           AND q.id <> ALL (tried)
         ORDER BY q.priority DESC, q.id ASC
         LIMIT 10
    LOOP
        more := true;
        tried := tried || candidate.id;
        wait_now := may_wait;
        IF candidate.owner_id IS NOT NULL AND p_owner_max_running IS NOT NULL THEN
            IF candidate.owner_id = ANY (full_owners) THEN
                CONTINUE;  -- found full earlier in this call
            END IF;
            may_wait := false;
            IF wait_now THEN
                PERFORM pg_advisory_xact_lock(1702391809, hashtext(candidate.owner_id));
            ELSIF NOT pg_try_advisory_xact_lock(1702391809, hashtext(candidate.owner_id)) THEN
                CONTINUE;  -- another worker is starting one of this owner's jobs
            END IF;
            IF (SELECT count(*) FROM exportd.jobs
                 WHERE owner_id = candidate.owner_id
                   AND status IN ('in_progress', 'cancelling')) >= p_owner_max_running THEN
                full_owners := full_owners || candidate.owner_id;
                CONTINUE;
            END IF;
        END IF;
        kind_cap := (p_kind_limits ->> candidate.kind)::integer;
        IF kind_cap IS NOT NULL THEN
            IF candidate.kind = ANY (full_kinds) THEN
                CONTINUE;
            END IF;
            may_wait := false;
            IF wait_now THEN
                PERFORM pg_advisory_xact_lock(1702391810, hashtext(candidate.kind));
            ELSIF NOT pg_try_advisory_xact_lock(1702391810, hashtext(candidate.kind)) THEN
                CONTINUE;
            END IF;
            IF (SELECT count(*) FROM exportd.jobs
                 WHERE kind = candidate.kind
                   AND status IN ('in_progress', 'cancelling')) >= kind_cap THEN
                full_kinds := full_kinds || candidate.kind;
                CONTINUE;
            END IF;
        END IF;
        -- Start it, if it still waits (the candidates are from before any
        -- lock wait) and no other worker is taking it.
        UPDATE procrastinate_jobs
           SET status = 'doing', worker_id = p_worker_id
         WHERE id = (SELECT id FROM procrastinate_jobs
                      WHERE id = candidate.id AND status = 'todo'
                        FOR UPDATE SKIP LOCKED)
        RETURNING * INTO fetched;
        IF FOUND THEN
            RETURN fetched;
        END IF;
    END LOOP;
    END LOOP;
    RETURN NULL;
END
$$;

-- A running export ended (completed, failed, retried later, cancelled): its
-- owner's and its kind's slot is free. Jobs that waited for it got no
-- notification of their own, so idle workers are woken the way a new job
-- wakes them (procrastinate's job_inserted on its channels) — only while
-- queue entries are waiting. Inside the settle statement: no extra commit.
CREATE OR REPLACE FUNCTION exportd.running_job_ended() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    payload text;
    queue text;
BEGIN
    IF EXISTS (SELECT 1 FROM procrastinate_jobs WHERE status = 'todo') THEN
        payload := json_build_object('type', 'job_inserted', 'job_id', NEW.queue_job_id)::text;
        SELECT queue_name INTO queue FROM procrastinate_jobs WHERE id = NEW.queue_job_id;
        IF queue IS NOT NULL THEN
            PERFORM pg_notify('procrastinate_queue_v1#' || queue, payload);
        END IF;
        PERFORM pg_notify('procrastinate_any_queue_v1', payload);
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS running_job_ended ON exportd.jobs;
CREATE TRIGGER running_job_ended AFTER UPDATE OF status ON exportd.jobs
    FOR EACH ROW WHEN (OLD.status IN ('in_progress', 'cancelling')
                       AND NEW.status NOT IN ('in_progress', 'cancelling'))
    EXECUTE FUNCTION exportd.running_job_ended();

-- queue_health (migration 0002) with the pause of each kind: `paused` on every
-- row, and a row (status NULL, jobs 0) for a paused kind that has no job.
CREATE OR REPLACE VIEW exportd.queue_health AS
SELECT
    j.kind,
    j.status,
    count(*)                                        AS jobs,
    now() - min(j.created_at)                       AS oldest_age,
    now() - min(j.scheduled_at) FILTER (WHERE j.status = 'pending' AND j.scheduled_at <= now())
                                                    AS oldest_due_pending_age,
    count(*) FILTER (WHERE j.status = 'pending' AND j.scheduled_at > now())
                                                    AS scheduled_later,
    p.kind IS NOT NULL                              AS paused,
    p.paused_at
FROM exportd.jobs j
LEFT JOIN exportd.paused_kinds p ON p.kind = j.kind
GROUP BY j.kind, j.status, p.kind, p.paused_at
UNION ALL
SELECT p.kind, NULL::exportd.job_status, 0::bigint, NULL::interval, NULL::interval, 0::bigint,
       true, p.paused_at
FROM exportd.paused_kinds p
WHERE NOT EXISTS (SELECT 1 FROM exportd.jobs j WHERE j.kind = p.kind);
