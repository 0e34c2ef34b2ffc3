"""The 4-query export the resume tests run, and the side tables it reports to.

Shared by tests/integration/worker/test_resume.py (step 3 fails once) and
tests/e2e/test_resume_hosts.py (step 3 hangs once, until its worker is
killed). Each query calls `t.mark(name)`, which records that it ran in
`t.ran` through `dblink` — a separate connection, since the export's own
transaction is read-only — so a test counts how often each query ran.
`t.flag` holds one row until step 3's first run removes it (also through
`dblink`, so the removal outlives that run's failure).
"""

from __future__ import annotations


def four_queries(step3: str) -> str:
    """The exports file of kind `four`: q1..q4 with 10, 20, 30 and 40 rows;
    q3 also calls `t.<step3>()` (`fail_once` or `block_once`)."""
    queries = []
    for number in range(1, 5):
        extra = f", t.{step3}()" if number == 3 else ""
        queries.append(
            f'[[exports.four.queries]]\nname = "q{number}"\n'
            f"sql = \"SELECT g AS n FROM (SELECT t.mark('q{number}'){extra}) AS m,"
            f' generate_series(1, {number * 10}) AS g"\n'
        )
    return "[exports.four]\nmax_attempts = 3\n" + "".join(queries)


def side_table_statements(db_url: str) -> list[str]:
    """The schema `t` for `four_queries`; run after `CREATE EXTENSION dblink`."""
    url = "'" + db_url.replace("'", "''") + "'"
    return [
        "CREATE SCHEMA t; CREATE TABLE t.ran (query text);"
        "CREATE TABLE t.flag (x int); INSERT INTO t.flag VALUES (1)",
        f"""CREATE FUNCTION t.mark(name text) RETURNS int VOLATILE LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM dblink_exec({url}, format('INSERT INTO t.ran VALUES (%L)', name));
            RETURN 1;
        END $$""",
        # RAISE EXCEPTION is P0001: a retryable failure (not a SQL mistake).
        f"""CREATE FUNCTION t.fail_once() RETURNS int VOLATILE LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM t.flag) THEN
                PERFORM dblink_exec({url}, 'DELETE FROM t.flag');
                RAISE EXCEPTION 'planned failure in step 3';
            END IF;
            RETURN 1;
        END $$""",
        # Hangs the first time (until its worker is killed); passes later.
        f"""CREATE FUNCTION t.block_once() RETURNS int VOLATILE LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM t.flag) THEN
                PERFORM dblink_exec({url}, 'DELETE FROM t.flag');
                PERFORM pg_sleep(120);
            END IF;
            RETURN 1;
        END $$""",
    ]
