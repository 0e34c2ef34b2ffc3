-- 0006 open downloads: the cleanup closes download rows a dead web process
-- left open (finished_at NULL for more than a day). This index finds them
-- without reading every download ever recorded; only rows in flight are in
-- it, so it stays small.
CREATE INDEX IF NOT EXISTS downloads_open_idx ON exportd.downloads (started_at)
    WHERE finished_at IS NULL;
