"""Arbitrary bodies, headers and methods on every public path never get a 5xx."""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Server
from tests.reliability.helpers import WEB, basic, running_workers
from tests.reliability.test_validators import json_like, known_keys

TRACKING = ["/v1/track", "/v1/identify", "/v1/page", "/v1/screen", "/v1/group", "/v1/alias",
            "/v1/t", "/v1/i", "/v1/p", "/v1/s", "/v1/g", "/v1/a", "/v1/batch", "/v1/import",
            "/v1/b", "/v1/m"]
OTHER = ["/healthz", "/readyz", "/metrics", "/v1/projects/wk_web/settings", "/openapi.json",
         "/api/v1/query", "/api/v1/quarantine", "/api/v1/events/x",
         "/v1/spaces/web/collections/users/profiles/user_id:u/traits", "/nope", "/"]
paths = st.sampled_from(TRACKING + OTHER)
auth = st.sampled_from([{}, WEB, basic("wk_backend"), basic("wrong"),
                        {"Authorization": "Bearer test-admin-token"}])
encodings = st.sampled_from([None, "gzip", "deflate", "br", "identity", "x-gzip"])
fuzz = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def _check(server: Server, response: httpx.Response, workers: set[int]) -> None:
    assert response.status_code < 500 or response.status_code == 503, (
        response.status_code, response.text[:300])
    assert running_workers(server) == workers, "a worker died (and was restarted)"


@fuzz
@given(path=paths, body=st.binary(max_size=2000), headers=auth, encoding=encodings,
       method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE", "OPTIONS"]))
def test_arbitrary_bytes_never_get_a_5xx(shared_server: Server, workers: set[int], path: str,
                                         body: bytes, headers: dict[str, str],
                                         encoding: str | None, method: str) -> None:
    extra = {"Content-Encoding": encoding} if encoding else {}
    response = httpx.request(method, shared_server.url + path, content=body,
                             headers={**headers, **extra}, timeout=30)
    _check(shared_server, response, workers)


batch_items = st.lists(st.dictionaries(known_keys | st.text(max_size=10), json_like,
                                       max_size=8) | json_like, max_size=5)


@fuzz
@given(path=paths, doc=st.dictionaries(known_keys | st.just("batch") | st.just("writeKey"),
                                       json_like | batch_items, max_size=10),
       headers=auth)
def test_arbitrary_json_never_gets_a_5xx(shared_server: Server, workers: set[int], path: str,
                                         doc: dict[str, Any], headers: dict[str, str]) -> None:
    body = json.dumps(doc, allow_nan=True).encode()
    response = httpx.post(shared_server.url + path, content=body, headers=headers, timeout=30)
    _check(shared_server, response, workers)


@fuzz
@given(items=batch_items)
def test_arbitrary_batches_with_a_valid_key_never_get_a_5xx(shared_server: Server,
                                                            workers: set[int],
                                                            items: list[Any]) -> None:
    response = httpx.post(shared_server.url + "/v1/batch", headers=WEB, timeout=30,
                          content=json.dumps({"batch": items}, allow_nan=True).encode())
    _check(shared_server, response, workers)
    assert response.status_code in (200, 400, 413), response.text[:300]

