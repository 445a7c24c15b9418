"""Settings that change the tracking API: a CORS allow-list and trusted proxies."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Server
from tests.gateway.helpers import QUIET, new_id, post, running_server, stored_one

CONFIG = """
[server]
cors_origins = ["https://good.example"]
trusted_proxies = ["127.0.0.1"]

[[sources]]
name = "web"
write_keys = ["wk_web"]
""" + QUIET


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("configured") / "data", CONFIG) as server:
        yield server


def preflight(server: Server, origin: str) -> httpx.Response:
    return httpx.options(server.url + "/v1/t", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization"})


def test_cors_allow_list_admits_listed_origins_only(configured: Server) -> None:
    good = preflight(configured, "https://good.example")
    assert good.headers["access-control-allow-origin"] == "https://good.example"
    assert "origin" in good.headers.get("vary", "").lower()
    assert "access-control-allow-origin" not in preflight(configured,
                                                          "https://evil.example").headers
    answer = post(configured, "/v1/t", {"userId": "u", "event": "E"},
                  headers={"Origin": "https://good.example"})
    assert answer.headers["access-control-allow-origin"] == "https://good.example"
    answer = post(configured, "/v1/t", {"userId": "u", "event": "E"},
                  headers={"Origin": "https://evil.example"})
    assert answer.status_code == 200  # CORS is the browser's business; the server stores it
    assert "access-control-allow-origin" not in answer.headers


def test_x_forwarded_for_sets_the_ip_behind_a_trusted_proxy(configured: Server) -> None:
    forwarded, direct, own = new_id(), new_id(), new_id()
    post(configured, "/v1/track", {"userId": "u", "event": "E", "messageId": forwarded},
         headers={"X-Forwarded-For": "198.51.100.7, 10.0.0.1"})
    post(configured, "/v1/track", {"userId": "u", "event": "E", "messageId": direct})
    post(configured, "/v1/track", {"userId": "u", "event": "E", "messageId": own,
                                   "context": {"ip": "192.0.2.1"}},
         headers={"X-Forwarded-For": "198.51.100.7"})
    assert stored_one(configured, forwarded)["context"]["ip"] == "198.51.100.7"
    assert stored_one(configured, direct)["context"]["ip"] == "127.0.0.1"
    assert stored_one(configured, own)["context"]["ip"] == "192.0.2.1"
