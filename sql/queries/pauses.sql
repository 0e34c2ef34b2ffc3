-- Pausing and resuming kinds (migration 0009's exportd.paused_kinds);
-- daemon/db/pauses.py is the only caller. A paused kind's pending jobs are
-- passed over by every worker's fetch (exportd.fetch_job) until it is resumed.

-- name: pause_kind
-- One row per paused kind: pausing it again keeps the first pause's time and author.
INSERT INTO exportd.paused_kinds (kind, paused_by)
VALUES (%(kind)s, %(paused_by)s)
ON CONFLICT (kind) DO NOTHING
RETURNING kind

-- name: resume_kind
-- Delete the pause and, if there was one, wake idle workers as a new job
-- would (procrastinate's job_inserted notification, on its any-queue channel
-- and on the kind's queue): the kind's waiting jobs start at once, not at
-- the next poll.
WITH resumed AS (
    DELETE FROM exportd.paused_kinds WHERE kind = %(kind)s RETURNING kind
), woken AS (
    SELECT pg_notify(channel, '{"type": "job_inserted", "job_id": null}')
      FROM resumed,
           unnest(ARRAY['procrastinate_any_queue_v1',
                        'procrastinate_queue_v1#' || %(queue)s::text]) AS channel
)
SELECT (SELECT count(*) FROM resumed) AS resumed, (SELECT count(*) FROM woken) AS woken

-- name: paused_kinds
SELECT kind, paused_at, paused_by FROM exportd.paused_kinds ORDER BY kind
