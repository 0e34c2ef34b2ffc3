"""The one-click link `exportd up` prints opens "My exports", signed in."""

from __future__ import annotations

import getpass
import signal
import subprocess
import time
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.browser.conftest import ACTION_TIMEOUT_MS
from tests.e2e.processes import EXPORTD, free_port
from tests.e2e.test_cli import clean_env

pytestmark = pytest.mark.slow


def banner(proc: subprocess.Popen[str]) -> list[str]:
    """`up`'s lines up to "Press Ctrl-C" (it prints them once everything runs)."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Press Ctrl-C"):
            return lines
    raise AssertionError(f"no banner: {''.join(lines)}")


def test_the_link_up_prints_signs_in_with_the_token_in_the_fragment(
    browser: Browser, tmp_path: Path
) -> None:
    port = free_port()
    env = clean_env(EXPORTD_DATA_DIR=str(tmp_path / "data"), EXPORTD_PORT=str(port))
    with (
        (tmp_path / "up.log").open("w") as log,
        subprocess.Popen(
            [EXPORTD, "up"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=log, text=True
        ) as proc,
    ):
        try:
            lines = banner(proc)
            curl = max(i for i, line in enumerate(lines) if line.strip().startswith("curl "))
            (link_line,) = [line for line in lines if "in a browser" in line]
            assert lines.index(link_line) > curl  # after the curl commands
            link = link_line.rsplit(" ", 1)[-1].strip()
            token = next(line for line in lines if "a token for" in line).rsplit(" ", 1)[-1]
            assert link == f"http://127.0.0.1:{port}/#token={token.strip()}"

            context = browser.new_context()
            context.set_default_timeout(ACTION_TIMEOUT_MS)
            page = context.new_page()
            page.goto(link)
            expect(page.locator("#who-name")).to_have_text(getpass.getuser() or "dev")
            assert page.url == f"http://127.0.0.1:{port}/"
            expect(page.locator("#kind")).to_contain_text("orders")  # the demo kinds
            context.close()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert token.strip() not in (tmp_path / "up.log").read_text()
