"""My exports (/) in Chromium: sign in, start, follow, download, cancel."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

import psycopg
import pytest
from playwright.sync_api import Page, expect

from tests.api_helpers import token
from tests.browser.conftest import Site, sign_in
from tests.e2e.processes import wait_status

pytestmark = pytest.mark.slow

# 1,000 finished exports of one owner, made the fast way: cancelled at once
# (pending -> cancelled is a transition the state machine allows).
BULK_JOBS = """
INSERT INTO exportd.jobs (kind, owner_id, params, created_at, scheduled_at)
SELECT 'noop', %(owner)s, '{}', now() - n * interval '1 minute', now()
  FROM generate_series(1, %(n)s) AS n
"""
CANCEL_THEM = """
UPDATE exportd.jobs SET status = 'cancelled', completed_at = now()
 WHERE owner_id = %(owner)s AND status = 'pending'
"""


def card(page: Page, job_id: str) -> str:
    return f'li.job[data-job-id="{job_id}"]'


def start_export(page: Page, kind: str, **params: str) -> str:
    """Fill the New export form and submit it; the new job's id."""
    page.select_option("#kind", kind)
    for name, value in params.items():
        page.fill(f"#param-{name}", value)
    with page.expect_response(
        lambda r: r.url.endswith("/api/v1/jobs") and r.request.method == "POST"
    ) as created:
        page.click("#start")
    response = created.value
    assert response.status == 202, response.text()
    job_id: str = response.json()["data"]["job_id"]
    page.wait_for_selector(card(page, job_id))
    return job_id


def test_sign_in_with_the_form_refuses_a_bad_token_then_accepts_a_good_one(
    page: Page, site: Site
) -> None:
    page.goto(f"{site.base}/")
    expect(page.locator("#sign-in-section")).to_be_visible()
    expect(page.locator("#token")).to_be_focused()
    page.fill("#token", "not-a-token")
    page.press("#token", "Enter")
    expect(page.locator("#token-error")).to_contain_text("The token was refused: invalid token")
    page.fill("#token", token("alice"))
    page.press("#token", "Enter")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#who-name")).to_have_text("alice")
    expect(page.locator("#admin-link")).to_be_hidden()
    expect(page.locator("#list-status")).to_have_text("No exports yet: start one above.")


def test_the_one_click_link_signs_in_and_leaves_the_token_nowhere(page: Page, site: Site) -> None:
    secret = token("alice")
    page.goto(f"{site.base}/#token={secret}")
    expect(page.locator("#who-name")).to_have_text("alice")
    # Gone from the address bar and the history entry; never sent to the server.
    assert page.url == f"{site.base}/"
    assert secret not in page.evaluate("location.href + history.state")
    page.reload()
    expect(page.locator("#who-name")).to_have_text("alice")  # kept for this tab
    assert secret not in site.log.read_text()


def test_an_export_started_from_the_form_reaches_100_percent_without_a_reload(
    page: Page, site: Site
) -> None:
    sign_in(page, site)
    # Everything the bar shows, and every layout shift, from here on.
    page.evaluate(
        """() => {
        window.stayed = true;
        window.seen = [];
        window.shifts = [];
        new MutationObserver((records) => {
            for (const r of records) {
                window.seen.push(Number(r.target.getAttribute("aria-valuenow")));
            }
        }).observe(document.getElementById("jobs"),
                   {subtree: true, attributes: true, attributeFilter: ["aria-valuenow"]});
        new PerformanceObserver((list) => {
            for (const e of list.getEntries()) {
                if (e.hadRecentInput) continue;
                window.shifts.push({value: e.value, at: e.startTime, moved: e.sources.map(
                    (s) => (s.node && s.node.className) || String(s.node))});
            }
        }).observe({type: "layout-shift"});
    }"""
    )
    job_id = start_export(page, "slow", seconds="2")
    row = page.locator(card(page, job_id))
    expect(row.locator(".status")).to_have_text("completed", timeout=30_000)
    expect(row.locator(".bar")).to_have_attribute("aria-valuenow", "100")
    expect(row.locator(".pct")).to_have_text("100 %")
    seen = page.evaluate("window.seen")
    assert any(0 < value < 100 for value in seen), seen  # it moved, live
    assert page.evaluate("window.stayed") is True  # no reload
    assert page.evaluate("window.shifts") == []  # nothing moved on the page
    expect(row.locator("button[data-action=download]")).to_be_visible()


def test_download_button_gets_the_package_with_its_sha256(
    page: Page, site: Site, tmp_path: Path
) -> None:
    sign_in(page, site)
    job_id = start_export(page, "blob", size="400000")
    row = page.locator(card(page, job_id))
    download_button = row.locator("button[data-action=download]")
    expect(download_button).to_be_visible(timeout=30_000)
    with page.expect_download() as started:
        download_button.click()
    download = started.value
    assert "/api/v1/links/" in download.url
    assert token("alice").split(".")[1] not in download.url  # no token in the file URL
    assert download.suggested_filename.startswith("export-blob-")
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    package = site.job(job_id)["package"]
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == package["sha256"]
    assert saved.stat().st_size == package["size_bytes"]


def test_cancel_a_slow_export_from_the_page(page: Page, site: Site) -> None:
    sign_in(page, site)
    job_id = start_export(page, "slow", seconds="120")
    row = page.locator(card(page, job_id))
    expect(row.locator(".status")).to_have_text("in progress", timeout=30_000)
    row.locator("button[data-action=cancel]").click()
    expect(row.locator(".status")).to_have_text("cancelled", timeout=30_000)
    assert wait_status(site.db_url, UUID(job_id), "cancelled") == "cancelled"
    expect(row.locator("button[data-action=retry]")).to_be_visible()


