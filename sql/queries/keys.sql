-- Statements on exportd.api_keys (daemon/db/keys.py is the only caller).
-- The key itself never reaches the database: only its SHA-256 and its
-- public prefix do.

-- name: insert_key
INSERT INTO exportd.api_keys (prefix, key_sha256, owner_id, name, admin, rate_limit,
                              created_at, expires_at)
VALUES (%(prefix)s, %(key_sha256)s, %(owner_id)s, %(name)s, %(admin)s, %(rate_limit)s,
        coalesce(%(now)s::timestamptz, now()), %(expires_at)s)
RETURNING prefix, owner_id, name, admin, rate_limit, created_at, last_used_at,
          expires_at, revoked_at

-- name: credential_by_prefix
-- What authenticating a request needs: the hash to compare in constant time,
-- who the key acts as, and whether it still may. One row by the unique index.
SELECT prefix, key_sha256, owner_id, admin, rate_limit, expires_at, revoked_at
  FROM exportd.api_keys
 WHERE prefix = %(prefix)s

-- name: list_keys
-- Every key (or one owner's), newest first; never the hash.
SELECT prefix, owner_id, name, admin, rate_limit, created_at, last_used_at,
       expires_at, revoked_at
  FROM exportd.api_keys
 WHERE %(owner_id)s::text IS NULL OR owner_id = %(owner_id)s
 ORDER BY created_at DESC, key_id DESC

-- name: revoke_key
-- Revoking twice keeps the first revocation's time.
UPDATE exportd.api_keys
   SET revoked_at = coalesce(revoked_at, coalesce(%(now)s::timestamptz, now()))
 WHERE prefix = %(prefix)s
RETURNING prefix, owner_id, name, admin, rate_limit, created_at, last_used_at,
          expires_at, revoked_at

-- name: touch_key
-- Records a use, unless one was recorded less than %(interval_seconds)s ago:
-- however many API processes use the key, the row is written at most once
-- per interval (an UPDATE that matches no row writes nothing).
UPDATE exportd.api_keys
   SET last_used_at = coalesce(%(now)s::timestamptz, now())
 WHERE prefix = %(prefix)s
   AND (last_used_at IS NULL
        OR last_used_at < coalesce(%(now)s::timestamptz, now())
                          - make_interval(secs => %(interval_seconds)s))
