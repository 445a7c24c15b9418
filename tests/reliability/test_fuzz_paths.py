"""Arbitrary bytes in the request path and query string never get a 5xx.

Requests are written on a plain socket, so that the target reaches the server exactly as
generated (an HTTP client would normalise or refuse it): raw bytes, or bytes percent-encoded
(`%00`, `%0d%0a`, ...) after every prefix the gateway routes, with and without the admin token.
The answer is read with the standard library's response parser. Afterwards the server log
holds no traceback and no line per malformed request.
"""

from __future__ import annotations

import http.client
import socket
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Server
from tests.reliability.helpers import ADMIN, alive

PREFIXES = ["/", "/api/", "/api/v1/events/", "/api/v1/query", "/api/v1/quarantine",
            "/v1/spaces/", "/v1/spaces/s/collections/users/profiles/",
            "/v1/spaces/s/collections/users/profiles/user_id:u/events",
            "/v1/spaces/s/collections/accounts/profiles/group_id:", "/openapi.json", "/ui",
            "/docs", "/v1/", "/v1/track", "/v1/projects/", "/metrics", "/healthz"]
raw = st.binary(max_size=40)
encoded = raw.map(lambda b: quote_from_bytes(b, safe=b"").encode())
printable = st.binary(max_size=40).map(lambda b: bytes(c for c in b if 0x21 <= c <= 0x7e))
segments = encoded | printable | raw
queries = st.none() | st.builds(lambda k, v: k + b"=" + v,
                                st.sampled_from([b"next", b"limit", b"source", b"start", b"x"]),
                                segments) | segments
auth = st.sampled_from([b"", b"Authorization: Bearer " + ADMIN.encode() + b"\r\n",
                        b"Authorization: Basic dGVzdC1hZG1pbi10b2tlbjo=\r\n"])
fuzz = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def status_of(server: Server, method: bytes, target: bytes, headers: bytes) -> int | None:
    """The status of one request with exactly this target; None if the server just closed."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(method + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers
                     + b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        response = http.client.HTTPResponse(sock, method=method.decode())
        try:
            response.begin()
        except http.client.RemoteDisconnected:
            return None
        response.read()
        return response.status


requests = given(prefix=st.sampled_from(PREFIXES), path=segments, query=queries,
                 headers=auth, method=st.sampled_from([b"GET", b"GET", b"POST"]))


def probe(server: Server, prefix: str, path: bytes, query: bytes | None, headers: bytes,
          method: bytes) -> None:
    target = prefix.encode() + path + (b"?" + query if query is not None else b"")
    status = status_of(server, method, target, headers)
    assert status is None or status < 500, (target, status)


@fuzz
@requests
def test_arbitrary_bytes_in_paths_never_get_a_5xx(shared_server: Server, prefix: str,
                                                  path: bytes, query: bytes | None,
                                                  headers: bytes, method: bytes) -> None:
    probe(shared_server, prefix, path, query, headers, method)


@pytest.mark.slow
@settings(fuzz, max_examples=5000)
@requests
def test_many_more_arbitrary_paths_never_get_a_5xx(shared_server: Server, prefix: str,
                                                   path: bytes, query: bytes | None,
                                                   headers: bytes, method: bytes) -> None:
    probe(shared_server, prefix, path, query, headers, method)


def test_the_probes_of_the_report_get_4xx(shared_server: Server) -> None:
    bearer = b"Authorization: Bearer " + ADMIN.encode() + b"\r\n"
    for target in [b"/api/%00", b"/v1/spaces/%00", b"/openapi.json%00",
                   b"/api/v1/events/%0d%0aSet-Cookie:%20x", b"/api/v1/events/%ff%fe",
                   b"/v1/spaces/s/collections/users/profiles/user_id:u/events?next="
                   + b"9" * 5000,
                   b"/v1/spaces/s/collections/users/profiles/user_id:u/events?limit="
                   + b"9" * 5000]:
        for headers in (b"", bearer):
            status = status_of(shared_server, b"GET", target, headers)
            assert status is not None and 400 <= status < 500, (target[:60], headers, status)


def test_no_traceback_in_the_log_after_fuzzing(shared_server: Server) -> None:
    assert alive(shared_server)
    log = shared_server.output.read_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
    assert "Invalid HTTP request" not in log  # no line per malformed request either
