"""The exports file (`EXPORTD_EXPORTS_FILE`): built-in SQL and file kinds, no Python.

Each table under `exports` is a kind named by its key (DESIGN §4):

    [exports.orders]
    title = "My orders"                 # optional
    type = "sql"                        # "sql" (default) or "files"
    format = "csv"                      # "csv" (default, with header) or "jsonl"
    database_url = "postgresql://…"     # optional; default: exportd's own database
    statement_timeout = "5min"          # optional: 30s, 5min, 1h… or milliseconds
    max_attempts = 3                    # optional
    queue = "exports"                   # optional
    max_running = 2                     # optional: at most 2 run at once, all workers
    timeout = "10min"                   # optional: deadline of one attempt
    max_package_bytes = "2GB"           # optional: bytes, or with kB/MB/GB/TB/KiB/MiB/GiB/TiB

    [exports.orders.params]
    since = { type = "date", required = false, default = "1970-01-01" }

    [[exports.orders.queries]]          # one step and one file per query
    name = "orders"                     # -> orders.csv
    title = "Exporting orders"          # optional
    sql = "select … where owner_id = %(owner_id)s and created_at >= %(since)s"
    estimate = "planner"                # optional: a percentage from EXPLAIN's row estimate
    # count_sql = "select count(*) …"   # optional instead: one number, same placeholders

    [exports.uploads]
    type = "files"
    root = "/srv/uploads/{owner_id}"
    include = ["**/*.pdf"]              # optional, default ["**/*"]
    exclude = []                        # optional

The file is checked completely when it is loaded, so a mistake stops the
process at start with one line, `EXPORTD_EXPORTS_FILE: exports.<kind>.<field>:
<problem>`, rather than failing jobs later. Query indexes count from 0
(`queries[0]` is the first query). Every placeholder of a query must be
`%(owner_id)s` or a declared param: a typo would otherwise only show up as a
failed job. A query that does not use `%(owner_id)s` is allowed (reference
data is the same for everyone); whether that is right is the operator's call.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any, NoReturn

from daemon.db.copy import FORMATS
from daemon.db.urls import check_database_url
from daemon.errors import ConfigError, KindError, ParamError
from daemon.kinds.files import DEFAULT_INCLUDE, FileExport, check_root_template, compile_glob
from daemon.kinds.params import Param
from daemon.kinds.registry import Kind
from daemon.kinds.sql import ESTIMATES, SqlQueryExport

VARIABLE = "EXPORTD_EXPORTS_FILE"
TYPES = ("sql", "files")
FILES_STEP_TITLE = "Collecting files"

_COMMON_KEYS = frozenset(
    {"title", "type", "max_attempts", "queue", "max_running", "timeout", "max_package_bytes"}
)
_KEYS = {
    "sql": _COMMON_KEYS | {"format", "database_url", "statement_timeout", "params", "queries"},
    "files": _COMMON_KEYS | {"root", "include", "exclude"},
}
_QUERY_KEYS = frozenset({"name", "title", "sql", "count_sql", "estimate"})
_PARAM_KEYS = frozenset({"type", "required", "default"})

_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_QUERY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,63}$")
# `%%`, `%(name)x` or any other `%…`, in psycopg's placeholder syntax.
_PERCENT = re.compile(r"%(?:(?P<literal>%)|\((?P<name>[^)]*)\)(?P<conv>.?)|(?P<other>.?))", re.S)
# PostgreSQL's own units for time settings, in milliseconds.
_TIME_UNITS = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?\s*$")
_MAX_TIMEOUT_MS = 2**31 - 1  # statement_timeout is an int of milliseconds
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_MAX_BYTES = 2**63 - 1  # package_size_bytes is a bigint


def load_exports_file(path: Path, *, default_database_url: str) -> list[Kind]:
    """Read and check the exports file; return its kinds, ready for a KindRegistry.

    `default_database_url` is the database of SQL kinds that set no
    `database_url`: exportd's own (the worker passes its resolved URL, the
    embedded server's included). Each SQL step keeps its URL from here on.
    An empty file, or one with no `[exports.*]` table, declares no kinds.
    Raises ConfigError("EXPORTD_EXPORTS_FILE", …) on the first problem.
    """
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        _fail(f"cannot read {str(path)!r}: {exc.strerror}")
    except tomllib.TOMLDecodeError as exc:
        _fail(f"{str(path)!r} is not valid TOML: {exc}")
    for key in data:
        if key != "exports":
            _fail(f"{key}: unknown table (kinds are declared as [exports.NAME])")
    exports = data.get("exports", {})
    if not isinstance(exports, dict):
        _fail("exports: must be a table of kinds ([exports.NAME])")
    return [_kind(name, table, default_database_url) for name, table in exports.items()]


def _fail(problem: str) -> NoReturn:
    raise ConfigError(VARIABLE, problem)


def _kind(name: str, table: Any, default_database_url: str) -> Kind:
    where = f"exports.{name}"
    if not isinstance(table, dict):
        _fail(f"{where}: must be a table ([{where}])")
    kind_type = _string(table, "type", where, default="sql")
    if kind_type not in TYPES:
        _fail(f"{where}.type: must be one of {', '.join(TYPES)}, got {kind_type!r}")
    for key in table:
        if key not in _KEYS[kind_type]:
            other = next(t for t in TYPES if t != kind_type)
            hint = f"only for type = {other!r}" if key in _KEYS[other] else "unknown key"
            _fail(f"{where}.{key}: {hint}")
    title = _string(table, "title", where, default=None)
    max_attempts = table.get("max_attempts")
    if max_attempts is not None and (
        isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1
    ):
        _fail(f"{where}.max_attempts: must be an integer >= 1")
    queue = _string(table, "queue", where, default="exports")
    if not _QUEUE_NAME.match(queue):
        _fail(f"{where}.queue: must be 1-63 letters, digits, '_', '.', ':' or '-'")
    params = _params(table.get("params", {}), where) if kind_type == "sql" else {}
    max_running = table.get("max_running")
    if max_running is not None and (
        isinstance(max_running, bool) or not isinstance(max_running, int) or max_running < 1
    ):
        _fail(f"{where}.max_running: must be an integer >= 1")
    timeout = None
    if "timeout" in table:
        timeout = _timeout_ms(table["timeout"], f"{where}.timeout") / 1000
    max_bytes = None
    if "max_package_bytes" in table:
        max_bytes = _size_bytes(table["max_package_bytes"], f"{where}.max_package_bytes")
    try:
        kind = Kind(
            name,
            title=title,
            params=params,
            max_attempts=max_attempts,
            queue=queue,
            max_running=max_running,
            timeout=timeout,
            max_package_bytes=max_bytes,
        )
    except KindError as exc:
        _fail(f"{where}: {exc}")
    if kind_type == "sql":
        _add_queries(kind, table, where, default_database_url)
    else:
        _add_files(kind, table, where)
    return kind


def _string(table: Mapping[str, Any], key: str, where: str, *, default: Any) -> Any:
    value = table.get(key, default)
    if value is not default and (not isinstance(value, str) or not value.strip()):
        _fail(f"{where}.{key}: must be a non-empty string")
    return value


def _params(raw: Any, where: str) -> dict[str, Param]:
    if not isinstance(raw, dict):
        _fail(f"{where}.params: must be a table of params")
    params: dict[str, Param] = {}
    for name, spec in raw.items():
        here = f"{where}.params.{name}"
        if name == "owner_id":
            _fail(f"{here}: is reserved: %(owner_id)s is always the authenticated subject")
        if not _PARAM_NAME.match(name):
            _fail(f"{here}: a param name is letters, digits and '_' (not starting with a digit)")
        if not isinstance(spec, dict):
            _fail(f'{here}: must be a table like {{ type = "text", required = false }}')
        for key in spec:
            if key not in _PARAM_KEYS:
                _fail(f"{here}.{key}: unknown key (use type, required, default)")
        type_ = spec.get("type", "text")
        required = spec.get("required", False)
        if not isinstance(required, bool):
            _fail(f"{here}.required: must be true or false")
        try:
            Param(type_)
        except KindError as exc:
            _fail(f"{here}.type: {exc}")
        try:
            params[name] = Param(type_, required=required, default=_json(spec.get("default")))
        except ParamError as exc:
            _fail(f"{here}.default: {exc.problem}")
    return params


def _json(value: Any) -> Any:
    """TOML dates and times as the ISO strings a job's params would carry."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _add_queries(kind: Kind, table: Mapping[str, Any], where: str, default_url: str) -> None:
    fmt = table.get("format", "csv")
    if fmt not in FORMATS:
        _fail(f"{where}.format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    database_url = default_url
    if "database_url" in table:
        database_url = _database_url(table["database_url"], f"{where}.database_url")
    timeout = None
    if "statement_timeout" in table:
        timeout = _timeout_ms(table["statement_timeout"], f"{where}.statement_timeout")
    queries = table.get("queries")
    if queries is None:
        _fail(f"{where}.queries: at least one query is needed ([[{where}.queries]])")
    if not isinstance(queries, list) or not queries:
        _fail(f"{where}.queries: must be a non-empty array of tables ([[{where}.queries]])")
    seen: dict[str, int] = {}
    for index, query in enumerate(queries):
        here = f"{where}.queries[{index}]"
        if not isinstance(query, dict):
            _fail(f"{here}: must be a table")
        for key in query:
            if key not in _QUERY_KEYS:
                _fail(f"{here}.{key}: unknown key (use name, title, sql, count_sql, estimate)")
        name = query.get("name")
        if name is None:
            _fail(f"{here}.name: is required (it names the file in the package)")
        if not isinstance(name, str) or not _QUERY_NAME.match(name):
            _fail(f"{here}.name: must be letters, digits, '_', '.' or '-' (a file name)")
        if name in seen:
            _fail(f"{here}.name: {name!r} is already the name of queries[{seen[name]}]")
        seen[name] = index
        title = _string(query, "title", here, default=f"Exporting {name}")
        text = query.get("sql")
        if text is None:
            _fail(f"{here}.sql: is required")
        if not isinstance(text, str) or not text.strip().rstrip(";").strip():
            _fail(f"{here}.sql: must be a non-empty string")
        text = text.strip().rstrip(";").rstrip()
        _check_placeholders(text, set(kind.params), f"{here}.sql")
        count_sql, estimate = _estimate(query, kind, here)
        step = SqlQueryExport(
            name=name,
            sql=text,
            database_url=database_url,
            format=fmt,
            statement_timeout_ms=timeout,
            count_sql=count_sql,
            estimate=estimate,
        )
        kind.add_step(title, step, resumable=True)


def _estimate(query: Mapping[str, Any], kind: Kind, here: str) -> tuple[str | None, str | None]:
    """`count_sql` (a query returning one number, same placeholders) or
    `estimate = "planner"`: what gives the query's step a percentage."""
    count_sql = query.get("count_sql")
    estimate = query.get("estimate")
    if count_sql is not None and estimate is not None:
        _fail(f"{here}: give count_sql or estimate, not both")
    if estimate is not None and estimate not in ESTIMATES:
        _fail(f"{here}.estimate: must be {' or '.join(map(repr, ESTIMATES))}, got {estimate!r}")
    if count_sql is not None:
        if not isinstance(count_sql, str) or not count_sql.strip().rstrip(";").strip():
            _fail(f"{here}.count_sql: must be a non-empty string (a query returning one number)")
        count_sql = count_sql.strip().rstrip(";").rstrip()
        _check_placeholders(count_sql, set(kind.params), f"{here}.count_sql")
    return count_sql, estimate


def _check_placeholders(text: str, declared: set[str], where: str) -> None:
    for match in _PERCENT.finditer(text):
        if match["literal"]:
            continue
        name = match["name"]
        if name is None:
            _fail(
                f"{where}: a literal % must be written %% and placeholders as %(name)s "
                f"(found {match[0]!r})"
            )
        if match["conv"] != "s":
            _fail(f"{where}: write the placeholder %({name})s (found {match[0]!r})")
        if name != "owner_id" and name not in declared:
            _fail(f"{where}: %({name})s is neither owner_id nor a declared param")


def _database_url(raw: Any, where: str) -> str:
    # Messages here never repeat the value: it may carry a password.
    if not isinstance(raw, str):
        _fail(f"{where}: must be a non-empty string")
    try:
        return check_database_url(raw)
    except ValueError as exc:
        _fail(f"{where}: {exc}")


def _timeout_ms(raw: Any, where: str) -> int:
    problem = f"{where}: must be a duration like '30s', '5min', '1h' or milliseconds, got {raw!r}"
    if isinstance(raw, bool):
        _fail(problem)
    if isinstance(raw, int):
        ms = float(raw)
    elif isinstance(raw, str) and (match := _DURATION.match(raw)):
        ms = float(match[1]) * _TIME_UNITS[match[2] or "ms"]
    else:
        _fail(problem)
    if not 1 <= ms <= _MAX_TIMEOUT_MS:
        _fail(f"{where}: must be between 1ms and about 24 days (leave it out for no timeout)")
    return round(ms)


def _size_bytes(raw: Any, where: str) -> int:
    """A byte count: an integer, or a string like "500MB", "2 GiB" (kB = 1000)."""
    problem = f"{where}: must be a number of bytes like 1000000, '500MB' or '2GiB', got {raw!r}"
    if isinstance(raw, bool):
        _fail(problem)
    if isinstance(raw, int):
        size = float(raw)
    elif isinstance(raw, str) and (match := _SIZE.match(raw)) and match[2].lower() in _SIZE_UNITS:
        size = float(match[1]) * _SIZE_UNITS[match[2].lower()]
    else:
        _fail(problem)
    if not 1 <= size <= _MAX_BYTES:
        _fail(f"{where}: must be at least 1 byte (leave it out for no limit)")
    return int(size)


def _add_files(kind: Kind, table: Mapping[str, Any], where: str) -> None:
    root = table.get("root")
    if root is None:
        _fail(f"{where}.root: is required (the directory to export, may contain {{owner_id}})")
    if not isinstance(root, str):
        _fail(f"{where}.root: must be a string")
    try:
        check_root_template(root)
    except ValueError as exc:
        _fail(f"{where}.root: {exc}")
    include = _globs(table.get("include", list(DEFAULT_INCLUDE)), f"{where}.include")
    if not include:
        _fail(f'{where}.include: must name at least one pattern (default: ["**/*"])')
    exclude = _globs(table.get("exclude", []), f"{where}.exclude")
    kind.add_step(
        FILES_STEP_TITLE,
        FileExport(root=root, include=include, exclude=exclude),
        resumable=True,
    )


def _globs(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list):
        _fail(f"{where}: must be an array of glob patterns")
    for index, pattern in enumerate(raw):
        if not isinstance(pattern, str):
            _fail(f"{where}[{index}]: must be a string")
        try:
            compile_glob(pattern)
        except ValueError as exc:
            _fail(f"{where}[{index}]: {exc}")
    return tuple(raw)
