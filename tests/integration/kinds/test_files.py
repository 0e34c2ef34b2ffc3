"""daemon.kinds.files on a real directory tree: globs, `{owner_id}`, and
nothing outside the root (symlinks, `..`, unsafe owner ids) ever packaged."""

from __future__ import annotations

import os
import tarfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.kinds.context import ExportContext, JobCancelled, JobInfo
from daemon.kinds.files import FileExport, FileExportError, compile_glob
from daemon.kinds.progress import ProgressSink
from daemon.kinds.registry import Kind
from daemon.models import JobStatus
from daemon.worker.packaging import build_package
from daemon.worker.pipeline import run_steps

pytestmark = pytest.mark.anyio


async def keep_running(
    job_id: uuid.UUID, done: int, total: int, current_step: str | None, percentage: int
) -> JobStatus | None:
    return JobStatus.IN_PROGRESS


def make_ctx(
    tmp_path: Path, kind: Kind, owner: str | None = "alice", sink: ProgressSink = keep_running
) -> ExportContext:
    job = JobInfo(
        job_id=uuid.uuid4(),
        kind=kind.name,
        owner_id=owner,
        params={},
        run=1,
        attempt=1,
        created_at=datetime.now(UTC),
    )
    return ExportContext(
        job=job, kind=kind, work_dir=tmp_path / "work", sink=sink, progress_interval=0
    )


def files_kind(
    root: Path | str, include: tuple[str, ...] = ("**/*",), **kw: tuple[str, ...]
) -> Kind:
    kind = Kind("uploads")
    kind.add_step("Collecting files", FileExport(root=str(root), include=include, **kw))
    return kind


def touch(path: Path, text: str = "data") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


async def export(
    tmp_path: Path, kind: Kind, owner: str | None = "alice"
) -> tuple[ExportContext, dict[str, Path]]:
    ctx = make_ctx(tmp_path, kind, owner)
    await run_steps(kind, ctx)
    return ctx, {f.arcname: f.source for f in ctx.files}


@pytest.fixture
def uploads(tmp_path: Path) -> Path:
    """/uploads/<owner>/… for alice and bob, and a secret outside the tree."""
    base = tmp_path / "uploads"
    for name in ("a.pdf", "b.txt", ".hidden.pdf", "sub/c.pdf", "sub/deep/d.pdf", "cache/x.pdf"):
        touch(base / "alice" / name, f"alice {name}")
    touch(base / "bob" / "bob.pdf", "bob")
    touch(tmp_path / "outside" / "secret.pdf", "secret")
    return base


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("**/*.pdf", ["a.pdf", "x/a.pdf", "x/y/.a.pdf"], ["a.pdf.txt", "apdf", "x/a.txt"]),
        ("*.pdf", ["a.pdf"], ["x/a.pdf"]),
        ("docs/**", ["docs/a", "docs/x/y"], ["doc/a", "a/docs/b"]),
        ("a/**/b", ["a/b", "a/x/b", "a/x/y/b"], ["a/xb", "b"]),
        ("**", ["a", "x/y/z"], []),
        ("file?.txt", ["file1.txt"], ["file10.txt", "file/.txt"]),
        ("[a].txt", ["[a].txt"], ["a.txt"]),
    ],
)
def test_globs(pattern: str, matches: list[str], misses: list[str]) -> None:
    regex = compile_glob(pattern)
    assert [p for p in matches if not regex.fullmatch(p)] == []
    assert [p for p in misses if regex.fullmatch(p)] == []


@pytest.mark.parametrize("pattern", ["", "/etc/*", "../*", "a/../b", "a//b", "./a"])
def test_globs_that_cannot_match_a_relative_path_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="must"):
        compile_glob(pattern)


async def test_include_and_exclude(tmp_path: Path, uploads: Path) -> None:
    kind = files_kind(uploads / "{owner_id}", ("**/*.pdf",), exclude=("cache/**",))
    ctx, files = await export(tmp_path, kind)
    assert files == {
        ".hidden.pdf": uploads / "alice/.hidden.pdf",
        "a.pdf": uploads / "alice/a.pdf",
        "sub/c.pdf": uploads / "alice/sub/c.pdf",
        "sub/deep/d.pdf": uploads / "alice/sub/deep/d.pdf",
    }
    assert (ctx.result["files"], ctx.result["skipped"]) == (4, 0)


async def test_owner_id_is_substituted(tmp_path: Path, uploads: Path) -> None:
    kind = files_kind(uploads / "{owner_id}")
    _, files = await export(tmp_path, kind, owner="bob")
    assert files == {"bob.pdf": uploads / "bob/bob.pdf"}


