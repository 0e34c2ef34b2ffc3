"""A run's checkpoint: the kept outputs of its finished resumable steps.

After a resumable step finishes (DESIGN §14), its outputs go to the run's
checkpoint area in storage (`Storage.checkpoints`): the files of `ctx.files`
that live in the work directory, and a record of the step — every
`PackageFile` (each field, generically: a `Path` inside the work directory
is stored relative to it, any other value as JSON), `ctx.result` and the
JSON values of `ctx.state`. The next attempt of the same run, on this host
or another, puts them back into its own work directory and starts at the
first step without a record. A record names its run and step: a store
that does not flush records (the local one) may show torn or stale bytes
after a power loss, and those are no record — the step runs again.

Only a prefix of the steps is ever kept: a step that is not resumable runs
again, and so does every step after it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from daemon.kinds.context import ExportContext, PackageFile
from daemon.kinds.registry import Step
from daemon.storage.backend import CheckpointStore, RunId

log = logging.getLogger("daemon.worker.pipeline")

RECORD_VERSION = 1


class RunCheckpoint:
    """The checkpoint of one run, as one attempt sees it (blocking methods:
    the pipeline calls them from a thread)."""

    def __init__(self, store: CheckpointStore, run: RunId, work_dir: Path) -> None:
        self.store = store
        self.run = run
        self.work_dir = work_dir
        self._kept_files: set[str] = set()
        self._fetched: _Fetched | None = None
        self._run_label = f"{run.job_id}-r{run.run}"

    def save(self, ctx: ExportContext, index: int, step: Step) -> None:
        """Keep what the steps up to `index` left: files first, then the record."""
        files = [encode_file(f, self.work_dir) for f in ctx.files]
        for member in files:
            for value in member.values():
                relative = value.get("work")
                if relative is None:
                    continue
                name = file_name(relative)
                if name not in self._kept_files:
                    self.store.put_file(self.run, name, self.work_dir / relative)
                    self._kept_files.add(name)
        record = {
            "version": RECORD_VERSION,
            "run": self._run_label,
            "step": index,
            "title": step.title,
            "files": files,
            "result": ctx.result,
            "state": _json_values(ctx.state),
        }
        self.store.put_record(self.run, index, json.dumps(record).encode())

    def prefetch(self, steps: list[Step]) -> None:
        """Read which steps the run kept, for `restore` to apply without a
        thread hop of its own: the worker calls it in the hop that makes the
        work directory. Kept files are not put back here (a download belongs
        to the attempt, under its deadline): when there are some, `restore`
        reads again and puts them back. A failure is held for `restore` to
        raise, where the attempt's failure handling expects it."""
        try:
            kept, last = self._read(steps)
        except Exception as exc:
            self._fetched = _Fetched(0, None, exc)
            return
        if last is None or not _work_files(last):
            self._fetched = _Fetched(kept, last)

    @property
    def prefetched(self) -> bool:
        return self._fetched is not None

    def restore(self, ctx: ExportContext, steps: list[Step]) -> int:
        """Put the kept outputs into `ctx` and its work directory; return how
        many steps (from the first) need not run again (0: none kept).
        Blocking unless prefetched (then it only decodes the record)."""
        fetched, self._fetched = self._fetched, None
        if fetched is None:
            kept, last = self._read(steps)
            if last is not None:
                for relative in _work_files(last):
                    name = file_name(relative)
                    self.store.get_file(self.run, name, self.work_dir / relative)
                    self._kept_files.add(name)
            fetched = _Fetched(kept, last)
        if fetched.error is not None:
            raise fetched.error
        last = fetched.record
        if last is None:
            return 0
        ctx.files = [decode_file(member, self.work_dir) for member in last["files"]]
        ctx.result = dict(last["result"] or {})
        ctx.state.update(last["state"] or {})
        return fetched.kept

    def _read(self, steps: list[Step]) -> tuple[int, dict[str, Any] | None]:
        """How many steps were kept, and the last one's record."""
        if not steps or not steps[0].resumable:
            return 0, None  # only a prefix of resumable steps is kept: nothing to read
        records = self.store.records(self.run)
        kept = 0
        last: dict[str, Any] | None = None
        while kept < len(steps) and kept in records and steps[kept].resumable:
            try:
                record = json.loads(records[kept])
            except ValueError:
                break
            # A kind whose steps changed since (a new version deployed) starts
            # over there; so does a record that is not this run's step (a
            # store may keep records unsynced: stale bytes are no record).
            if (
                not isinstance(record, dict)
                or record.get("version") != RECORD_VERSION
                or record.get("run") != self._run_label
                or record.get("step") != kept
                or record.get("title") != steps[kept].title
            ):
                break
            last = record
            kept += 1
        return (kept, last) if last is not None else (0, None)

    def delete(self) -> None:
        self.store.delete(self.run)


@dataclasses.dataclass(frozen=True)
class _Fetched:
    """What `prefetch` read: the kept steps, the last one's record, or its failure."""

    kept: int
    record: dict[str, Any] | None
    error: Exception | None = None


def _work_files(record: dict[str, Any]) -> list[str]:
    """The kept files of a record: paths relative to the work directory."""
    return [
        value["work"]
        for member in record["files"]
        for value in member.values()
        if value.get("work") is not None
    ]


def file_name(relative: str) -> str:
    """A kept file's name in the area: a hash of its path in the work
    directory (any characters a member name may hold stay out of keys)."""
    return hashlib.sha256(relative.encode()).hexdigest()[:40]


def encode_file(member: PackageFile, work_dir: Path) -> dict[str, dict[str, Any]]:
    """Every field of `member`, whatever fields `PackageFile` has: a path in
    the work directory as `{"work": relative}`, another path as
    `{"path": absolute}`, anything else as `{"value": json}`."""
    encoded: dict[str, dict[str, Any]] = {}
    for field in dataclasses.fields(member):
        value = getattr(member, field.name)
        if isinstance(value, Path):
            if value.is_relative_to(work_dir):
                encoded[field.name] = {"work": value.relative_to(work_dir).as_posix()}
            else:
                encoded[field.name] = {"path": str(value)}
        else:
            encoded[field.name] = {"value": value}
    return encoded


def decode_file(
    encoded: dict[str, dict[str, Any]], work_dir: Path, cls: type[PackageFile] = PackageFile
) -> PackageFile:
    """The inverse of `encode_file`, relative to a (new) work directory.
    A field this version does not know is dropped; one it has that the
    record lacks takes its default."""
    known = {field.name for field in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for name, value in encoded.items():
        if name not in known:
            continue
        if "work" in value:
            values[name] = work_dir / value["work"]
        elif "path" in value:
            values[name] = Path(value["path"])
        else:
            values[name] = value.get("value")
    return cls(**values)


def _json_values(state: dict[str, Any]) -> dict[str, Any]:
    """The entries of `ctx.state` a record can hold: JSON values, and not
    the pipeline's own (`_…`)."""
    kept: dict[str, Any] = {}
    for key, value in state.items():
        if not isinstance(key, str) or key.startswith("_"):
            continue
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            log.debug("ctx.state[%r] is not JSON: not kept for a resumed attempt", key)
            continue
        kept[key] = value
    return kept
