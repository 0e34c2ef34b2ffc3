-- 0008 API keys: credentials for machine callers, accepted next to JWTs
-- (DESIGN §17; docs/api.md "Authentication").
--
-- A key is `exk_` followed by 52 base32 characters (32 random bytes). Its
-- first 10 characters after `exk_` are its public prefix: the key is found
-- by it, and an operator names the key by it (`exportd keys revoke PREFIX`).
-- The table holds the SHA-256 of the whole key, never the key: for a random
-- 256-bit key a plain hash is as strong as a slow one, and a copy of this
-- table authenticates nobody. The key is shown once, when it is created.
--
-- The owner is the subject a key's requests act as (jobs, listing, rate
-- limit); `admin` is its role. `rate_limit` is the key's own budget
-- ('600/minute', or 'off'); NULL shares its owner's per-subject budget
-- (EXPORTD_RATE_LIMIT). `last_used_at` is written at most once a minute per
-- key, never on every request. A revoked or expired key is refused at once
-- by every API process (within the few seconds a process caches a key).
CREATE TABLE IF NOT EXISTS exportd.api_keys (
    key_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prefix       text NOT NULL
                 CONSTRAINT api_keys_prefix_unique UNIQUE
                 CONSTRAINT api_keys_prefix_shape CHECK (prefix ~ '^[a-z2-7]{10}$'),
    key_sha256   bytea NOT NULL
                 CONSTRAINT api_keys_sha256_size CHECK (octet_length(key_sha256) = 32),
    owner_id     text NOT NULL
                 CONSTRAINT api_keys_owner_size CHECK (char_length(owner_id) BETWEEN 1 AND 255),
    name         text NOT NULL DEFAULT ''
                 CONSTRAINT api_keys_name_size CHECK (char_length(name) <= 200),
    admin        boolean NOT NULL DEFAULT false,
    rate_limit   text NULL
                 CONSTRAINT api_keys_rate_limit_shape
                 CHECK (rate_limit ~ '^([1-9][0-9]{0,8}/(second|minute|hour)|off)$'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz NULL,
    expires_at   timestamptz NULL,
    revoked_at   timestamptz NULL
);

CREATE INDEX IF NOT EXISTS api_keys_owner_idx ON exportd.api_keys (owner_id);

COMMENT ON TABLE exportd.api_keys IS
    'API keys (exk_…): the SHA-256 of each key, never the key; found by prefix';
COMMENT ON COLUMN exportd.api_keys.key_sha256 IS
    'SHA-256 of the whole key text (exk_ included); the key itself is stored nowhere';

-- What an operator reads: every key with its state, without its hash.
CREATE OR REPLACE VIEW exportd.api_key_overview AS
SELECT prefix,
       owner_id,
       name,
       admin,
       coalesce(rate_limit, 'per subject') AS rate_limit,
       CASE
           WHEN revoked_at IS NOT NULL THEN 'revoked'
           WHEN expires_at IS NOT NULL AND expires_at <= now() THEN 'expired'
           ELSE 'active'
       END AS state,
       created_at,
       last_used_at,
       expires_at,
       revoked_at
  FROM exportd.api_keys;
