"""`make test` installs the programs the tests run (`.ci/system-packages`), or,
without root, names the Debian packages to install in one line."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "system-packages"


def run_with_path(tmp_path: Path, tools: list[str], uid: int) -> subprocess.CompletedProcess[str]:
    """Run the script with a PATH holding only `tools` and an `id` that says `uid`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ["bash", *tools]:
        found = shutil.which(name)
        assert found is not None, name
        (bin_dir / name).symlink_to(found)
    fake_id = bin_dir / "id"
    fake_id.write_text(f"#!{shutil.which('bash')}\necho {uid}\n")
    fake_id.chmod(0o755)
    return subprocess.run(
        [str(bin_dir / "bash"), str(SCRIPT)],
        env={"PATH": str(bin_dir), "HOME": os.environ.get("HOME", "/")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_without_root_one_line_names_the_missing_packages(tmp_path: Path) -> None:
    result = run_with_path(tmp_path, ["curl"], uid=1000)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    for package in ("aria2", "wget", "systemd", "chromium"):
        assert package in lines[0]
    assert " curl" not in lines[0].split("apt-get install")[1]


def test_nothing_to_do_when_every_tool_is_there(tmp_path: Path) -> None:
    tools = ["systemd-analyze", "curl", "wget", "aria2c"]
    for optional in ("nginx", "chromium"):
        if shutil.which(optional) is not None:
            tools.append(optional)
    result = run_with_path(tmp_path, tools, uid=1000)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
