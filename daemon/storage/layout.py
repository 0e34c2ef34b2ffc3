"""The names of things under the storage root, in one place.

    <aa>/<job_id>/r<run>-a<attempt>-<token>.tar.gz        published packages
    .tmp/<job_id>-r<run>-a<attempt>-<token>.tar.gz.part   packages being written
    .work/<job_id>-r<run>-a<attempt>-<token>/             work directories of running steps
    .checkpoints/<job_id>-r<run>/                         kept outputs of a run's finished steps

Storage writes these names and the orphan sweep reads them back: every name
starts with (or sits in a directory named by) its job id, which is how the
sweep keeps what a still-running job may be writing. Building and parsing
live side by side here so the two cannot drift apart. Paths are relative to
the root and use `/`, as job rows store them.
"""

from __future__ import annotations

from uuid import UUID

# Modes of the directories storage creates, whatever the umask: packages
# readable by the group (nginx's worker user with EXPORTD_ACCEL_REDIRECT, see
# docs/operations.md), nobody else; a running step's work directory private.
DIR_MODE = 0o750
WORK_DIR_MODE = 0o700

TMP_DIR = ".tmp"
WORK_DIR = ".work"
CHECKPOINT_DIR = ".checkpoints"
# The scratch directories: not package folders, never removed when empty.
SCRATCH_DIRS = (TMP_DIR, WORK_DIR, CHECKPOINT_DIR)
_UUID_LENGTH = 36


def attempt_label(job_id: UUID, run: int, attempt: int) -> str:
    """`<job_id>-r<run>-a<attempt>`: names an attempt's scratch files."""
    return f"{job_id}-r{run}-a{attempt}"


def work_dir_path(label: str, token: str) -> str:
    """Relative path of a work directory for the attempt `label`."""
    return f"{WORK_DIR}/{label}-{token}"


def checkpoint_path(job_id: UUID, run: int) -> str:
    """Relative path of a run's checkpoint area: `.checkpoints/<job_id>-r<run>`.

    Per run, not per attempt: every attempt of the run reads and extends it;
    the next run (a manual retry, a re-export) never sees it."""
    return f"{CHECKPOINT_DIR}/{job_id}-r{int(run)}"


def checkpoint_run_of(name: str) -> tuple[UUID, int] | None:
    """(job_id, run) of a checkpoint area's name `<job_id>-r<run>`; None for
    anything else."""
    job, sep, run = name.rpartition("-r")
    if not sep or not run.isdigit() or len(job) != _UUID_LENGTH:
        return None
    try:
        return UUID(job), int(run)
    except ValueError:
        return None


def is_checkpoint(relative: str) -> bool:
    """The entry lies in a checkpoint area (the checkpoint sweep's, not the
    orphan sweep's: it must know whether the run ended, not only the job)."""
    return relative.split("/", 1)[0] == CHECKPOINT_DIR


def temp_package_path(label: str, token: str) -> str:
    """Relative path of the file a package is written to before publishing."""
    return f"{TMP_DIR}/{label}-{token}.tar.gz.part"


def package_path(job_id: UUID, run: int, attempt: int, token: str) -> str:
    """Relative path of a published package: `<aa>/<job_id>/r<run>-a<attempt>-<token>.tar.gz`.

    The two-character folder keeps any one directory small with 100 K packages.
    """
    job = str(job_id)
    return f"{job[:2]}/{job}/r{run}-a{attempt}-{token}.tar.gz"


def job_id_of(relative: str) -> UUID | None:
    """The job a storage entry belongs to: `<aa>/<job_id>/…`, `.tmp/<job_id>-…`,
    `.work/<job_id>-…`, `.checkpoints/<job_id>-…`; None for anything else."""
    parts = relative.split("/")
    if len(parts) < 2:
        return None
    text = parts[1][:_UUID_LENGTH] if parts[0] in SCRATCH_DIRS else parts[1]
    try:
        return UUID(text)
    except ValueError:
        return None
