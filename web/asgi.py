"""`web.asgi:build` — the app factory uvicorn calls in each process of
`exportd web --workers N` (settings from the same environment)."""

from __future__ import annotations

from starlette.applications import Starlette

from daemon.config import load_settings
from daemon.kinds.catalog import load_kinds
from web.app import create_app


def build() -> Starlette:
    settings = load_settings()
    assert settings.database_url is not None  # checked by `exportd web` before forking
    return create_app(settings, settings.database_url, load_kinds(settings, settings.database_url))
