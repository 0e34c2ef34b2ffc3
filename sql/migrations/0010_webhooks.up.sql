-- 0010 webhooks (DESIGN §12): signed notifications through an outbox.
--
-- The event is written by a trigger on exportd.jobs, inside the statement
-- that changes the job (the settle of an attempt, a cancel, the expiry of a
-- package): an uncommitted change has no event, a committed one always has
-- it, whichever process dies afterwards. The same trigger defers one
-- procrastinate job per endpoint on the queue `webhooks` (task
-- `exportd.deliver_webhook`, the names of daemon/tasks.py), which a worker
-- runs apart from the exports so that slow receivers never hold one up.
-- Every delivery attempt is a row of exportd.webhook_deliveries.

-- Per-job endpoint, given as "notify_url" when the job is created (its host
-- is in EXPORTD_WEBHOOK_ALLOWED_HOSTS). No column comment: a down and up
-- again gives the column another position, and its comment with it.
ALTER TABLE exportd.jobs ADD COLUMN IF NOT EXISTS notify_url text NULL;

DO $$
BEGIN
    ALTER TABLE exportd.jobs ADD CONSTRAINT jobs_notify_url_http
        CHECK (notify_url ~ '^https?://' AND length(notify_url) <= 2048);
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

-- The configured endpoints (EXPORTD_WEBHOOK_URL, [[webhooks]]) and the event
-- types each one wants. Written by every worker as it starts (its
-- configuration replaces the rows), read by the trigger below to know where
-- an event goes. Secrets are never stored: the worker holds them.
CREATE TABLE IF NOT EXISTS exportd.webhook_endpoints (
    url           text PRIMARY KEY CONSTRAINT webhook_endpoints_url_http CHECK (url ~ '^https?://'),
    events        text[] NOT NULL,
    configured_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE exportd.webhook_endpoints IS
    'Configured webhook endpoints, as the last worker to start was configured';

CREATE TABLE IF NOT EXISTS exportd.webhook_events (
    event_id   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    type       text NOT NULL CONSTRAINT webhook_events_type CHECK (
                   type IN ('export.completed', 'export.failed', 'export.cancelled', 'export.expired')),
    job_id     uuid NOT NULL REFERENCES exportd.jobs (job_id) ON DELETE CASCADE,
    -- The job row as the change committed it (to_jsonb of exportd.jobs): the
    -- delivery sends the job JSON of that moment, whatever happened since.
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE exportd.webhook_events IS
    'Outbox: one row per webhook event, written with the job change that caused it';

CREATE INDEX IF NOT EXISTS webhook_events_job_idx ON exportd.webhook_events (job_id);
CREATE INDEX IF NOT EXISTS webhook_events_created_idx ON exportd.webhook_events (created_at DESC);

CREATE TABLE IF NOT EXISTS exportd.webhook_deliveries (
    delivery_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     uuid NOT NULL REFERENCES exportd.webhook_events (event_id) ON DELETE CASCADE,
    job_id       uuid NOT NULL,
    url          text NOT NULL,
    attempt      integer NOT NULL CONSTRAINT webhook_deliveries_attempt_positive CHECK (attempt >= 1),
    queue_job_id bigint NULL,
    -- delivered: 2xx; rejected: another status; timeout; unreachable: no
    -- answer (refused connection, DNS, TLS); refused: the SSRF guard said no.
    outcome      text NOT NULL CONSTRAINT webhook_deliveries_outcome CHECK (
                     outcome IN ('delivered', 'rejected', 'timeout', 'unreachable', 'refused')),
    status_code  smallint NULL,
    duration_ms  integer NOT NULL CONSTRAINT webhook_deliveries_duration CHECK (duration_ms >= 0),
    error        text NULL,
    attempted_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz NULL,
    CONSTRAINT webhook_deliveries_delivered CHECK ((outcome = 'delivered') = (delivered_at IS NOT NULL))
);

COMMENT ON TABLE exportd.webhook_deliveries IS 'One row per delivery attempt of a webhook event';

CREATE INDEX IF NOT EXISTS webhook_deliveries_event_idx ON exportd.webhook_deliveries (event_id, url);
CREATE INDEX IF NOT EXISTS webhook_deliveries_url_idx ON exportd.webhook_deliveries (url, attempted_at DESC);

-- Cumulative delivery attempts by outcome (exportd_webhook_deliveries_total
-- on /metrics), added to by the statement that records each attempt.
CREATE TABLE IF NOT EXISTS exportd.webhook_totals (
    outcome text PRIMARY KEY,
    total   bigint NOT NULL DEFAULT 0 CONSTRAINT webhook_totals_nonnegative CHECK (total >= 0)
);

COMMENT ON TABLE exportd.webhook_totals IS
    'Cumulative webhook delivery attempts by outcome (exportd_webhook_deliveries_total)';

-- Where an event of `p_type` goes: the configured endpoints that want it,
-- and the job's own notify_url (once, if it is also configured).
CREATE OR REPLACE FUNCTION exportd.webhook_targets(p_type text, p_notify_url text)
RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    SELECT url FROM exportd.webhook_endpoints WHERE p_type = ANY (events)
    UNION
    SELECT p_notify_url WHERE p_notify_url IS NOT NULL
$$;

-- Queue one delivery per target of an event (all of them, or those in
-- p_urls), retried until p_since + EXPORTD_WEBHOOK_RETRY_HOURS. Returns how
-- many were queued. Used by the trigger and by `exportd webhooks redeliver`.
CREATE OR REPLACE FUNCTION exportd.defer_webhook_deliveries(
    p_event_id uuid, p_type text, p_notify_url text, p_since timestamptz, p_urls text[]
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    deferred bigint[];
BEGIN
    deferred := procrastinate_defer_jobs_v1(ARRAY(
        SELECT ROW('webhooks', 'exportd.deliver_webhook', 0, NULL, NULL,
                   jsonb_build_object('event_id', p_event_id, 'url', t.url, 'since', p_since),
                   NULL)::procrastinate_job_to_defer_v1
          FROM exportd.webhook_targets(p_type, p_notify_url) AS t(url)
         WHERE p_urls IS NULL OR t.url = ANY (p_urls)
         ORDER BY t.url));
    RETURN coalesce(cardinality(deferred), 0);
END
$$;

-- The outbox trigger. A run ends when completed_at is set (completed,
-- cancelled, or a final failure once its rollback is over: `failed` while
-- the rollback runs has no completed_at yet, so it has no event); a package
-- is gone when package_deleted_at is set (retention's expiry, or a download
-- that found the file missing). An event nobody is to receive (no endpoint
-- wants its type, the job has no notify_url) is not written at all: an
-- expiry of 100 000 packages without webhooks stays as cheap as before.
CREATE OR REPLACE FUNCTION exportd.jobs_webhook_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    event_type text;
    new_event uuid;
    now_ timestamptz := now();
BEGIN
    IF OLD.completed_at IS NULL AND NEW.completed_at IS NOT NULL THEN
        event_type := CASE NEW.status
            WHEN 'completed' THEN 'export.completed'
            WHEN 'cancelled' THEN 'export.cancelled'
            WHEN 'failed' THEN 'export.failed'
            WHEN 'rolled_back' THEN 'export.failed'
        END;
    ELSIF OLD.package_deleted_at IS NULL AND NEW.package_deleted_at IS NOT NULL
          AND NEW.status = 'completed' THEN
        event_type := 'export.expired';
    END IF;
    IF event_type IS NULL
       OR NOT EXISTS (SELECT 1 FROM exportd.webhook_targets(event_type, NEW.notify_url)) THEN
        RETURN NULL;
    END IF;
    INSERT INTO exportd.webhook_events (type, job_id, payload, created_at)
    VALUES (event_type, NEW.job_id, to_jsonb(NEW), now_)
    RETURNING event_id INTO new_event;
    PERFORM exportd.defer_webhook_deliveries(new_event, event_type, NEW.notify_url, now_, NULL);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS jobs_webhook_event ON exportd.jobs;
CREATE TRIGGER jobs_webhook_event AFTER UPDATE ON exportd.jobs
    FOR EACH ROW WHEN (
        (OLD.completed_at IS NULL AND NEW.completed_at IS NOT NULL)
        OR (OLD.package_deleted_at IS NULL AND NEW.package_deleted_at IS NOT NULL))
    EXECUTE FUNCTION exportd.jobs_webhook_event();

-- Per endpoint: deliveries queued or running (pending), events delivered,
-- events not delivered after at least one attempt (failing: retrying, or
-- given up once the retry window closed), the last failed attempt, and how
-- long the oldest undelivered event has waited.
CREATE OR REPLACE VIEW exportd.webhook_health AS
WITH queued AS (
    SELECT q.args ->> 'url' AS url, (q.args ->> 'event_id')::uuid AS event_id
      FROM procrastinate_jobs AS q
     WHERE q.task_name = 'exportd.deliver_webhook' AND q.status IN ('todo', 'doing')
), pairs AS (
    SELECT d.url, d.event_id, bool_or(d.delivered_at IS NOT NULL) AS delivered
      FROM exportd.webhook_deliveries AS d
     GROUP BY d.url, d.event_id
), undelivered AS (
    SELECT url, event_id FROM queued
    UNION
    SELECT url, event_id FROM pairs WHERE NOT delivered
), last_failure AS (
    SELECT DISTINCT ON (d.url) d.url, d.error, d.attempted_at
      FROM exportd.webhook_deliveries AS d
     WHERE d.delivered_at IS NULL
     ORDER BY d.url, d.attempted_at DESC
), urls AS (
    SELECT url FROM exportd.webhook_endpoints
    UNION SELECT url FROM pairs
    UNION SELECT url FROM queued
)
SELECT
    u.url,
    EXISTS (SELECT 1 FROM exportd.webhook_endpoints AS c WHERE c.url = u.url)   AS configured,
    (SELECT count(DISTINCT q.event_id) FROM queued AS q WHERE q.url = u.url)     AS pending,
    (SELECT count(*) FROM pairs AS p WHERE p.url = u.url AND p.delivered)         AS delivered,
    (SELECT count(*) FROM pairs AS p WHERE p.url = u.url AND NOT p.delivered)     AS failing,
    f.error                                                                       AS last_error,
    f.attempted_at                                                                AS last_error_at,
    now() - (SELECT min(e.created_at)
               FROM undelivered AS n
               JOIN exportd.webhook_events AS e ON e.event_id = n.event_id
              WHERE n.url = u.url)                                                AS oldest_undelivered_age
FROM urls AS u
LEFT JOIN last_failure AS f ON f.url = u.url;

COMMENT ON VIEW exportd.webhook_health IS
    'Per webhook endpoint: pending, delivered and failing events, last error, oldest undelivered';
