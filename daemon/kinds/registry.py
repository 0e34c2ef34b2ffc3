"""Export kinds: a named, ordered list of steps, with declared parameters.

A kind is declared in Python with a small decorator API:

    from daemon.kinds.registry import Kind, Param

    tool = Kind("tool", title="Tool as a boilerplate project",
                params={"name": Param("text", required=True)})

    @tool.step("Render the project")
    async def render(ctx):
        ...

    @render.rollback
    async def unrender(ctx):
        ...

or built from the exports file (`daemon/kinds/exports_file.py`). Modules named in
`EXPORTD_KINDS` and entry points of the group `exportd.kinds` are scanned
for `Kind` objects (an entry point may also name a single Kind or a callable
returning kinds).
"""

from __future__ import annotations

import importlib
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from importlib.metadata import entry_points
from types import ModuleType
from typing import TYPE_CHECKING, Any

from daemon.errors import ExportdError

if TYPE_CHECKING:
    from daemon.kinds.context import ExportContext

StepFn = Callable[["ExportContext"], Awaitable[Any]]

PARAM_TYPES = ("text", "int", "float", "bool", "date", "timestamp", "uuid")
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
ENTRY_POINT_GROUP = "exportd.kinds"
MAX_TEXT_PARAM = 10_000
# What PostgreSQL accepts for a value bound into an export query (checked
# against a real server, tests/integration/kinds/test_param_ranges.py):
# bigint, less its lowest value — psycopg writes a negative number as ` -n`,
# and `-9223372036854775808::bigint` parses as -(9223372036854775808::bigint),
# which overflows;
INT_PARAM_MIN = -(2**63) + 1
INT_PARAM_MAX = 2**63 - 1
# a time zone offset of whole seconds up to 15:59:59 either way (Python
# accepts ±23:59:59.999999). Dates and timestamps in Python's years 1…9999
# are all within PostgreSQL's range.
MAX_UTC_OFFSET = timedelta(hours=15, minutes=59, seconds=59)


class KindError(ExportdError):
    """A kind is declared wrongly (bad name, duplicate, no steps)."""


class UnknownKind(ExportdError):
    """No kind has this name."""


class ParamError(ExportdError):
    """A job parameter is missing, unknown or of the wrong type. Names the field."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"params.{field}: {problem}")


@dataclass(frozen=True)
class Param:
    """A declared parameter: its type, whether it is required, its default.

    Values arrive as JSON; dates, timestamps and uuids as ISO strings. The
    validated value is stored back in the job as JSON (so `date` stays an ISO
    string in `params`) and converted with `convert()` when a step needs it.
    """

    type: str = "text"
    required: bool = False
    default: Any = None

    def __post_init__(self) -> None:
        if self.type not in PARAM_TYPES:
            known = ", ".join(PARAM_TYPES)
            raise KindError(f"unknown param type {self.type!r} (use one of {known})")
        if self.default is not None:
            self.check(self.default, "default")

    def check(self, value: Any, name: str) -> Any:
        """Validate a JSON value; return its canonical JSON form."""
        kind = self.type
        if kind == "text":
            if not isinstance(value, str):
                raise ParamError(name, "must be a string")
            if "\x00" in value:
                raise ParamError(name, "must not contain NUL characters")
            if not _encodable(value):
                raise ParamError(name, "must be valid Unicode (no lone surrogates)")
            if len(value) > MAX_TEXT_PARAM:
                raise ParamError(name, f"must be at most {MAX_TEXT_PARAM} characters")
            return value
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ParamError(name, "must be an integer")
            if not INT_PARAM_MIN <= value <= INT_PARAM_MAX:
                raise ParamError(name, f"must be between {INT_PARAM_MIN} and {INT_PARAM_MAX}")
            return value
        if kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ParamError(name, "must be a number")
            try:
                number = float(value)
            except OverflowError:  # an integer beyond any double
                raise ParamError(name, "must be a finite number") from None
            if not math.isfinite(number):
                raise ParamError(name, "must be a finite number")
            return number
        if kind == "bool":
            if not isinstance(value, bool):
                raise ParamError(name, "must be true or false")
            return value
        if not isinstance(value, str):
            raise ParamError(name, f"must be a {kind} string")
        try:
            if kind == "date":
                return date.fromisoformat(value).isoformat()
            if kind == "timestamp":
                parsed = datetime.fromisoformat(value)
                offset = parsed.utcoffset()
                if offset is None:
                    raise ParamError(name, "must include a time zone offset (e.g. Z or +02:00)")
                if abs(offset) > MAX_UTC_OFFSET or offset.microseconds:
                    raise ParamError(
                        name, "time zone offset must be whole seconds within ±15:59:59"
                    )
                return parsed.isoformat()
            return str(uuid.UUID(value))
        except ValueError:
            raise ParamError(name, f"is not a valid {kind}: {value[:40]!r}") from None

    def convert(self, value: Any) -> Any:
        """The Python value (date, datetime, UUID…) for a validated JSON value."""
        if value is None:
            return None
        if self.type == "date":
            return date.fromisoformat(value)
        if self.type == "timestamp":
            return datetime.fromisoformat(value)
        if self.type == "uuid":
            return uuid.UUID(value)
        return value


@dataclass
class Step:
    """One step of a kind: a title, `run(ctx)` and an optional `rollback(ctx)`."""

    title: str
    run: StepFn
    undo: StepFn | None = None

    def rollback(self, fn: StepFn) -> StepFn:
        """Decorator: register the rollback of this step."""
        self.undo = fn
        return fn


@dataclass
class Kind:
    """A named export: ordered steps plus declared params.

    `owner_id` is never a param: steps read the authenticated owner from
    `ctx.job.owner_id`, so no request can export someone else's data.
    """

    name: str
    title: str | None = None
    params: Mapping[str, Param] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    max_attempts: int | None = None
    queue: str = "exports"

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise KindError(
                f"kind name {self.name!r} must be lower case letters, digits, '-' or '_' "
                "(at most 63, starting with a letter)"
            )
        if "owner_id" in self.params:
            raise KindError(f"kind {self.name!r}: 'owner_id' is reserved and cannot be a param")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise KindError(f"kind {self.name!r}: max_attempts must be >= 1")

    def step(self, title: str) -> Callable[[StepFn], Step]:
        """Decorator: append a step to this kind."""

        def register(fn: StepFn) -> Step:
            step = Step(title=title, run=fn)
            self.steps.append(step)
            return step

        return register

    def add_step(self, title: str, run: StepFn, rollback: StepFn | None = None) -> Step:
        step = Step(title=title, run=run, undo=rollback)
        self.steps.append(step)
        return step

    def validate_params(self, params: Any) -> dict[str, Any]:
        """Check params against the declaration; return them with defaults filled in."""
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ParamError("*", "params must be a JSON object")
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            declared = _listing(self.params)
            known = f"parameters: {declared}" if declared else "it takes no parameters"
            raise ParamError(
                _shown(unknown[0]), f"is not a parameter of kind {self.name!r} ({known})"
            )
        clean: dict[str, Any] = {}
        for name, spec in self.params.items():
            value = params.get(name)
            if value is None:
                if spec.required:
                    raise ParamError(name, "is required")
                if spec.default is not None:
                    clean[name] = spec.check(spec.default, name)
                continue
            clean[name] = spec.check(value, name)
        return clean

    def converted(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Validated params as Python values (dates as `date`, …); undeclared are None."""
        return {name: spec.convert(params.get(name)) for name, spec in self.params.items()}

    def describe(self) -> dict[str, Any]:
        """What `GET /api/v1/kinds` and `exportd kinds ls` show of this kind
        (DESIGN §16). `paused` is always false: kinds cannot be paused yet."""
        return {
            "kind": self.name,
            "title": self.title,
            "params": {
                name: {
                    "type": spec.type,
                    "required": spec.required,
                    "default": None if spec.default is None else spec.check(spec.default, name),
                }
                for name, spec in self.params.items()
            },
            "paused": False,
        }


