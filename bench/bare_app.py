"""The baseline of the API benchmark: a bare Starlette route under the same
uvicorn settings as `exportd web`, answering a job-sized JSON document with
no token check and no database.

Run: python -m bench.bare_app --port N (the EXPORTD_* environment of the
`exportd web` it is compared with). It is served by `serve`, with the server
settings of `exportd web` itself (`daemon.cli.serve.server_config`: the same
HTTP protocol class with its head timeout, event loop, keep-alive, no access
log, no proxy headers), so the ratio compares the applications, not two
server configurations: uvicorn's command line would serve it with other
defaults (proxy headers on, uvicorn's plain h11 protocol).
"""

from __future__ import annotations

import argparse
import asyncio

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from daemon.cli.connections import ServerConfig
from daemon.cli.serve import listen, server_config
from daemon.config import Settings, load_settings

JOB = {
    "data": {
        "job_id": "5f56012f-74cd-4e3a-97a4-38cb08b41b81",
        "kind": "orders",
        "status": "completed",
        "owner_id": "bench",
        "params": {},
        "priority": 0,
        "attempts": 1,
        "max_attempts": 3,
        "progress": {
            "steps_completed": 2,
            "steps_total": 2,
            "current_step": None,
            "percentage": 100,
        },
        "result": None,
        "error_message": None,
        "package": None,
        "scheduled_at": "2026-11-23T10:00:00Z",
        "created_at": "2026-11-23T10:00:00Z",
        "updated_at": "2026-11-23T10:00:01Z",
        "started_at": "2026-11-23T10:00:00Z",
        "completed_at": "2026-11-23T10:00:01Z",
    }
}


async def job(request: Request) -> JSONResponse:
    return JSONResponse(JOB)


app = Starlette(routes=[Route("/api/v1/jobs/{job_id}", job)])


def config(settings: Settings) -> ServerConfig:
    """The bare app's uvicorn settings: those of `exportd web` (one process)."""
    return server_config(app, settings)


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Serve the bare app until SIGTERM/SIGINT (uvicorn's own signal handling)."""
    srv = uvicorn.Server(config(load_settings()))
    sock = listen(host, port)
    with asyncio.Runner(loop_factory=srv.config.get_loop_factory()) as runner:
        runner.run(srv.serve(sockets=[sock]))


def main() -> None:
    parser = argparse.ArgumentParser(description="the bare route of bench.http")
    parser.add_argument("--port", type=int, required=True)
    serve(parser.parse_args().port)


if __name__ == "__main__":
    main()
