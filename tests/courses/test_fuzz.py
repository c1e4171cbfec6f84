"""Schemathesis fuzzes the course API over real HTTP against the pytest-jupyter server.

Generated from docs/openapi.yaml: valid and invalid path parameters, query strings and
bodies for every operation. Every response must be a non-5xx, documented status with a
JSON body matching its documented schema.

Schemathesis' HTTP client is synchronous, and the server runs on this test's event loop,
so the fuzzing runs in a worker thread while the loop keeps serving. It logs in as
Jupyter does by default: the server's token in the ``Authorization`` header.
"""

from __future__ import annotations

import asyncio
import traceback
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from jupyter_server.auth.authorizer import AllowAllAuthorizer
from jupyter_server.auth.identity import IdentityProvider
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from ._server import *  # the server fixtures

SPEC_PATH = Path(__file__).parents[2] / "docs" / "openapi.yaml"
#: Examples per operation and generation mode: enough to reach every validation branch,
#: few enough that the whole run stays well under a minute on a shared machine.
EXAMPLES = 30
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def server_config_overrides() -> dict[str, Any]:
    """Jupyter's stock token login, and an authorizer that allows the token holder."""
    return {
        "ServerApp": {
            "identity_provider_class": IdentityProvider,
            "authorizer_class": AllowAllAuthorizer,
        }
    }


#: Real path parameters, so that generated bodies reach the quiz checker and the
#: instructor's mark instead of stopping at "no such course".
REAL_PATH = {"course_id": "intro", "stage": 1, "user": "alice"}


def _fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    base_url: str,
    headers: dict[str, str],
    session: requests.Session,
    path_parameters: dict[str, Any] | None = None,
) -> int:
    """Run one operation's examples; the number of requests sent. Raises on a failure."""
    sent = 0
    checks = list(CHECKS)
    # Negative data must be refused with a 4xx; except unknown query parameters, which
    # the API ignores, like Jupyter's own APIs do.
    if mode is GenerationMode.NEGATIVE and not operation.query:
        checks.append(negative_data_rejection)
    # The token is fixed, so that negative cases vary the parameters and bodies rather
    # than the login (which tests/courses/test_handlers.py covers).
    strategy = operation.as_strategy(
        generation_mode=mode, headers=headers, path_parameters=path_parameters
    )

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=strategy)
    def run(case: Any) -> None:
        nonlocal sent
        # Jupyter answers a token login with a login cookie; none is kept between cases.
        session.cookies.clear()
        response = case.call(base_url=base_url, session=session, timeout=20)
        sent += 1
        case.validate_response(response, checks=checks)

    run()
    return sent


def _fuzz_all(base_url: str, headers: dict[str, str]) -> tuple[int, list[str]]:
    """Every operation, positive and negative, then again with real path parameters."""
    schema = schemathesis.openapi.from_path(SPEC_PATH)
    failures: list[str] = []
    sent = 0
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            path_names = {p.name for p in operation.path_parameters}
            real = {k: v for k, v in REAL_PATH.items() if k in path_names}
            runs: list[tuple[GenerationMode, dict[str, Any] | None]] = [
                (GenerationMode.POSITIVE, None)
            ]
            if real:
                runs.append((GenerationMode.POSITIVE, real))
            for fixed in (None, real) if real else (None,):
                # Negative data needs something left to break (the token is fixed).
                if path_names - set(fixed or ()) or len(operation.query) or len(operation.body):
                    runs.append((GenerationMode.NEGATIVE, fixed))
            for mode, fixed in runs:
                try:
                    sent += _fuzz_operation(operation, mode, base_url, headers, session, fixed)
                except BaseException as error:  # hypothesis raises exception groups
                    if isinstance(error, (KeyboardInterrupt, SystemExit)):
                        raise
                    failures.append(
                        f"{operation.label} [{mode.value}, {fixed}]:\n{traceback.format_exc()}"
                    )
    return sent, failures


async def test_fuzz_the_api(
    jp_serverapp: Any,
    http_server: Any,  # pytest-tornasync's server on jp_http_port (not started otherwise)
    jp_http_port: int,
    jp_base_url: str,
    jp_auth_header: dict[str, str],
) -> None:
    base_url = f"http://127.0.0.1:{jp_http_port}{jp_base_url.rstrip('/')}"
    headers = dict(jp_auth_header)
    sent, failures = await asyncio.to_thread(_fuzz_all, base_url, headers)
    assert not failures, "\n\n".join(failures)[:20_000]
    assert sent >= 9 * 2 * 5, f"only {sent} requests were sent"
    # the server still serves after the run
    status = await asyncio.to_thread(
        requests.get, f"{base_url}/claude-pods/api/status", headers=headers, timeout=20
    )
    assert status.status_code == 200
