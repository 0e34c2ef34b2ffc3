-- Reverts 0008: every API key is gone (callers using one get 401 until new
-- keys are created after the next upgrade).
DROP VIEW IF EXISTS exportd.api_key_overview;
DROP TABLE IF EXISTS exportd.api_keys;