def test_a_bad_param_shows_the_servers_error_next_to_the_field(page: Page, site: Site) -> None:
    sign_in(page, site)
    page.select_option("#kind", "typed")
    page.fill("#param-text", "hello")
    page.fill("#param-uuid", "not-a-uuid")
    page.click("#start")
    error = page.locator('[id="error-params.uuid"]')
    expect(error).to_contain_text("is not a valid uuid")
    expect(page.locator("#param-uuid")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#param-uuid")).to_be_focused()
    assert site.api("GET", "/api/v1/jobs").json()["data"] == []


def test_another_users_jobs_never_appear(page: Page, site: Site) -> None:
    bobs = [site.create("noop", sub="bob")["job_id"] for _ in range(3)]
    mine = site.create("noop", sub="alice")["job_id"]
    # An admin's own page lists its own exports only, too.
    admins = site.create("noop", sub="ops")["job_id"]
    sign_in(page, site, "alice")
    expect(page.locator(card(page, mine))).to_be_visible()
    shown = page.eval_on_selector_all("li.job", "cards => cards.map(c => c.dataset.jobId)")
    assert shown == [mine]
    page.click("#sign-out")
    sign_in(page, site, "ops", admin=True)
    expect(page.locator(card(page, admins))).to_be_visible()
    shown = page.eval_on_selector_all("li.job", "cards => cards.map(c => c.dataset.jobId)")
    assert shown == [admins]
    expect(page.locator("#admin-link")).to_be_visible()
    for job_id in bobs:
        assert page.locator(card(page, job_id)).count() == 0


def test_keyboard_alone_signs_in_starts_and_cancels_an_export(page: Page, site: Site) -> None:
    page.goto(f"{site.base}/")
    expect(page.locator("#token")).to_be_focused()
    page.keyboard.type(token("alice"))
    page.keyboard.press("Enter")
    expect(page.locator("#app")).to_be_visible()

    def tab_to(selector: str, limit: int = 40) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate(f"document.activeElement.matches({selector!r})"):
                return
        raise AssertionError(f"Tab never reached {selector}")

    tab_to("#kind")
    expect(page.locator("#kind option[value=slow]")).to_have_count(1)
    # Arrow keys, not type-ahead: type-ahead forgets what was typed after a
    # second, which a busy machine can take between two keystrokes.
    for _ in range(40):
        if page.eval_on_selector("#kind", "select => select.value") == "slow":
            break
        page.keyboard.press("ArrowDown")
    expect(page.locator("#kind")).to_have_value("slow")
    tab_to("#param-seconds")
    page.keyboard.press("Control+A")
    page.keyboard.type("120")
    tab_to("#start")
    page.keyboard.press("Enter")
    job = page.locator("li.job").first
    expect(job.locator(".status")).to_have_text("in progress", timeout=30_000)
    tab_to("li.job button[data-action=cancel]")
    page.keyboard.press("Enter")
    expect(job.locator(".status")).to_have_text("cancelled", timeout=30_000)
    # The keyboard stays on the card: now on its Retry button.
    assert page.evaluate("document.activeElement.dataset.action") == "retry"


def test_readable_at_360_px(page: Page, site: Site) -> None:
    site.create("three-steps")
    site.create("typed", text="a long text parameter " * 5)
    page.set_viewport_size({"width": 360, "height": 740})
    sign_in(page, site)
    expect(page.locator("li.job")).to_have_count(2)
    page.select_option("#kind", "typed")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    for selector in ("#start", "li.job .status", "#param-timestamp"):
        box = page.locator(selector).first.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360, selector
    page.click("#sign-out")
    sign_in(page, site, "ops", admin=True, path="/admin")
    expect(page.locator("#kinds tbody tr").first).to_be_visible()
    # The tables scroll inside their boxes; the page itself does not.
    assert page.evaluate("document.documentElement.scrollWidth") <= 360


def test_first_render_of_a_list_of_1000_jobs(
    page: Page, site: Site, record_property: Callable[[str, object], None]
) -> None:
    """Time from navigation to the first page of jobs drawn, with 1,000 in the database."""
    with psycopg.connect(site.db_url, autocommit=True) as conn:
        conn.execute(BULK_JOBS, {"owner": "alice", "n": 1000})
        conn.execute(CANCEL_THEM, {"owner": "alice"})
    page.goto(f"{site.base}/#token={token('alice')}")
    # (Functions, not expressions: the page's CSP forbids eval.)
    page.wait_for_function("() => performance.getEntriesByName('exportd:list-rendered').length")
    rendered = page.evaluate("performance.getEntriesByName('exportd:list-rendered')[0].startTime")
    record_property("first_render_ms_1000_jobs", round(rendered))
    print(f"first render of the list with 1000 jobs: {rendered:.0f} ms")
    expect(page.locator("li.job")).to_have_count(50)
    assert rendered < 5_000
    # The rest, page by page ("Show older exports"), still a list of 1000.
    while page.locator("#more").is_visible():
        page.click("#more")
        page.wait_for_function(
            "() => !document.getElementById('more').hasAttribute('aria-disabled')"
        )
    expect(page.locator("li.job")).to_have_count(1000)
