"""/admin in Chromium: queue health, pause and resume, retry; admins only."""

from __future__ import annotations

from uuid import UUID

import psycopg
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Site, sign_in
from tests.e2e.processes import outcomes, poll_until, wait_status

pytestmark = pytest.mark.slow


def kind_row(page: Page, kind: str) -> str:
    return f'#kinds tr:has(button[data-kind="{kind}"])'


def test_the_admin_page_pauses_and_resumes_a_kind(page: Page, site: Site) -> None:
    sign_in(page, site, "ops", admin=True, path="/admin")
    row = page.locator(kind_row(page, "noop"))
    expect(row).to_contain_text("running")
    row.locator("button[data-action=pause]").click()
    expect(row.locator("button[data-action=resume]")).to_be_visible()
    expect(row).to_contain_text("paused by ops")
    # The keyboard stays on the kind's button.
    assert page.evaluate("document.activeElement.dataset.kind") == "noop"
    kinds = {k["kind"]: k for k in site.api("GET", "/api/v1/kinds").json()["data"]}
    assert kinds["noop"]["paused"] is True
    # Held: a new export of it waits, and the page counts it as pending.
    waiting = site.create("noop")
    page.click("#refresh")
    expect(row.locator("td").nth(1)).to_have_text("1")
    row.locator("button[data-action=resume]").click()
    expect(row.locator("button[data-action=pause]")).to_be_visible()
    kinds = {k["kind"]: k for k in site.api("GET", "/api/v1/kinds").json()["data"]}
    assert kinds["noop"]["paused"] is False
    assert wait_status(site.db_url, UUID(waiting["job_id"]), "completed") == "completed"


def test_running_jobs_failures_and_retry(page: Page, site: Site) -> None:
    # Fails its one attempt of each run: "planned failure 1".
    response = site.api(
        "POST",
        "/api/v1/jobs",
        json={"kind": "flaky", "params": {"fail_times": 1}, "max_attempts": 1},
    )
    failing = response.json()["data"]
    running = site.create("slow", seconds=120)
    wait_status(site.db_url, UUID(failing["job_id"]), "rolled_back")
    wait_status(site.db_url, UUID(running["job_id"]), "in_progress")
    refused_delivery(site.db_url, failing["job_id"], "https://hooks.example.com/in?key=k")
    sign_in(page, site, "ops", admin=True, path="/admin")

    busy = page.locator("#running tbody tr", has_text=running["job_id"][:8])
    expect(busy).to_contain_text("slow")
    expect(busy).to_contain_text("alice")
    expect(busy).to_contain_text("exportd-worker")  # the worker process holding it
    expect(page.locator("#workers tbody")).not_to_contain_text("No worker")
    expect(page.locator("#stalled tbody")).to_contain_text("No stalled exports.")
    flaky = page.locator(kind_row(page, "flaky"))
    expect(flaky.locator("td").nth(4)).to_have_text("1")  # failed in the last hour

    hook = page.locator("#webhooks tbody tr", has_text="https://hooks.example.com/in")
    expect(hook).to_contain_text("HTTP 503")
    expect(hook).not_to_contain_text("key=k")

    failure = page.locator("#failures tbody tr", has_text=failing["job_id"][:8])
    expect(failure).to_contain_text("planned failure 1")
    failure.locator("button[data-action=retry]").click()
    expect(page.locator("#admin-error")).to_have_text("")
    # A second run, whose one attempt fails the same way.
    poll_until(
        lambda: len(outcomes(site.db_url, UUID(failing["job_id"]))) == 2,
        "the retried export ran again",
    )
    assert wait_status(site.db_url, UUID(failing["job_id"]), "rolled_back") == "rolled_back"
    site.api("POST", f"/api/v1/jobs/{running['job_id']}/cancel")


def refused_delivery(db_url: str, job_id: str, url: str) -> None:
    """A receiver that answered 503 to the job's failure event (delivery itself
    is tested end to end in tests/e2e/test_webhooks.py)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "WITH e AS (INSERT INTO exportd.webhook_events (job_id, type, payload)"
            " VALUES (%(job)s, 'export.failed', '{}') RETURNING event_id)"
            " INSERT INTO exportd.webhook_deliveries (event_id, job_id, url, attempt, outcome,"
            " status_code, duration_ms, error, attempted_at)"
            " SELECT event_id, %(job)s, %(url)s, 1, 'rejected', 503, 7, 'HTTP 503', now() FROM e",
            {"job": job_id, "url": url},
        )


def test_a_non_admin_token_sees_no_admin_data(page: Page, site: Site) -> None:
    site.create("noop", sub="bob")
    assert site.api("GET", "/api/v1/admin/dashboard").status_code == 403
    sign_in(page, site, "alice", path="/admin")
    expect(page.locator("#not-admin")).to_be_visible()
    expect(page.locator("#not-admin-text")).to_contain_text("not an admin")
    expect(page.locator("#not-admin-text")).to_contain_text("403 FORBIDDEN")
    expect(page.locator("#dashboard")).to_be_hidden()
    assert page.locator("#kinds tbody tr").count() == 0  # nothing was ever drawn
    assert "bob" not in page.content()
