"""schemathesis against a live `exportd web` (and worker) from its own
/openapi.json: valid and invalid inputs for every operation, as alice and as
bob. No 5xx, status codes, content types and bodies as documented, and bob
never sees a job of alice's. Bounded for `make test` by FUZZ_EXAMPLES."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api_helpers import SECRET, bearer
from tests.conftest import PgServer
from tests.e2e.processes import web, worker, worker_env

# Examples per operation and generation mode; `make soak` raises it.
FUZZ_EXAMPLES = int(os.environ.get("EXPORTD_FUZZ_EXAMPLES", "25"))
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120 + 3 * FUZZ_EXAMPLES)]


@pytest.fixture(scope="module")
def live_api(
    pg_server: PgServer, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`exportd web` + `exportd worker` on a fresh database; alice has jobs."""
    tmp_path = tmp_path_factory.mktemp("fuzz")
    name = "exportd_fuzz_" + os.urandom(4).hex()
    with pg_server.janitor(name, template_dbname=template_db):
        db_url = pg_server.url(name)
        env = worker_env(
            db_url, tmp_path / "packages", EXPORTD_JWT_SECRET=SECRET, EXPORTD_RATE_LIMIT="off"
        )
        with worker(env, tmp_path, "worker"), web(env, tmp_path) as base:
            for kind in ("noop", "three-steps", "blob"):
                created = httpx.post(f"{base}/api/v1/jobs", json={"kind": kind}, headers=bearer())
                assert created.status_code == 202
            deadline = time.monotonic() + 30
            while any(
                j["status"] != "completed"
                for j in httpx.get(f"{base}/api/v1/jobs", headers=bearer()).json()["data"]
            ):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            yield base


def never_another_users_job(subject: str) -> Any:
    def check(ctx: Any, response: Any, case: Any) -> bool | None:
        if (
            not case.operation.path.startswith("/api/v1/jobs")  # only jobs have owners
            or response.status_code >= 300
            or "json" not in response.headers.get("content-type", [""])[0]
        ):
            return None
        body = response.json()
        data = body.get("data") if isinstance(body, dict) else None
        jobs = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
        for job in jobs:
            if job.get("owner_id") != subject:
                raise Failure(
                    operation=case.operation.label,
                    title="Another user's job",
                    message=f"{subject} received a job of {job.get('owner_id')!r}",
                )
        return None

    return check


@pytest.mark.parametrize("subject", ["alice", "bob"])
def test_fuzz_the_live_api(live_api: str, subject: str) -> None:
    schema = schemathesis.openapi.from_url(f"{live_api}/openapi.json")
    headers = bearer(subject)
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        never_another_users_job(subject),
    ]
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the document loads without errors
        operations.append(result.ok())
    assert len(operations) >= 10
    for operation in operations:
        raw = operation.definition.raw
        has_input = bool(raw.get("parameters") or raw.get("requestBody"))
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if has_input else [])
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=FUZZ_EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                case.call_and_validate(base_url=live_api, headers=headers, checks=checks)

            run()
