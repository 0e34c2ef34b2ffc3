"""The public Starlette API the package download is built on.

`web.package_download.PackageResponse` subclasses `FileResponse` for its
headers only (constructor, `headers`, `raw_headers`, `status_code`) and
answers the ASGI call itself; ranges are `web.ranges`. pyproject.toml pins
Starlette to one minor series; when an upgrade changes any of this, this test
fails by name.
"""

from __future__ import annotations

import inspect
import os
import re
from email.utils import formatdate
from pathlib import Path

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse

WEB = Path(__file__).resolve().parents[2] / "web"

POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD
EMPTY = inspect.Parameter.empty


def test_file_response_constructor() -> None:
    parameters = inspect.signature(FileResponse.__init__).parameters
    assert list(parameters)[:2] == ["self", "path"]
    for name in ("headers", "media_type", "filename", "stat_result"):
        assert parameters[name].kind is POSITIONAL and parameters[name].default is None, name


def test_asgi_call_signature() -> None:
    for cls in (Response, FileResponse):
        assert list(inspect.signature(cls.__call__).parameters) == [
            "self",
            "scope",
            "receive",
            "send",
        ]


def test_headers_come_from_the_stat_result_without_touching_the_path() -> None:
    info = os.stat_result((0o100644, 0, 0, 1, 0, 0, 12345, 0, 1_700_000_000, 0))
    response = FileResponse(
        "/nonexistent/never/opened",
        headers={"ETag": '"sha"', "Cache-Control": "private"},
        media_type="application/gzip",
        filename="export-demo-2026-01-01.tar.gz",
        stat_result=info,
    )
    assert response.status_code == 200
    assert isinstance(response.headers, MutableHeaders)
    assert dict(response.headers) == {
        "etag": '"sha"',  # a given ETag is kept
        "cache-control": "private",
        "content-type": "application/gzip",  # no charset on a non-text type
        "accept-ranges": "bytes",
        "content-disposition": 'attachment; filename="export-demo-2026-01-01.tar.gz"',
        "content-length": "12345",
        "last-modified": formatdate(1_700_000_000, usegmt=True),
    }
    assert all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in response.raw_headers)


def test_header_helpers() -> None:
    scope = {"type": "http", "headers": [(b"range", b"bytes=0-9"), (b"if-range", b'"x"')]}
    headers = Headers(scope=scope)
    assert headers.get("range") == "bytes=0-9" and headers.get("If-Range") == '"x"'
    raw = [(b"content-length", b"10")]
    mutable = MutableHeaders(raw=list(raw))
    mutable["content-length"] = "5"
    mutable["content-range"] = "bytes 0-4/10"
    assert mutable.raw == [(b"content-length", b"5"), (b"content-range", b"bytes 0-4/10")]
    assert raw == [(b"content-length", b"10")]  # a copy: the response keeps its headers


def test_web_uses_no_private_starlette_member() -> None:
    """Project rule: Starlette's `_`-prefixed members and modules are not API."""
    classes = (Response, FileResponse, JSONResponse, StreamingResponse, Request, Headers)
    private = {
        name
        for cls in classes
        for name in dir(cls)
        if name.startswith("_") and not name.startswith("__")
    }
    assert "_parse_range_header" in private  # the list is not empty by accident
    pattern = re.compile(r"\.(" + "|".join(map(re.escape, sorted(private))) + r")\b|starlette\._")
    offenders = {
        f"{path.name}: {match.group(0)}"
        for path in WEB.rglob("*.py")
        for match in pattern.finditer(path.read_text())
    }
    assert offenders == set()
