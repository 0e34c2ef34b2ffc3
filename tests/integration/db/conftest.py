"""The large table of the query-plan tests, built once per session.

`test_query_plans` and `test_fair_fetch_plans` only read it (EXPLAIN and
counts), so both share one copy: filling 200 000 rows and analysing them
takes seconds, and a module-scoped fixture would pay it once per module
(and again on each test worker that runs one of them).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.conftest import PgServer

ROWS = 200_000

GENERATE = """
SET session_replication_role = replica;  -- bulk load: skip the insert trigger
INSERT INTO exportd.jobs (kind, owner_id, status, created_at, scheduled_at, completed_at,
                          package_path, package_expires_at, package_deleted_at)
SELECT
    (ARRAY['orders', 'invoices', 'uploads'])[1 + i %% 3],
    'owner-' || (i %% 2000),
    CASE WHEN i %% 500 = 0 THEN 'pending'
         WHEN i %% 500 = 1 THEN 'in_progress'
         WHEN i %% 50 = 2 THEN 'rolled_back'
         ELSE 'completed' END::exportd.job_status,
    now() - (i || ' seconds')::interval,
    now() - (i || ' seconds')::interval,
    now() - (i || ' seconds')::interval,
    CASE WHEN i %% 500 > 2 AND i %% 2 = 0 THEN 'p/' || i || '.tar.gz' END,
    now() + ((i - 100000) || ' seconds')::interval,
    CASE WHEN i %% 2 = 1 THEN now() END
FROM generate_series(1, %(rows)s) AS i;
SET session_replication_role = DEFAULT;
ANALYZE exportd.jobs;
"""


@pytest.fixture(scope="session")
def big_db(pg_server: PgServer, template_db: str) -> Iterator[str]:
    name = f"exportd_plans_{uuid.uuid4().hex[:8]}"
    with pg_server.janitor(name, template_dbname=template_db):
        url = pg_server.url(name)
        with psycopg.connect(url, autocommit=True) as conn, psycopg.ClientCursor(conn) as cur:
            cur.execute(GENERATE, {"rows": ROWS})
        yield url
