-- Reverts 0010: no more webhook events; the recorded events, their delivery
-- attempts and every job's notify_url are dropped. Deliveries still queued
-- are cancelled (no worker of an older version knows their task).
UPDATE procrastinate_jobs SET status = 'cancelled'
 WHERE task_name = 'exportd.deliver_webhook' AND status = 'todo';
DROP VIEW IF EXISTS exportd.webhook_health;
DROP TRIGGER IF EXISTS jobs_webhook_event ON exportd.jobs;
DROP FUNCTION IF EXISTS exportd.jobs_webhook_event();
DROP FUNCTION IF EXISTS exportd.defer_webhook_deliveries(uuid, text, text, timestamptz, text[]);
DROP FUNCTION IF EXISTS exportd.webhook_targets(text, text);
DROP TABLE IF EXISTS exportd.webhook_totals;
DROP TABLE IF EXISTS exportd.webhook_deliveries;
DROP TABLE IF EXISTS exportd.webhook_events;
DROP TABLE IF EXISTS exportd.webhook_endpoints;
ALTER TABLE exportd.jobs DROP CONSTRAINT IF EXISTS jobs_notify_url_http;
ALTER TABLE exportd.jobs DROP COLUMN IF EXISTS notify_url;
