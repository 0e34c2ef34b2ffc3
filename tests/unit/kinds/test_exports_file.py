"""daemon.kinds.exports_file: a valid file becomes kinds; every mistake is one line
naming the kind and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.errors import ConfigError, ParamError
from daemon.kinds.exports_file import FILES_STEP_TITLE, load_exports_file
from daemon.kinds.files import FileExport
from daemon.kinds.params import Param
from daemon.kinds.registry import Kind
from daemon.kinds.sql import SqlQueryExport

OWN_DB = "postgresql://exportd@localhost/exportd"

VALID = """
[exports.orders]
title = "My orders"
format = "jsonl"
statement_timeout = "5min"
max_attempts = 3
queue = "reports"

[exports.orders.params]
since = { type = "date", required = false, default = "1970-01-01" }
status = { type = "text" }
limit = { type = "int", required = true }
day = { type = "date", default = 2024-02-29 }

[[exports.orders.queries]]
name = "orders"
sql = '''
SELECT id, total FROM shop.orders
WHERE owner_id = %(owner_id)s AND created_at >= %(since)s AND status LIKE 'a%%'
ORDER BY id LIMIT %(limit)s;
'''

[[exports.orders.queries]]
name = "order-lines"
title = "Lines of the orders"
sql = "SELECT * FROM shop.lines WHERE owner_id = %(owner_id)s AND status = %(status)s"

[exports.catalog]
database_url = "postgresql://reader@db.example/shop"
statement_timeout = 1500

[[exports.catalog.queries]]
name = "products"
sql = "SELECT * FROM shop.products"

[exports.uploads]
type = "files"
title = "My uploads"
root = "/srv/uploads/{owner_id}"
include = ["**/*.pdf", "notes/*.txt"]
exclude = ["tmp/**"]

[exports.everything]
type = "files"
root = "/srv/public"
"""


def load(tmp_path: Path, text: str) -> list[Kind]:
    path = tmp_path / "exports.toml"
    path.write_text(text)
    return load_exports_file(path, default_database_url=OWN_DB)


def by_name(kinds: list[Kind]) -> dict[str, Kind]:
    return {kind.name: kind for kind in kinds}


def sql_step(kind: Kind, index: int) -> SqlQueryExport:
    run = kind.steps[index].run
    assert isinstance(run, SqlQueryExport)
    return run


def file_step(kind: Kind) -> FileExport:
    (step,) = kind.steps
    assert isinstance(step.run, FileExport)
    return step.run


def test_valid_file(tmp_path: Path) -> None:
    kinds = by_name(load(tmp_path, VALID))
    assert sorted(kinds) == ["catalog", "everything", "orders", "uploads"]

    orders = kinds["orders"]
    assert (orders.title, orders.max_attempts, orders.queue) == ("My orders", 3, "reports")
    assert orders.params == {
        "since": Param("date", required=False, default="1970-01-01"),
        "status": Param("text"),
        "limit": Param("int", required=True),
        "day": Param("date", default="2024-02-29"),  # a TOML date becomes the ISO string
    }
    assert [step.title for step in orders.steps] == ["Exporting orders", "Lines of the orders"]
    first, second = sql_step(orders, 0), sql_step(orders, 1)
    assert (first.name, first.arcname, first.format) == ("orders", "orders.jsonl", "jsonl")
    assert first.database_url == OWN_DB  # no database_url: exportd's own database
    assert first.statement_timeout_ms == 300_000
    assert first.sql.endswith("ORDER BY id LIMIT %(limit)s")  # trailing ';' dropped
    assert second.arcname == "order-lines.jsonl"

    catalog = kinds["catalog"]
    assert (catalog.title, catalog.max_attempts, catalog.queue) == (None, None, "exports")
    products = sql_step(catalog, 0)
    assert products.database_url == "postgresql://reader@db.example/shop"
    assert (products.format, products.statement_timeout_ms) == ("csv", 1500)
    assert "reader" not in repr(products)  # the URL may carry a password: never shown

    uploads = kinds["uploads"]
    assert uploads.title == "My uploads"
    assert uploads.params == {}
    assert [step.title for step in uploads.steps] == [FILES_STEP_TITLE]
    assert file_step(uploads) == FileExport(
        root="/srv/uploads/{owner_id}", include=("**/*.pdf", "notes/*.txt"), exclude=("tmp/**",)
    )
    assert file_step(kinds["everything"]) == FileExport(root="/srv/public")


def test_declared_params_are_enforced_at_job_creation(tmp_path: Path) -> None:
    orders = by_name(load(tmp_path, VALID))["orders"]
    assert orders.validate_params({"limit": 5}) == {
        "since": "1970-01-01",
        "day": "2024-02-29",
        "limit": 5,
    }
    with pytest.raises(ParamError, match=r"params\.owner_id: is not a parameter"):
        orders.validate_params({"limit": 5, "owner_id": "someone-else"})
    with pytest.raises(ParamError, match=r"params\.limit: is required"):
        orders.validate_params({})


@pytest.mark.parametrize(
    ("statement_timeout", "ms"),
    [("30s", 30_000), ("5min", 300_000), ("1h", 3_600_000), ("250ms", 250), ("2 s", 2000)],
)
def test_statement_timeout_units(tmp_path: Path, statement_timeout: str, ms: int) -> None:
    text = f"""
