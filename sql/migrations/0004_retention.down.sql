-- Reverts 0004: the index only; no data is lost.
DROP INDEX IF EXISTS exportd.jobs_package_path_idx;
