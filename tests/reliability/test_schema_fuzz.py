"""schemathesis against the /openapi.json a running server publishes: no request generated
from the document (valid or not) gets a 5xx other than a 503 with Retry-After."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.conftest import Server
from tests.reliability.helpers import WEB, running_workers


@pytest.fixture(scope="module")
def published_schema(shared_server: Server) -> Any:
    return schemathesis.openapi.from_url(shared_server.url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("published_schema")


def _no_5xx(case: Any, headers: dict[str, str], server: Server, workers: set[int]) -> None:
    response = case.call(headers=headers, timeout=30)
    status = response.status_code
    assert status < 500 or (status == 503 and response.headers.get("retry-after")), (
        case.method, case.path, status, response.text[:300])
    assert running_workers(server) == workers, "a worker died (and was restarted)"


@schema.parametrize()
@settings(max_examples=15, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_documented_operations_never_get_a_5xx(case: Any, shared_server: Server,
                                               workers: set[int]) -> None:
    _no_5xx(case, WEB, shared_server, workers)


@schema.parametrize()
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
def test_documented_operations_without_a_key_never_get_a_5xx(case: Any, shared_server: Server,
                                                             workers: set[int]) -> None:
    _no_5xx(case, {}, shared_server, workers)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_documented_operations_at_length(case: Any, shared_server: Server,
                                         workers: set[int]) -> None:
    _no_5xx(case, WEB, shared_server, workers)
