-- Reverts 0009: queue_health as migration 0002 made it, no wake-up trigger,
-- no fair fetch (workers of this version need it: stop them first), no caps,
-- no pauses (paused kinds run again).
DROP VIEW IF EXISTS exportd.queue_health;
CREATE VIEW exportd.queue_health AS
SELECT
    j.kind,
    j.status,
    count(*)                                        AS jobs,
    now() - min(j.created_at)                       AS oldest_age,
    now() - min(j.scheduled_at) FILTER (WHERE j.status = 'pending' AND j.scheduled_at <= now())
                                                    AS oldest_due_pending_age,
    count(*) FILTER (WHERE j.status = 'pending' AND j.scheduled_at > now())
                                                    AS scheduled_later
FROM exportd.jobs j
GROUP BY j.kind, j.status;

DROP TRIGGER IF EXISTS running_job_ended ON exportd.jobs;
DROP FUNCTION IF EXISTS exportd.running_job_ended();
DROP FUNCTION IF EXISTS exportd.fetch_job(character varying[], bigint, integer, jsonb);
DROP FUNCTION IF EXISTS exportd.may_queue(text, integer);
DROP INDEX IF EXISTS exportd.jobs_running_idx;
DROP INDEX IF EXISTS exportd.jobs_pending_owner_idx;
DROP TABLE IF EXISTS exportd.paused_kinds;
