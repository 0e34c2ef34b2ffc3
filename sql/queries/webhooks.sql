-- Webhook outbox statements (migration 0010). daemon/db/webhooks.py is the
-- only caller. Events are written by the trigger of exportd.jobs, never here.

-- name: sync_endpoints
-- A worker's configured endpoints replace the rows (the trigger reads them
-- to know where an event goes). Rows of unchanged endpoints are left alone.
WITH wanted AS (
    SELECT e ->> 'url' AS url, ARRAY(SELECT jsonb_array_elements_text(e -> 'events')) AS events
      FROM jsonb_array_elements(%(endpoints)s::jsonb) AS e
), dropped AS (
    DELETE FROM exportd.webhook_endpoints AS w
     WHERE w.url NOT IN (SELECT url FROM wanted)
    RETURNING 1
), written AS (
    INSERT INTO exportd.webhook_endpoints AS w (url, events)
    SELECT url, events FROM wanted
    ON CONFLICT (url) DO UPDATE
       SET events = excluded.events, configured_at = now()
     WHERE w.events IS DISTINCT FROM excluded.events
    RETURNING 1
)
SELECT (SELECT count(*) FROM dropped) AS dropped, (SELECT count(*) FROM written) AS written

-- name: delivery
-- What one attempt needs, in one read: the event, the job row as the event
-- recorded it (columns of exportd.jobs), whether this queue entry already
-- delivered it (a crash after the record, before the queue row was
-- finished), and the job's package now (the link of export.completed is
-- only handed out while the package the event announced is still there).
SELECT e.type AS event_type,
       e.created_at AS event_created_at,
       EXISTS (SELECT 1 FROM exportd.webhook_deliveries AS d
                WHERE d.event_id = e.event_id AND d.url = %(url)s
                  AND d.queue_job_id = %(queue_job_id)s AND d.delivered_at IS NOT NULL)
           AS already_delivered,
       (now_job.package_path IS NOT NULL AND now_job.package_deleted_at IS NULL
        AND now_job.package_sha256 IS NOT DISTINCT FROM snapshot.package_sha256
        AND now_job.package_expires_at > now()) AS package_live,
       snapshot.*
  FROM exportd.webhook_events AS e
  CROSS JOIN LATERAL jsonb_populate_record(NULL::exportd.jobs, e.payload) AS snapshot
  LEFT JOIN exportd.jobs AS now_job ON now_job.job_id = e.job_id
 WHERE e.event_id = %(event_id)s

-- name: record_attempt
-- One attempt's row (its number follows the earlier ones to this url) and
-- the running total of its outcome, in one statement. Nothing when the
-- event was pruned meanwhile.
WITH attempt AS (
    INSERT INTO exportd.webhook_deliveries
        (event_id, job_id, url, attempt, queue_job_id, outcome, status_code, duration_ms,
         error, attempted_at, delivered_at)
    SELECT e.event_id, e.job_id, %(url)s::text,
           1 + (SELECT count(*) FROM exportd.webhook_deliveries AS d
                 WHERE d.event_id = e.event_id AND d.url = %(url)s::text),
           %(queue_job_id)s::bigint, %(outcome)s::text, %(status_code)s::smallint,
           %(duration_ms)s::integer, %(error)s::text, %(attempted_at)s::timestamptz,
           CASE WHEN %(outcome)s::text = 'delivered' THEN now() END
      FROM exportd.webhook_events AS e
     WHERE e.event_id = %(event_id)s
    RETURNING outcome, attempt
), total AS (
    INSERT INTO exportd.webhook_totals AS t (outcome, total)
    SELECT outcome, 1 FROM attempt
    ON CONFLICT (outcome) DO UPDATE SET total = t.total + 1
)
SELECT attempt FROM attempt

-- name: list_deliveries
-- `exportd webhooks ls`: newest events first, one row per event and
-- endpoint (an event nobody was to receive has one row without a url).
-- failed: only the endpoints that have not got it after at least one attempt.
WITH queued AS (
    SELECT (q.args ->> 'event_id')::uuid AS event_id, q.args ->> 'url' AS url
      FROM procrastinate_jobs AS q
     WHERE q.task_name = 'exportd.deliver_webhook' AND q.status IN ('todo', 'doing')
), targets AS (
    SELECT event_id, url FROM exportd.webhook_deliveries
    UNION
    SELECT event_id, url FROM queued
), state AS (
    SELECT t.event_id, t.url,
           count(d.delivery_id) AS attempts,
           max(d.delivered_at) AS delivered_at,
           (array_agg(d.status_code ORDER BY d.attempted_at DESC))[1] AS last_status,
           (array_agg(d.error ORDER BY d.attempted_at DESC))[1] AS last_error,
           EXISTS (SELECT 1 FROM queued AS q WHERE q.event_id = t.event_id AND q.url = t.url)
               AS queued
      FROM targets AS t
      LEFT JOIN exportd.webhook_deliveries AS d ON d.event_id = t.event_id AND d.url = t.url
     GROUP BY t.event_id, t.url
)
SELECT e.event_id, e.type, e.job_id, e.created_at, s.url,
       coalesce(s.attempts, 0) AS attempts, s.last_status, s.last_error, s.delivered_at,
       CASE WHEN s.url IS NULL THEN 'no endpoint'
            WHEN s.delivered_at IS NOT NULL THEN 'delivered'
            WHEN s.queued AND s.attempts = 0 THEN 'pending'
            WHEN s.queued THEN 'retrying'
            ELSE 'failed' END AS state
  FROM exportd.webhook_events AS e
  LEFT JOIN state AS s ON s.event_id = e.event_id
 WHERE NOT %(failed)s OR (s.delivered_at IS NULL AND s.attempts > 0)
 ORDER BY e.created_at DESC, e.event_id DESC, s.url
 LIMIT %(limit)s

-- name: redeliver
-- `exportd webhooks redeliver`: a new round of deliveries of an event to
-- its endpoints now (or the one given), retried for
-- EXPORTD_WEBHOOK_RETRY_HOURS from now; endpoints with a delivery already
-- queued are left to it. No row: no such event.
SELECT exportd.defer_webhook_deliveries(
           e.event_id, e.type, e.payload ->> 'notify_url', now(),
           ARRAY(SELECT t.url
                   FROM exportd.webhook_targets(e.type, e.payload ->> 'notify_url') AS t(url)
                  WHERE (%(url)s::text IS NULL OR t.url = %(url)s::text)
                    AND NOT EXISTS (
                        SELECT 1 FROM procrastinate_jobs AS q
                         WHERE q.task_name = 'exportd.deliver_webhook'
                           AND q.status IN ('todo', 'doing')
                           AND q.args ->> 'event_id' = e.event_id::text
                           AND q.args ->> 'url' = t.url))) AS queued
  FROM exportd.webhook_events AS e
 WHERE e.event_id = %(event_id)s

-- name: health
SELECT url, configured, pending, delivered, failing, last_error, last_error_at,
       extract(epoch FROM oldest_undelivered_age)::float8 AS oldest_undelivered_seconds
  FROM exportd.webhook_health
 ORDER BY url
