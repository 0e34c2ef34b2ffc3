-- Statements on exportd.downloads (daemon/db/downloads.py is the only caller).
-- A download is recorded when its first byte is about to be sent and closed
-- when the response ends, however it ends (finished, client gone, error).

-- name: start_download
-- A 302 to object storage carries no byte count (NULL: the store sends the
-- bytes, migration 0007); finish_download closes it like any other.
INSERT INTO exportd.downloads (job_id, subject, range_header, status_code, bytes_sent, started_at)
VALUES (%(job_id)s, %(subject)s, %(range_header)s, %(status_code)s,
        CASE WHEN %(status_code)s = 302 THEN NULL ELSE 0 END,
        coalesce(%(now)s::timestamptz, now()))
RETURNING download_id

-- name: finish_download
-- Closes the download row and counts a completed download on the job — in
-- one statement, so the two never disagree. A response that delivered the
-- file's last byte counts unless the job's previous completed download ended
-- less than %(session_seconds)s before this response started: the pieces of
-- a multi-connection download (aria2c -x8, whose first full GET may also
-- run to the end) and a resumed download are one download. The UPDATE takes
-- the job's row lock and re-reads last_downloaded_at after waiting, so
-- concurrent completions are decided one after the other.
WITH finished AS (
    UPDATE exportd.downloads
       SET bytes_sent = CASE WHEN status_code = 302 THEN NULL ELSE %(bytes_sent)s END,
           completed = %(completed)s,
           finished_at = coalesce(%(now)s::timestamptz, now())
     WHERE download_id = %(download_id)s
    RETURNING job_id, completed, started_at, finished_at
)
UPDATE exportd.jobs AS j
   SET download_count = j.download_count + CASE
           WHEN j.last_downloaded_at IS NULL
             OR j.last_downloaded_at
                < finished.started_at - make_interval(secs => %(session_seconds)s)
           THEN 1 ELSE 0 END,
       last_downloaded_at = greatest(j.last_downloaded_at, finished.finished_at)
  FROM finished
 WHERE j.job_id = finished.job_id AND finished.completed

-- name: close_stale_downloads
-- Closes the next batch of download rows left open longer than
-- %(max_open_seconds)s: the web process that served them died (SIGKILL, OOM,
-- host loss) before its response ended, so nothing else ever will. They end
-- as not completed, bytes_sent unchanged, and count nothing on the job. A
-- response still streaming after that long is closed too; when it does end,
-- finish_download writes its real figures over these (and counts it then).
-- The partial index of migration 0006 finds the open rows without a scan.
WITH stale AS (
    SELECT download_id
      FROM exportd.downloads
     WHERE finished_at IS NULL
       AND started_at < coalesce(%(now)s::timestamptz, now())
                        - make_interval(secs => %(max_open_seconds)s)
     ORDER BY started_at
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
)
UPDATE exportd.downloads AS d
   SET finished_at = coalesce(%(now)s::timestamptz, now()),
       completed = false
  FROM stale
 WHERE d.download_id = stale.download_id

-- name: count_stale_downloads
SELECT count(*)
  FROM exportd.downloads
 WHERE finished_at IS NULL
   AND started_at < coalesce(%(now)s::timestamptz, now())
                    - make_interval(secs => %(max_open_seconds)s)

-- name: downloads_of_job
SELECT download_id, job_id, subject, range_header, status_code, bytes_sent,
       started_at, finished_at, completed
  FROM exportd.downloads
 WHERE job_id = %(job_id)s
 ORDER BY download_id
