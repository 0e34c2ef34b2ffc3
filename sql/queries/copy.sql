-- Statements around the configured queries of SQL exports (daemon/db/copy.py).
-- The configured query is data read from the exports file; it is placed at
-- {query} with psycopg.sql composition, never by string formatting.

-- name: copy_csv
COPY ({query}) TO STDOUT (FORMAT csv, HEADER)

-- name: copy_jsonl
-- One JSON object per line. COPY's text format would double every backslash
-- of the JSON, so CSV format is used with a quote and a delimiter that JSON
-- text never contains raw (control characters are always escaped in JSON):
-- no value is ever quoted and the lines are the JSON texts, unchanged.
-- `exportd_row.*` (not a bare alias) cannot be mistaken for a column of the
-- same name.
COPY (SELECT row_to_json(exportd_row.*) FROM ({query}) AS exportd_row)
  TO STDOUT (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02')

-- name: set_statement_timeout
-- SET LOCAL by another name: ends with the transaction.
SELECT set_config('statement_timeout', %(ms)s, true)

-- name: transaction_read_only
-- The first statement of an export's transaction: it starts the READ ONLY
-- transaction the COPY then runs in, and proves it is one. The export's
-- application name (its kind, seen in pg_stat_activity) ends with it: the
-- connection may serve another kind next.
SELECT current_setting('transaction_read_only'),
       set_config('application_name', %(application_name)s, true)

-- name: explain_json
-- The planner's row estimate of the configured query (`estimate = "planner"`).
EXPLAIN (FORMAT JSON) {query}
