"""The web pages' server side: HTML, fingerprinted assets, security headers,
GET /api/v1/me."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api_helpers import api_client, api_settings, bearer
from web.pages import ASSETS, CONTENT_SECURITY_POLICY, fingerprint

pytestmark = pytest.mark.anyio


async def test_pages_are_html_with_a_strict_policy_and_revalidated(
    db_url: str, tmp_path: Path
) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        for path, title in (("/", "My exports"), ("/admin", "Admin")):
            page = await client.get(path)
            assert page.status_code == 200
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert f"<title>{title}" in page.text
            assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert "script-src 'self'" in CONTENT_SECURITY_POLICY
            assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
            assert page.headers["x-content-type-options"] == "nosniff"
            assert page.headers["referrer-policy"] == "no-referrer"
            assert page.headers["cache-control"] == "no-cache"
            assert "<script>" not in page.text and " style=" not in page.text  # nothing inline
            again = await client.get(path, headers={"If-None-Match": page.headers["etag"]})
            assert again.status_code == 304


async def test_assets_are_fingerprinted_and_cached_for_a_year(db_url: str, tmp_path: Path) -> None:
    prefix = f"/static/{fingerprint(ASSETS)}"
    async with api_client(api_settings(tmp_path), db_url) as client:
        page = (await client.get("/")).text
        assert f'src="{prefix}/my-exports.js"' in page and "{{assets}}" not in page
        script = await client.get(f"{prefix}/my-exports.js")
        css = await client.get(f"{prefix}/style.css")
        stale = await client.get("/static/000000000000/my-exports.js")
        escape = await client.get(f"{prefix}/../../pages.py")
        listing = await client.get(f"{prefix}/")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert css.headers["content-type"].startswith("text/css")
    for missing in (stale, escape, listing):
        assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"


def test_the_fingerprint_follows_the_content(tmp_path: Path) -> None:
    (tmp_path / "a.js").write_text("one")
    first = fingerprint(tmp_path)
    (tmp_path / "a.js").write_text("two")
    assert fingerprint(tmp_path) != first and len(first) == 12


async def test_the_api_carries_the_security_headers_too(db_url: str, tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        answers = [
            await client.get("/api/v1/jobs", headers=bearer()),
            await client.get("/api/v1/jobs"),
            await client.get("/no/such/route"),
        ]
    for answer in answers:
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


async def test_me_names_the_subject_and_the_role(db_url: str, tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path), db_url) as client:
        alice = await client.get("/api/v1/me", headers=bearer("alice"))
        ops = await client.get("/api/v1/me", headers=bearer("ops", admin=True))
        nobody = await client.get("/api/v1/me")
    assert alice.json()["data"] == {"subject": "alice", "admin": False, "credential": "jwt"}
    assert ops.json()["data"] == {"subject": "ops", "admin": True, "credential": "jwt"}
    assert alice.headers["cache-control"] == "no-store"
    assert nobody.status_code == 401 and nobody.json()["code"] == "UNAUTHORIZED"
