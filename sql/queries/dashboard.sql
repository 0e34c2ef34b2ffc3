-- What the admin page shows (GET /api/v1/admin/dashboard): queue health per
-- kind, workers, running and stalled exports, recent failures. Read in one
-- read-only REPEATABLE READ transaction, so every figure is of the same
-- moment; daemon/db/dashboard.py is the only caller. The views come from
-- migrations 0002 and 0009 (docs/sql.md).

-- name: begin_snapshot
-- First statement of the transaction: one snapshot for every query below.
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY

-- name: limit_reads
-- A dashboard refresh must not queue behind a slow statement or a lock for
-- long: a statement timeout for this transaction only (is_local = true).
SELECT set_config('statement_timeout', %(timeout)s, true)

-- name: snapshot_time
-- The moment every figure describes (the transaction's start).
SELECT now()

-- name: kind_figures
-- Per kind: waiting (due now, or scheduled later), running, finally failed in
-- the last hour, age of the oldest due pending job, and its pause. Only
-- active jobs and the last hour's failures are read (the status index),
-- never the whole history; a paused kind with no such job has a row too.
WITH live AS (
    SELECT kind,
           count(*) FILTER (WHERE status = 'pending' AND scheduled_at <= now()) AS pending,
           count(*) FILTER (WHERE status = 'pending' AND scheduled_at > now()) AS scheduled_later,
           count(*) FILTER (WHERE status IN ('in_progress', 'cancelling')) AS running,
           count(*) FILTER (WHERE status IN ('failed', 'rolled_back')) AS failed_last_hour,
           extract(epoch FROM now() - min(scheduled_at)
                   FILTER (WHERE status = 'pending' AND scheduled_at <= now()))::float8
               AS oldest_pending_seconds
      FROM exportd.jobs
     WHERE status IN ('pending', 'in_progress', 'cancelling')
        OR (status IN ('failed', 'rolled_back') AND completed_at >= now() - interval '1 hour')
     GROUP BY kind
)
SELECT coalesce(l.kind, p.kind)         AS kind,
       coalesce(l.pending, 0)           AS pending,
       coalesce(l.scheduled_later, 0)   AS scheduled_later,
       coalesce(l.running, 0)           AS running,
       coalesce(l.failed_last_hour, 0)  AS failed_last_hour,
       l.oldest_pending_seconds,
       p.kind IS NOT NULL               AS paused,
       p.paused_at,
       p.paused_by
  FROM live l
  FULL JOIN exportd.paused_kinds p ON p.kind = l.kind
 ORDER BY 1

-- name: workers
-- procrastinate's workers with their heartbeat and running exports (view
-- exportd.worker_health), freshest first.
SELECT worker_id,
       last_heartbeat,
       extract(epoch FROM heartbeat_age)::float8 AS heartbeat_age_seconds,
       running_jobs
  FROM exportd.worker_health
 ORDER BY last_heartbeat DESC NULLS LAST, worker_id
 LIMIT %(limit)s

-- name: running_jobs
-- Running exports, oldest first, with the worker of the open attempt (host,
-- pid and procrastinate worker id, as job_attempts records it) and the age of
-- that worker's heartbeat (view exportd.job_overview).
SELECT o.job_id,
       o.kind,
       o.owner_id,
       o.status::text                                     AS status,
       o.attempts,
       o.max_attempts,
       o.progress_percentage,
       o.current_step,
       o.started_at,
       o.worker_id,
       a.worker,
       extract(epoch FROM o.worker_heartbeat_age)::float8 AS heartbeat_age_seconds
  FROM exportd.job_overview o
  LEFT JOIN exportd.job_attempts a
         ON a.job_id = o.job_id AND a.run = o.run AND a.attempt = o.attempts
 WHERE o.status IN ('in_progress', 'cancelling')
 ORDER BY o.started_at, o.job_id
 LIMIT %(limit)s

-- name: stalled_jobs
-- Running exports whose worker stopped heartbeating or is gone (view
-- exportd.stalled_jobs); the rescue task retries or fails them.
SELECT s.job_id,
       s.kind,
       s.owner_id,
       s.status::text                                     AS status,
       s.attempts,
       s.max_attempts,
       s.started_at,
       s.worker_id,
       extract(epoch FROM s.worker_heartbeat_age)::float8 AS heartbeat_age_seconds
  FROM exportd.stalled_jobs s
 ORDER BY s.started_at, s.job_id
 LIMIT %(limit)s

-- name: recent_failures
-- The last failures, newest first: exports that ended failed or rolled_back
-- (a 'failed' one still rolling back has no completed_at yet: its last update).
SELECT job_id,
       kind,
       owner_id,
       status::text                        AS status,
       attempts,
       max_attempts,
       error_message,
       coalesce(completed_at, updated_at)  AS failed_at
  FROM exportd.jobs
 WHERE status IN ('failed', 'rolled_back')
 ORDER BY coalesce(completed_at, updated_at) DESC, job_id
 LIMIT %(limit)s

-- name: failing_webhooks
-- Webhook endpoints with events not delivered after at least one attempt
-- (still retrying, or given up), most recently failed first.
SELECT url,
       configured,
       pending,
       failing,
       last_error,
       last_error_at,
       extract(epoch FROM oldest_undelivered_age)::float8 AS oldest_undelivered_seconds
  FROM exportd.webhook_health
 WHERE failing > 0
 ORDER BY last_error_at DESC NULLS LAST, url
 LIMIT %(limit)s
