-- Reverts 0007. Rows of redirected downloads (status 302) cannot be expressed
-- in the older shape and are deleted; every other row is kept.
DELETE FROM exportd.downloads WHERE status_code = 302;
ALTER TABLE exportd.downloads DROP CONSTRAINT IF EXISTS downloads_redirect_bytes;
ALTER TABLE exportd.downloads ALTER COLUMN bytes_sent SET NOT NULL;
ALTER TABLE exportd.downloads DROP CONSTRAINT IF EXISTS downloads_status_code_check;
ALTER TABLE exportd.downloads ADD CONSTRAINT downloads_status_code_check
    CHECK (status_code IN (200, 206));
COMMENT ON COLUMN exportd.downloads.bytes_sent IS NULL;