[exports.t]
statement_timeout = "{statement_timeout}"
[[exports.t.queries]]
name = "q"
sql = "SELECT 1"
"""
    (kind,) = load(tmp_path, text)
    assert sql_step(kind, 0).statement_timeout_ms == ms


def test_empty_file_declares_no_kinds(tmp_path: Path) -> None:
    assert load(tmp_path, "") == []


QUERY = '[[exports.k.queries]]\nname = "q"\nsql = "SELECT 1"\n'

INVALID = [
    pytest.param("[exports.k\n", "is not valid TOML", id="toml"),
    pytest.param("[other]\n", "other: unknown table", id="top-level-table"),
    pytest.param("exports = 1\n", "exports: must be a table", id="exports-not-table"),
    pytest.param("[exports]\nk = 1\n", "exports.k: must be a table", id="kind-not-table"),
    pytest.param(
        "[exports.Bad]\n" + QUERY.replace(".k.", ".Bad."), "exports.Bad: kind name", id="kind-name"
    ),
    pytest.param(
        "[exports.k]\ncolour = 1\n" + QUERY, "exports.k.colour: unknown key", id="unknown-key"
    ),
    pytest.param(
        "[exports.k]\nroot = '/srv'\n" + QUERY,
        "exports.k.root: only for type = 'files'",
        id="files-key-in-sql",
    ),
    pytest.param(
        "[exports.k]\ntype = 'files'\nroot = '/srv'\nformat = 'csv'\n",
        "exports.k.format: only for type = 'sql'",
        id="sql-key-in-files",
    ),
    pytest.param("[exports.k]\ntype = 'xml'\n", "exports.k.type: must be one of", id="type"),
    pytest.param(
        "[exports.k]\ntitle = 3\n" + QUERY, "exports.k.title: must be a non-empty", id="title"
    ),
    pytest.param(
        "[exports.k]\nformat = 'xlsx'\n" + QUERY, "exports.k.format: must be one of", id="format"
    ),
    pytest.param(
        "[exports.k]\nmax_attempts = 0\n" + QUERY, "exports.k.max_attempts:", id="attempts-0"
    ),
    pytest.param(
        "[exports.k]\nmax_attempts = true\n" + QUERY, "exports.k.max_attempts:", id="attempts-bool"
    ),
    pytest.param("[exports.k]\nqueue = 'a b'\n" + QUERY, "exports.k.queue:", id="queue"),
    pytest.param(
        "[exports.k]\nstatement_timeout = '5 minutes'\n" + QUERY,
        "exports.k.statement_timeout: must be a duration",
        id="timeout-syntax",
    ),
    pytest.param(
        "[exports.k]\nstatement_timeout = 0\n" + QUERY,
        "exports.k.statement_timeout:",
        id="timeout-0",
    ),
    pytest.param(
        "[exports.k]\nstatement_timeout = true\n" + QUERY,
        "exports.k.statement_timeout:",
        id="timeout-bool",
    ),
    pytest.param(
        "[exports.k]\ndatabase_url = 'mysql://secret@x/db'\n" + QUERY,
        "exports.k.database_url: must be a postgresql:// URL",
        id="database-url-scheme",
    ),
    pytest.param(
        "[exports.k]\ndatabase_url = 'host=x secret'\n" + QUERY,
        "exports.k.database_url: is not a valid",
        id="database-url-syntax",
    ),
    pytest.param("[exports.k]\n", "exports.k.queries: at least one query", id="no-queries"),
    pytest.param(
        "[exports.k]\nqueries = []\n", "exports.k.queries: must be a non-empty", id="queries-empty"
    ),
    pytest.param(
        "[[exports.k.queries]]\nsql = 'SELECT 1'\n",
        "exports.k.queries[0].name: is required",
        id="query-name",
    ),
    pytest.param(
        "[[exports.k.queries]]\nname = 'a/b'\nsql = 'SELECT 1'\n",
        "exports.k.queries[0].name: must be",
        id="query-name-path",
    ),
    pytest.param(
        QUERY + QUERY,
        "exports.k.queries[1].name: 'q' is already the name of queries[0]",
        id="query-name-duplicate",
    ),
    pytest.param(
        "[[exports.k.queries]]\nname = 'q'\n", "exports.k.queries[0].sql: is required", id="no-sql"
    ),
    pytest.param(
        "[[exports.k.queries]]\nname = 'q'\nsql = ' ; '\n",
        "exports.k.queries[0].sql: must be a non-empty",
        id="empty-sql",
    ),
    pytest.param(
        QUERY + "[[exports.k.queries]]\nname = 'r'\nsql = 'SELECT 1'\ncolumns = 2\n",
        "exports.k.queries[1].columns: unknown key",
        id="query-key",
    ),
    pytest.param(
        "[[exports.k.queries]]\nname = 'q'\nsql = 'SELECT %(since)s'\n",
        "exports.k.queries[0].sql: %(since)s is neither owner_id nor a declared param",
        id="undeclared-placeholder",
    ),
    pytest.param(
        "[[exports.k.queries]]\nname = 'q'\nsql = 'SELECT %s'\n",
        "exports.k.queries[0].sql: a literal % must be written %%",
        id="positional-placeholder",
    ),
    pytest.param(
        "[[exports.k.queries]]\nname = 'q'\nsql = \"SELECT 1 WHERE 'a' LIKE 'a%'\"\n",
        "exports.k.queries[0].sql: a literal % must be written %%",
        id="single-percent",
    ),
    pytest.param(
        "[[exports.k.queries]]\nname = 'q'\nsql = 'SELECT %(owner_id)b'\n",
        "exports.k.queries[0].sql: write the placeholder %(owner_id)s",
        id="binary-placeholder",
    ),
    pytest.param(
        "[exports.k.params]\nowner_id = { type = 'text' }\n" + QUERY,
        "exports.k.params.owner_id: is reserved",
        id="owner-id-param",
    ),
    pytest.param(
        "[exports.k.params]\nx = { type = 'money' }\n" + QUERY,
        "exports.k.params.x.type: unknown param type 'money'",
        id="param-type",
    ),
    pytest.param(
        "[exports.k.params]\nx = { type = 'int', default = 'ten' }\n" + QUERY,
        "exports.k.params.x.default: must be an integer",
        id="param-default",
    ),
    pytest.param(
        "[exports.k.params]\nx = { type = 'int', required = 'yes' }\n" + QUERY,
        "exports.k.params.x.required: must be true or false",
        id="param-required",
    ),
    pytest.param(
        "[exports.k.params]\nx = { type = 'int', help = 'a' }\n" + QUERY,
        "exports.k.params.x.help: unknown key",
        id="param-key",
    ),
    pytest.param(
        "[exports.k.params]\nx = 'int'\n" + QUERY,
        "exports.k.params.x: must be a table",
        id="param-table",
    ),
    pytest.param(
        "[exports.k.params]\n'a-b' = { type = 'int' }\n" + QUERY,
        "exports.k.params.a-b: a param name",
        id="param-name",
    ),
    pytest.param("[exports.k]\ntype = 'files'\n", "exports.k.root: is required", id="no-root"),
    pytest.param(
        "[exports.k]\ntype = 'files'\nroot = 'uploads'\n",
        "exports.k.root: must be an absolute path",
        id="relative-root",
    ),
    pytest.param(
        "[exports.k]\ntype = 'files'\nroot = '/srv/{owner}'\n",
        "exports.k.root: the only placeholder allowed is {owner_id}",
        id="root-placeholder",
    ),
    pytest.param(
        "[exports.k]\ntype = 'files'\nroot = '/srv/{owner_id}/../x'\n",
        "exports.k.root: must not contain '.' or '..'",
        id="root-dotdot",
    ),
    pytest.param(
        "[exports.k]\ntype = 'files'\nroot = '/srv'\ninclude = []\n",
        "exports.k.include: must name at least one pattern",
        id="include-empty",
    ),
    pytest.param(
        "[exports.k]\ntype = 'files'\nroot = '/srv'\ninclude = ['ok/*', '../*']\n",
        "exports.k.include[1]: '../*' must not contain",
        id="include-dotdot",
    ),
    pytest.param(
        "[exports.k]\ntype = 'files'\nroot = '/srv'\nexclude = '*.tmp'\n",
        "exports.k.exclude: must be an array",
        id="exclude-string",
    ),
    pytest.param(
        "[exports.k]\ntype = 'files'\nroot = '/srv'\nexclude = ['/abs/*']\n",
        "exports.k.exclude[0]: '/abs/*' must be relative",
        id="exclude-absolute",
    ),
    pytest.param(
        "[exports.k]\ntype = 'files'\nroot = '/srv'\n[exports.k.params]\nx = { type = 'int' }\n",
        "exports.k.params: only for type = 'sql'",
        id="params-in-files",
    ),
    pytest.param(
        QUERY + "estimate = 'guess'\n",
        "exports.k.queries[0].estimate: must be 'planner', got 'guess'",
        id="estimate-unknown",
    ),
    pytest.param(
        QUERY + "count_sql = ' '\n",
        "exports.k.queries[0].count_sql: must be a non-empty string",
        id="count-sql-empty",
    ),
    pytest.param(
        QUERY + "count_sql = 'SELECT count(*) FROM t WHERE x = %(nope)s'\n",
        "exports.k.queries[0].count_sql: %(nope)s is neither owner_id nor a declared param",
        id="count-sql-placeholder",
    ),
    pytest.param(
        QUERY + "count_sql = 'SELECT 1'\nestimate = 'planner'\n",
        "exports.k.queries[0]: give count_sql or estimate, not both",
        id="count-sql-and-estimate",
    ),
]


def test_count_sql_and_estimate_reach_the_step(tmp_path: Path) -> None:
    text = (
        QUERY
        + "estimate = 'planner'\n"
        + QUERY.replace('"q"', '"r"')
        + "count_sql = 'SELECT count(*) FROM t;'\n"
    )
    (kind,) = load(tmp_path, text)
    first, second = (step.run for step in kind.steps)
    assert isinstance(first, SqlQueryExport) and isinstance(second, SqlQueryExport)
    assert (first.estimate, first.count_sql) == ("planner", None)
    assert (second.estimate, second.count_sql) == (None, "SELECT count(*) FROM t")


@pytest.mark.parametrize(("text", "expected"), INVALID)
def test_invalid_file(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert caught.value.variable == "EXPORTD_EXPORTS_FILE"
    assert expected in caught.value.problem
    assert "\n" not in str(caught.value)
    assert "secret" not in str(caught.value)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^EXPORTD_EXPORTS_FILE: cannot read .*missing\.toml"):
        load_exports_file(tmp_path / "missing.toml", default_database_url=OWN_DB)
