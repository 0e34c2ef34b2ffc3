-- 0004 retention: the orphan sweep asks "does any row point at this file?"
-- for files found in storage; this index answers it without a scan. Only
-- live packages have a path, so the index stays small.
CREATE INDEX IF NOT EXISTS jobs_package_path_idx ON exportd.jobs (package_path)
    WHERE package_path IS NOT NULL;
