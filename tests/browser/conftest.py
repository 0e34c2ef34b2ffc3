"""The web pages in a real browser: Debian's Chromium driven by Playwright.

Chromium is `/usr/bin/chromium` from Debian's package (`.ci/system-packages`
installs it, like nginx); Playwright never downloads a browser of its own.
The flags keep a headless Chromium off the network: without
--disable-background-networking (and the component updater, sync, QUIC) it
keeps trying to reach Google's hosts, which a closed network refuses.
Playwright starts it with a fresh temporary profile.

Each test gets its own database, a real `exportd worker` and a real
`exportd web` (tests/e2e/processes.py), and a fresh browser context. The
page must log no error and break no Content-Security-Policy rule: both are
checked after every test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from tests.api_helpers import SECRET, token
from tests.e2e.processes import web, worker, worker_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
# Where `make screenshots` writes the pictures docs/ and the README show. A
# test run writes them under its own tmp_path instead (the tree is left as it
# was) unless EXPORTD_WRITE_SCREENSHOTS=1.
DOC_SCREENSHOTS = ROOT / "docs" / "screenshots"
# Playwright's own timeout for each action and expectation (ms).
ACTION_TIMEOUT_MS = 20_000


@dataclass
class Site:
    """A running exportd (web + worker) on loopback, and how to reach it."""

    base: str
    db_url: str
    env: dict[str, str]
    log: Path

    def api(
        self, method: str, path: str, *, sub: str = "alice", admin: bool = False, **kwargs: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token(sub, admin=admin)}"}
        return httpx.request(method, f"{self.base}{path}", headers=headers, timeout=30, **kwargs)

    def create(self, kind: str, *, sub: str = "alice", **params: Any) -> dict[str, Any]:
        response = self.api("POST", "/api/v1/jobs", sub=sub, json={"kind": kind, "params": params})
        assert response.status_code == 202, response.text
        job: dict[str, Any] = response.json()["data"]
        return job

    def job(self, job_id: str, *, sub: str = "alice") -> dict[str, Any]:
        job: dict[str, Any] = self.api("GET", f"/api/v1/jobs/{job_id}", sub=sub).json()["data"]
        return job


# Module scope, not session: while Playwright's sync API runs, its event loop
# counts as running in this thread, and any later test calling asyncio.run()
# would fail. It stops at the end of each browser test module.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert os.access(CHROMIUM, os.X_OK), (
        f"{CHROMIUM} is missing: install Debian's chromium (make test does, as root)"
    )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def site_env(db_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return worker_env(
        db_url,
        tmp_path / "packages",
        EXPORTD_JWT_SECRET=SECRET,
        EXPORTD_RATE_LIMIT="off",
        EXPORTD_DATA_DIR=str(tmp_path / "data"),
        **extra,
    )


@pytest.fixture
def site(db_url: str, tmp_path: Path) -> Iterator[Site]:
    """exportd web and a worker on the test's database."""
    env = site_env(db_url, tmp_path)
    log = tmp_path / "web.log"
    with worker(env, tmp_path, "worker"), web(env, tmp_path) as base:
        yield Site(base, db_url, env, log)


@dataclass
class Watched:
    """Errors the page logged and CSP violations it caused."""

    errors: list[str] = field(default_factory=list)


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """docs/screenshots with EXPORTD_WRITE_SCREENSHOTS=1 (`make screenshots`),
    else a directory of this test's own."""
    if os.environ.get("EXPORTD_WRITE_SCREENSHOTS") == "1":
        directory = DOC_SCREENSHOTS
    else:
        directory = tmp_path / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def watched() -> Watched:
    return Watched()


@pytest.fixture
def page(browser: Browser, watched: Watched, site: Site) -> Iterator[Page]:
    """A fresh context's page; closed before the site stops (no stream is cut)."""
    context = browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    tab = context.new_page()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watched.errors.append(message.text)

    tab.on("console", on_console)
    tab.on("pageerror", lambda error: watched.errors.append(f"uncaught: {error}"))
    try:
        yield tab
    finally:
        context.close()
    unexpected = [e for e in watched.errors if not _expected(e)]
    assert unexpected == [], unexpected


def _expected(error: str) -> bool:
    """The browser logs every 4xx answer to fetch(); tests provoke some on purpose."""
    return "Failed to load resource: the server responded with a status of 4" in error


def sign_in(
    page: Page, site: Site, sub: str = "alice", *, admin: bool = False, path: str = "/"
) -> None:
    """Sign in with the form, as a person pasting a token."""
    page.goto(f"{site.base}{path}")
    page.fill("#token", token(sub, admin=admin))
    page.press("#token", "Enter")
    page.wait_for_selector("#app:not([hidden])")
