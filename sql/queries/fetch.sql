-- How exportd's workers take a job from the queue (daemon/db/fetch.py is the
-- only caller): procrastinate's fetch with exportd's fairness rules, in the
-- function of migration 0009. The columns are those of procrastinate's own
-- fetch_job query, which its Job.from_row reads.

-- name: fetch_job
SELECT id, status, task_name, priority, lock, queueing_lock, args, scheduled_at, queue_name,
       attempts, worker_id
  FROM exportd.fetch_job(%(queues)s::varchar[], %(worker_id)s::bigint,
                         %(owner_max_running)s::integer, %(kind_limits)s::jsonb)
