"""The web pages (DESIGN §15): `/` (My exports) and `/admin`.

Plain HTML, CSS and ES modules from `web/static/`, shipped in the wheel: no
build step, no CDN, nothing fetched from elsewhere. The pages are static
shells; everything they show comes from the JSON API with the token the
person signed in with (kept in the tab's sessionStorage, sent as
`Authorization: Bearer`, never put in a URL the server sees).

Assets are served under `/static/<fingerprint>/`, the fingerprint being a
hash of their contents computed at start: their URLs change whenever a file
does, so they are cached for a year (`immutable`), while the two HTML pages
(which name the current fingerprint) are revalidated on every load
(`no-cache`). ES modules import each other by relative path, so only the
HTML names the fingerprint.

`SecurityHeadersMiddleware` puts a strict Content-Security-Policy (scripts,
styles and connections from this origin only, no inline script or style,
no framing), `X-Content-Type-Options: nosniff` and `Referrer-Policy:
no-referrer` on every answer, the API's included.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = STATIC / "assets"
# The HTML pages name their assets as "{{assets}}/style.css".
ASSETS_MARK = "{{assets}}"
PAGES = {"/": "my-exports.html", "/admin": "admin.html"}

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "object-src 'none'",
    ]
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
ASSET_CACHE = "public, max-age=31536000, immutable"
PAGE_CACHE = "no-cache"


def fingerprint(directory: Path) -> str:
    """12 hex digits of the sha256 over every file's relative path and bytes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


class AssetFiles(StaticFiles):
    """StaticFiles whose answers may be cached for a year: the URL names the
    content (see `fingerprint`), so a changed file is a new URL."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = ASSET_CACHE
        return response


class Page:
    """One HTML page, read once, with its assets' fingerprinted prefix filled in."""

    def __init__(self, name: str, assets: str) -> None:
        self.body = (STATIC / name).read_text(encoding="utf-8").replace(ASSETS_MARK, assets)
        self.etag = '"' + hashlib.sha256(self.body.encode()).hexdigest()[:16] + '"'

    async def serve(self, request: Request) -> Response:
        headers = {"Cache-Control": PAGE_CACHE, "ETag": self.etag}
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        return Response(self.body, media_type="text/html; charset=utf-8", headers=headers)


def routes() -> list[BaseRoute]:
    """The pages and their assets (not API routes: no OpenAPI entries)."""
    assets = f"/static/{fingerprint(ASSETS)}"
    pages: list[BaseRoute] = [
        Route(path, Page(name, assets).serve, methods=["GET"]) for path, name in PAGES.items()
    ]
    return [*pages, Mount(assets, app=AssetFiles(directory=ASSETS), name="assets")]


class SecurityHeadersMiddleware:
    """Adds SECURITY_HEADERS to every HTTP answer that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
