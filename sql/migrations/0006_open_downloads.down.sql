-- Reverts 0006: the index only; no data is lost.
DROP INDEX IF EXISTS exportd.downloads_open_idx;
