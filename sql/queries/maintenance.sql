-- Retention statements. daemon/db/maintenance.py is the only caller; the
-- tasks in daemon/maintenance/ decide when they run. Each one works on at
-- most %(limit)s rows and is its own transaction, so a backlog of a million
-- rows never holds locks for long nor loads them into memory;
-- SKIP LOCKED lets two cleanups (two workers, or a worker and
-- `exportd cleanup`) share the work instead of waiting on each other.
-- %(now)s is NULL in production and a fixed time in tests.

-- name: expire_packages
-- Marks the next batch of expired packages deleted and returns their paths;
-- the caller unlinks the files AFTER this commits. A download that already
-- opened a file finishes it; new requests see package_deleted_at: 410.
WITH due AS (
    SELECT job_id, package_path, package_size_bytes
      FROM exportd.jobs
     WHERE package_path IS NOT NULL
       AND package_expires_at <= coalesce(%(now)s::timestamptz, now())
     ORDER BY package_expires_at
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
)
UPDATE exportd.jobs AS j
   SET package_path = NULL,
       package_deleted_at = coalesce(%(now)s::timestamptz, now())
  FROM due
 WHERE j.job_id = due.job_id
RETURNING j.job_id, due.package_path, coalesce(due.package_size_bytes, 0) AS size_bytes

-- name: count_expired_packages
SELECT count(*), coalesce(sum(package_size_bytes), 0)
  FROM exportd.jobs
 WHERE package_path IS NOT NULL
   AND package_expires_at <= coalesce(%(now)s::timestamptz, now())

-- name: prune_jobs
-- Deletes the next batch of finished job rows (with their attempts and
-- downloads: ON DELETE CASCADE) whose end — completed_at, else the last
-- update — is more than %(days)s days before now. Never an active job,
-- never one whose package is still in storage.
WITH doomed AS (
    SELECT job_id
      FROM exportd.jobs
     WHERE status IN ('completed', 'failed', 'rolled_back', 'cancelled')
       AND package_path IS NULL
       AND coalesce(completed_at, updated_at)
           < coalesce(%(now)s::timestamptz, now()) - make_interval(days => %(days)s)
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
)
DELETE FROM exportd.jobs AS j
 USING doomed
 WHERE j.job_id = doomed.job_id

-- name: count_prunable_jobs
SELECT count(*)
  FROM exportd.jobs
 WHERE status IN ('completed', 'failed', 'rolled_back', 'cancelled')
   AND package_path IS NULL
   AND coalesce(completed_at, updated_at)
       < coalesce(%(now)s::timestamptz, now()) - make_interval(days => %(days)s)

-- name: prune_queue
-- Deletes the next batch of procrastinate's finished queue rows whose last
-- event is older than %(hours)s hours (their events go with them: ON DELETE
-- CASCADE). A row a periodic task still points at is kept (that reference
-- has no ON DELETE action). exportd.jobs keeps the history.
WITH doomed AS (
    SELECT q.id
      FROM procrastinate_jobs AS q
     WHERE q.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
       AND NOT EXISTS (SELECT 1 FROM procrastinate_periodic_defers AS d WHERE d.job_id = q.id)
       AND NOT EXISTS (
           SELECT 1 FROM procrastinate_events AS e
            WHERE e.job_id = q.id
              AND e.at >= coalesce(%(now)s::timestamptz, now()) - make_interval(hours => %(hours)s))
     LIMIT %(limit)s
       FOR UPDATE OF q SKIP LOCKED
)
DELETE FROM procrastinate_jobs AS q
 USING doomed
 WHERE q.id = doomed.id

-- name: count_prunable_queue
SELECT count(*)
  FROM procrastinate_jobs AS q
 WHERE q.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
   AND NOT EXISTS (SELECT 1 FROM procrastinate_periodic_defers AS d WHERE d.job_id = q.id)
   AND NOT EXISTS (
       SELECT 1 FROM procrastinate_events AS e
        WHERE e.job_id = q.id
          AND e.at >= coalesce(%(now)s::timestamptz, now()) - make_interval(hours => %(hours)s))

-- name: referenced_paths
-- Which of these storage paths a job row still points at.
SELECT package_path FROM exportd.jobs WHERE package_path = ANY(%(paths)s::text[])

-- name: active_jobs
-- Which of these jobs may still be writing work directories or temp files:
-- queued or running, or `failed` while its final rollback runs (its queue
-- entry is still open).
SELECT j.job_id FROM exportd.jobs AS j
 WHERE j.job_id = ANY(%(job_ids)s::uuid[])
   AND (j.status IN ('pending', 'in_progress', 'cancelling')
        OR (j.status = 'failed'
            AND EXISTS (SELECT 1 FROM procrastinate_jobs AS q
                         WHERE q.id = j.queue_job_id AND q.status IN ('todo', 'doing'))))