class KindRegistry:
    """The kinds a process knows, by name."""

    def __init__(self, kinds: Iterable[Kind] = ()) -> None:
        self._kinds: dict[str, Kind] = {}
        for kind in kinds:
            self.register(kind)

    def register(self, kind: Kind) -> Kind:
        if not kind.steps:
            raise KindError(f"kind {kind.name!r} has no steps")
        if kind.name in self._kinds and self._kinds[kind.name] is not kind:
            raise KindError(f"two kinds are named {kind.name!r}")
        self._kinds[kind.name] = kind
        return kind

    def get(self, name: str) -> Kind:
        try:
            return self._kinds[name]
        except KeyError:
            known = _listing(self._kinds) or "none"
            raise UnknownKind(f"unknown kind {_shown(name)!r} (known: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def names(self) -> list[str]:
        return sorted(self._kinds)

    def describe(self) -> list[dict[str, Any]]:
        """Every kind's `Kind.describe()`, by name."""
        return [self._kinds[name].describe() for name in self.names()]

    def __iter__(self) -> Any:
        return iter(self._kinds[name] for name in self.names())

    def load_module(self, module_name: str) -> list[Kind]:
        """Import a module and register every Kind defined at its top level."""
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise KindError(f"cannot import kinds module {module_name!r}: {exc}") from None
        return [self.register(kind) for kind in _kinds_in(module)]

    def load_entry_points(self) -> list[Kind]:
        """Register kinds published by installed packages (group `exportd.kinds`)."""
        found: list[Kind] = []
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            obj = ep.load()
            if isinstance(obj, Kind):
                found.append(self.register(obj))
            elif isinstance(obj, ModuleType):
                found.extend(self.register(k) for k in _kinds_in(obj))
            elif callable(obj):
                found.extend(self.register(k) for k in obj())
            else:
                raise KindError(f"entry point {ep.name!r} is not a Kind, module or callable")
        return found


# Error messages list at most this many names, and show at most this much of
# a name the caller sent (which may be a 60 KB string).
_LISTED = 50
_SHOWN = 64


def _listing(names: Iterable[str]) -> str:
    """`a, b, c` (sorted), cut after _LISTED names: for "unknown X" messages."""
    ordered = sorted(names)
    text = ", ".join(ordered[:_LISTED])
    return text + (f", … ({len(ordered) - _LISTED} more)" if len(ordered) > _LISTED else "")


def _shown(name: str) -> str:
    return name if len(name) <= _SHOWN else name[:_SHOWN] + "…"


def _encodable(text: str) -> bool:
    """True when `text` is valid Unicode, i.e. can be sent to PostgreSQL as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _kinds_in(module: ModuleType) -> list[Kind]:
    return [value for value in vars(module).values() if isinstance(value, Kind)]
