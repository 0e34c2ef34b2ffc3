"""A complete custom kind: export a tool as a boilerplate project.

Load it with `EXPORTD_KINDS=tool_export` (the module must be importable, e.g.
installed with your application or on PYTHONPATH). A job
`{"kind": "tool", "params": {"name": "csv-cleaner", "description": "…"}}`
produces a package with a ready-to-run Python project:

    export-tool-2026-11-23/
        csv-cleaner/pyproject.toml
        csv-cleaner/README.md
        csv-cleaner/src/csv_cleaner/__init__.py
        csv-cleaner/tests/test_csv_cleaner.py
        manifest.json

Step two has a side effect outside the package — it records the export in a
catalogue directory (`TOOL_CATALOGUE_DIR`) — so it has a rollback: if a later
step fails or the job is cancelled, the record is removed again.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

from daemon.kinds import ExportContext, Kind, Param

tool = Kind(
    "tool",
    title="A tool as a boilerplate project",
    params={
        "name": Param("text", required=True),
        "description": Param("text", default="A small tool."),
        "with_tests": Param("bool", default=True),
    },
    max_attempts=2,
)

_NAME = re.compile(r"^[a-z][a-z0-9-]{1,40}$")


def catalogue_dir() -> Path:
    return Path(os.environ.get("TOOL_CATALOGUE_DIR", "/var/lib/exportd/tool-catalogue"))


@tool.step("Rendering the project")
async def render(ctx: ExportContext) -> None:
    name = ctx.params["name"]
    if not _NAME.match(name):
        raise ValueError("name must be lower case letters, digits and '-' (2-41 characters)")
    module = name.replace("-", "_")
    files = {
        f"{name}/pyproject.toml": (
            f'[project]\nname = "{name}"\nversion = "0.1.0"\n'
            f"description = {json.dumps(ctx.params['description'])}\n"
            'requires-python = ">=3.11"\n'
        ),
        f"{name}/README.md": f"# {name}\n\n{ctx.params['description']}\n",
        f"{name}/src/{module}/__init__.py": f'"""{name}."""\n\n__version__ = "0.1.0"\n',
    }
    if ctx.params["with_tests"]:
        files[f"{name}/tests/test_{module}.py"] = (
            f"import {module}\n\n\ndef test_version() -> None:\n"
            f'    assert {module}.__version__ == "0.1.0"\n'
        )
    for index, (path, body) in enumerate(sorted(files.items())):
        await ctx.check_cancelled()
        ctx.file(path).write_text(body)
        await ctx.progress(index + 1, len(files), path)
    ctx.result["files"] = len(files)


@tool.step("Recording it in the catalogue")
async def record(ctx: ExportContext) -> None:
    entry = catalogue_dir() / f"{ctx.job.job_id}.json"
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_text(json.dumps({"name": ctx.params["name"], "owner": ctx.job.owner_id}))
    ctx.state["catalogue_entry"] = entry


@record.rollback
async def unrecord(ctx: ExportContext) -> None:
    entry: Path | None = ctx.state.get("catalogue_entry")
    if entry is not None:
        await asyncio.to_thread(entry.unlink, missing_ok=True)


@tool.step("Checking the result")
async def check(ctx: ExportContext) -> None:
    # A real kind might lint the project here; the example refuses one name
    # so that its rollback can be seen (and tested).
    if ctx.params["name"] == "broken-tool":
        raise RuntimeError("the rendered project did not pass its checks")
