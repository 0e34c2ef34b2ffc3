"""Screenshots of both pages for docs/ (README shows them), taken from a
realistic session: finished, running, failed and cancelled exports, a paused kind.

`make test` takes and checks them in a temporary directory; `make screenshots`
writes them to docs/screenshots (the `screenshots` fixture)."""

from __future__ import annotations

import struct
from pathlib import Path
from uuid import UUID

import pytest
from playwright.sync_api import Page, expect

from tests.api_helpers import token
from tests.browser.conftest import Site, sign_in
from tests.e2e.processes import wait_status

pytestmark = pytest.mark.slow


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header (its IHDR chunk comes first)."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR", f"{path.name} is no PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_screenshots_of_both_pages(page: Page, site: Site, screenshots: Path) -> None:
    done = [site.create("three-steps"), site.create("blob", size=2_400_000)]
    for job in done:
        wait_status(site.db_url, UUID(job["job_id"]), "completed")
    failed = site.api(
        "POST",
        "/api/v1/jobs",
        json={"kind": "flaky", "params": {"fail_times": 1}, "max_attempts": 1},
    ).json()["data"]
    wait_status(site.db_url, UUID(failed["job_id"]), "rolled_back")
    cancelled = site.create("slow", seconds=60)
    site.api("POST", f"/api/v1/jobs/{cancelled['job_id']}/cancel")
    wait_status(site.db_url, UUID(cancelled["job_id"]), "cancelled")
    running = site.create("slow", seconds=40)
    others = site.create("slow", sub="bob", seconds=40)
    assert site.api("POST", "/api/v1/admin/kinds/busy/pause", sub="ops", admin=True).is_success

    page.goto(f"{site.base}/#token={token('alice')}")
    row = page.locator(f'li.job[data-job-id="{running["job_id"]}"]')
    row.locator(".bar").wait_for()
    page.wait_for_function(
        "id => Number(document.querySelector(`li.job[data-job-id='${id}'] .bar`)"
        ".getAttribute('aria-valuenow')) >= 8",
        arg=running["job_id"],
    )
    expect(row.locator(".status")).to_have_text("in progress")
    page.screenshot(path=screenshots / "my-exports.png", full_page=True)

    page.click("#sign-out")
    sign_in(page, site, "ops", admin=True, path="/admin")
    expect(page.locator("#running tbody tr")).to_have_count(2)
    page.screenshot(path=screenshots / "admin.png", full_page=True)
    site.api("POST", f"/api/v1/jobs/{running['job_id']}/cancel")
    site.api("POST", f"/api/v1/jobs/{others['job_id']}/cancel", sub="bob")
    # Whole pages at the context's viewport width (1100 x 900 at least).
    viewport = page.viewport_size
    assert viewport is not None
    for name in ("my-exports.png", "admin.png"):
        width, height = png_size(screenshots / name)
        assert width == viewport["width"], (name, width)
        assert height >= viewport["height"], (name, height)