async def test_symlinks_are_never_packaged(tmp_path: Path, uploads: Path) -> None:
    alice = uploads / "alice"
    (alice / "evil.pdf").symlink_to(tmp_path / "outside" / "secret.pdf")
    (alice / "etc").symlink_to("/etc")
    (alice / "sub" / "outside").symlink_to(tmp_path / "outside", target_is_directory=True)
    (alice / "alias.pdf").symlink_to(alice / "a.pdf")  # even one that stays inside
    (alice / "dangling.pdf").symlink_to(tmp_path / "nowhere.pdf")
    kind = files_kind(uploads / "{owner_id}")
    ctx, files = await export(tmp_path, kind)
    assert sorted(files) == [
        ".hidden.pdf",
        "a.pdf",
        "b.txt",
        "cache/x.pdf",
        "sub/c.pdf",
        "sub/deep/d.pdf",
    ]
    assert ctx.result["skipped"] == 5
    for source in files.values():
        assert not source.is_symlink()
        assert source.resolve().is_relative_to(alice.resolve())


async def test_a_package_of_a_file_export(tmp_path: Path, uploads: Path) -> None:
    (uploads / "alice" / "evil.pdf").symlink_to(tmp_path / "outside" / "secret.pdf")
    kind = files_kind(uploads / "{owner_id}", ("*.pdf",))
    ctx, _ = await export(tmp_path, kind)
    built = build_package(
        tmp_path / "package.tar.gz", ctx.files, top_dir="export", manifest_header={}
    )
    with tarfile.open(built.path) as tar:
        names = sorted(tar.getnames())
        hidden = tar.extractfile("export/.hidden.pdf")
        assert hidden is not None and hidden.read() == b"alice .hidden.pdf"
    assert names == ["export/.hidden.pdf", "export/a.pdf", "export/manifest.json"]


async def test_only_regular_files(tmp_path: Path, uploads: Path) -> None:
    os.mkfifo(uploads / "alice" / "pipe.pdf")
    kind = files_kind(uploads / "{owner_id}", ("*.pdf",))
    ctx, files = await export(tmp_path, kind)
    assert sorted(files) == [".hidden.pdf", "a.pdf"]
    assert ctx.result["skipped"] == 1


@pytest.mark.parametrize("owner", ["", ".", "..", "a/b", "../bob", "a\x00b", None])
async def test_unsafe_owner_ids_are_refused(
    tmp_path: Path, uploads: Path, owner: str | None
) -> None:
    kind = files_kind(uploads / "{owner_id}")
    ctx = make_ctx(tmp_path, kind, owner)
    with pytest.raises(FileExportError):
        await run_steps(kind, ctx)
    assert ctx.files == []


async def test_an_owner_directory_that_is_a_symlink_is_refused(
    tmp_path: Path, uploads: Path
) -> None:
    (uploads / "mallory").symlink_to(uploads / "bob", target_is_directory=True)
    kind = files_kind(uploads / "{owner_id}")
    ctx = make_ctx(tmp_path, kind, "mallory")
    with pytest.raises(FileExportError, match="symlink"):
        await run_steps(kind, ctx)
    assert ctx.files == []


async def test_a_placeholder_inside_a_name(tmp_path: Path, uploads: Path) -> None:
    touch(uploads / "user-carol" / "docs" / "c.txt")
    kind = files_kind(str(uploads) + "/user-{owner_id}/docs")
    _, files = await export(tmp_path, kind, owner="carol")
    assert sorted(files) == ["c.txt"]


async def test_a_missing_root_gives_an_empty_export(tmp_path: Path, uploads: Path) -> None:
    kind = files_kind(uploads / "{owner_id}")
    ctx, files = await export(tmp_path, kind, owner="dave")
    assert files == {}
    assert (ctx.result["files"], ctx.result["skipped"]) == (0, 0)


async def test_a_root_that_is_a_file_is_an_error(tmp_path: Path, uploads: Path) -> None:
    kind = files_kind(uploads / "alice" / "a.pdf")
    with pytest.raises(FileExportError, match="not a directory"):
        await export(tmp_path, kind)


async def test_an_unreadable_directory_is_an_error(tmp_path: Path, uploads: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every directory")
    locked = uploads / "alice" / "sub"
    locked.chmod(0)
    try:
        with pytest.raises(FileExportError, match="cannot read 'sub'"):
            await export(tmp_path, files_kind(uploads / "{owner_id}"))
    finally:
        locked.chmod(0o755)


async def test_cancellation_is_checked_while_walking(tmp_path: Path) -> None:
    root = tmp_path / "many"
    for i in range(250):
        touch(root / f"{i:03}.txt")

    async def cancel_on_first_progress(
        job_id: uuid.UUID, done: int, total: int, current_step: str | None, percentage: int
    ) -> JobStatus | None:
        # The job is cancelled meanwhile: the first progress write sees it.
        return JobStatus.CANCELLING

    kind = files_kind(root)
    ctx = make_ctx(tmp_path, kind, sink=cancel_on_first_progress)
    with pytest.raises(JobCancelled):
        await kind.steps[0].run(ctx)
    assert len(ctx.files) == 100  # stopped after the first batch
