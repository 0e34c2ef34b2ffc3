-- 0007 redirected downloads (DESIGN §10): with packages in S3 a download is
-- answered `302 Found` to a presigned URL and the client fetches the bytes
-- from the object store, so exportd records status 302 and no byte count
-- (bytes_sent NULL: unknown, not zero).
ALTER TABLE exportd.downloads DROP CONSTRAINT IF EXISTS downloads_status_code_check;
ALTER TABLE exportd.downloads ADD CONSTRAINT downloads_status_code_check
    CHECK (status_code IN (200, 206, 302));
ALTER TABLE exportd.downloads ALTER COLUMN bytes_sent DROP NOT NULL;
ALTER TABLE exportd.downloads DROP CONSTRAINT IF EXISTS downloads_redirect_bytes;
ALTER TABLE exportd.downloads ADD CONSTRAINT downloads_redirect_bytes
    CHECK ((status_code = 302) = (bytes_sent IS NULL));

COMMENT ON COLUMN exportd.downloads.bytes_sent IS
    'Bytes exportd sent; NULL for a 302 redirect to object storage (the store sends them)';
