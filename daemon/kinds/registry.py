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

`@tool.step("…", resumable=True)` lets an automatic retry keep the step's
outputs instead of running it again (DESIGN §14).

or built from the exports file (`daemon/kinds/exports_file.py`). Modules named in
`EXPORTD_KINDS` and entry points of the group `exportd.kinds` are scanned
for `Kind` objects (an entry point may also name a single Kind or a callable
returning kinds).

Limits are keyword arguments of `Kind` (DESIGN §13), the exports file has
the same keys: `max_running=1` (at most one of this kind's exports runs at
once, across all workers), `timeout=120.0` (seconds: an attempt running
longer is cancelled, recorded as failed with "deadline exceeded" and retried
while attempts remain), `max_package_bytes=10**9` (a larger package fails
the attempt, and no part of it is kept).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import TYPE_CHECKING, Any

from daemon.errors import KindError, ParamError, UnknownKind
from daemon.kinds.params import Param

if TYPE_CHECKING:
    from daemon.kinds.context import ExportContext

StepFn = Callable[["ExportContext"], Awaitable[Any]]

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
# An attempt's deadline, like a statement timeout, fits PostgreSQL's int of ms.
MAX_TIMEOUT_SECONDS = (2**31 - 1) // 1000
ENTRY_POINT_GROUP = "exportd.kinds"


@dataclass
class Step:
    """One step of a kind: a title, `run(ctx)` and an optional `rollback(ctx)`.

    `resumable`: what the step leaves behind is all in `ctx.files` (their
    bytes), `ctx.result` and the JSON values of `ctx.state`, so an automatic
    retry of its run may keep that instead of running the step again
    (DESIGN §14, docs/kinds.md "Resume").
    """

    title: str
    run: StepFn
    undo: StepFn | None = None
    resumable: bool = False

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
    # Fairness and limits (DESIGN §13); None: no limit.
    max_running: int | None = None
    timeout: float | None = None  # seconds per attempt
    max_package_bytes: int | None = None

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
        for name in ("max_running", "max_package_bytes"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise KindError(f"kind {self.name!r}: {name} must be an integer >= 1")
        timeout = self.timeout
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= MAX_TIMEOUT_SECONDS
        ):
            raise KindError(
                f"kind {self.name!r}: timeout must be a number of seconds > 0 "
                f"and at most {MAX_TIMEOUT_SECONDS} (about 24 days)"
            )

    def step(self, title: str, *, resumable: bool = False) -> Callable[[StepFn], Step]:
        """Decorator: append a step to this kind."""

        def register(fn: StepFn) -> Step:
            step = Step(title=title, run=fn, resumable=resumable)
            self.steps.append(step)
            return step

        return register

    def add_step(
        self,
        title: str,
        run: StepFn,
        rollback: StepFn | None = None,
        *,
        resumable: bool = False,
    ) -> Step:
        step = Step(title=title, run=run, undo=rollback, resumable=resumable)
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

    def describe(self, *, paused: bool = False) -> dict[str, Any]:
        """What `GET /api/v1/kinds` and `exportd kinds ls` show of this kind
        (DESIGN §16); whether it is paused is stored in the database, so the
        caller, which read it there, says."""
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
            "paused": paused,
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

    def describe(self, paused: Collection[str] = ()) -> list[dict[str, Any]]:
        """Every kind's `Kind.describe()`, by name; `paused` names the paused ones."""
        return [self._kinds[name].describe(paused=name in paused) for name in self.names()]

    def running_limits(self) -> dict[str, int]:
        """{kind: max_running} of the kinds that set one (the worker's fetch)."""
        return {kind.name: kind.max_running for kind in self if kind.max_running is not None}

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


def _kinds_in(module: ModuleType) -> list[Kind]:
    return [value for value in vars(module).values() if isinstance(value, Kind)]
