-- Figures GET /metrics reads at scrape time, and the cleanup totals it reports
-- (daemon/db/metrics.py is the only caller).

-- name: limit_scrape
-- A scrape must not queue behind a slow statement for long.
SET statement_timeout = '2s'

-- name: end_scrape
RESET statement_timeout

-- name: jobs_by_status
SELECT status::text, count(*) FROM exportd.jobs GROUP BY status

-- name: queue_depth
-- Entries waiting to run (due or scheduled later), by procrastinate queue.
SELECT queue_name, count(*)
  FROM procrastinate_jobs
 WHERE status = 'todo'
 GROUP BY queue_name

-- name: job_figures
-- One row: age of the oldest due pending job; cumulative counts of the run
-- times of jobs completed in the last hour at each bucket bound, their count
-- and sum; live packages and their bytes.
WITH recent AS (
    SELECT extract(epoch FROM completed_at - started_at)::float8 AS seconds
      FROM exportd.jobs
     WHERE status = 'completed'
       AND completed_at >= now() - interval '1 hour'
       AND started_at IS NOT NULL
)
SELECT (SELECT extract(epoch FROM now() - min(scheduled_at))::float8
          FROM exportd.jobs
         WHERE status = 'pending' AND scheduled_at <= now()) AS oldest_pending,
       ARRAY(SELECT count(recent.seconds) FILTER (WHERE recent.seconds <= b.bound)
               FROM unnest(%(buckets)s::float8[]) WITH ORDINALITY AS b(bound, i)
               LEFT JOIN recent ON true
              GROUP BY b.i
              ORDER BY b.i) AS durations,
       (SELECT count(*) FROM recent) AS duration_count,
       (SELECT coalesce(sum(seconds), 0) FROM recent) AS duration_sum,
       (SELECT count(*) FROM exportd.jobs WHERE package_path IS NOT NULL) AS packages,
       (SELECT coalesce(sum(package_size_bytes), 0)
          FROM exportd.jobs WHERE package_path IS NOT NULL) AS package_bytes

-- name: paused_kinds
-- Kinds an operator paused (migration 0009): their pending jobs wait.
SELECT kind FROM exportd.paused_kinds

-- name: webhook_totals
-- Webhook delivery attempts so far, by outcome (migration 0010).
SELECT outcome, total FROM exportd.webhook_totals

-- name: cleanup_totals
-- What every cleanup run so far has done (migration 0005), by figure.
SELECT name, total FROM exportd.maintenance_totals

-- name: add_cleanup_totals
-- One statement per cleanup run (daemon/maintenance/cleanup.py through
-- add_cleanup_totals): add the run's figures to the running totals.
INSERT INTO exportd.maintenance_totals AS t (name, total, updated_at)
SELECT run.name, run.amount, now()
  FROM unnest(%(names)s::text[], %(amounts)s::bigint[]) AS run(name, amount)
ON CONFLICT (name) DO UPDATE
   SET total = t.total + excluded.total, updated_at = excluded.updated_at
