"""The admin surface: an optional listener of its own, failed logins rate-limited per client,
and no short admin tokens."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx

from tests.conftest import Server
from tests.reliability.helpers import ADMIN, WEB, basic, config, track

BEARER = {"Authorization": f"Bearer {ADMIN}"}
PROFILE = "/v1/spaces/web/collections/users/profiles/user_id:u-1/traits"


def _admin_port(server: Server) -> int:
    info = json.loads((server.data_dir / "run" / "server.json").read_text())
    port: int = info["admin_port"]
    return port


def test_the_admin_listener_alone_serves_the_admin_paths(
        make_server: Callable[..., Server]) -> None:
    server = make_server(config(server_extra='admin_host = "127.0.0.1"\nadmin_port = 0'))
    admin = f"http://127.0.0.1:{_admin_port(server)}"
    with server.client() as public:
        for path in ["/api/v1/quarantine", PROFILE, "/openapi.json", "/docs", "/console/",
                     "/ui"]:
            response = public.get(path, headers=BEARER)
            assert response.status_code == 404, (path, response.status_code)
            assert response.json()["success"] is False
        assert public.post("/v1/track", json=track("on-public"), headers=WEB).status_code == 200
    with httpx.Client(base_url=admin, timeout=30) as client:
        assert client.get("/api/v1/quarantine", headers=BEARER).status_code == 200
        assert client.get("/api/v1/quarantine").status_code == 401
        assert client.get("/openapi.json").status_code == 200
        assert client.get(PROFILE, headers=basic(ADMIN)).status_code in (200, 404)
        assert client.post("/v1/track", json=track("on-admin"),
                           headers=BEARER).status_code == 404  # no tracking API here


def test_the_admin_paths_stay_on_the_main_port_by_default(server: Server) -> None:
    with server.client() as client:
        assert client.get("/api/v1/quarantine", headers=BEARER).status_code == 200
        assert client.get("/openapi.json").status_code == 200


def test_repeated_failed_admin_logins_get_429_per_client(
        make_server: Callable[..., Server]) -> None:
    server = make_server(config(server_extra="admin_auth_failures = 3"))
    wrong = {"Authorization": "Bearer not-the-admin-token"}
    with server.client() as client:
        for _ in range(3):
            assert client.get("/api/v1/quarantine", headers=wrong).status_code == 401
        refused = client.get("/api/v1/quarantine", headers=wrong)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["type"] == "rate_limit_error"
        # Blocked whatever the token: guessing on would tell nothing.
        assert client.get("/api/v1/quarantine", headers=BEARER).status_code == 429
        assert client.get(PROFILE, headers=basic(ADMIN)).status_code == 429
        # The tracking API is not the admin API: it still takes the write key.
        assert client.post("/v1/track", json=track("tracked"), headers=WEB).status_code == 200
    other = httpx.Client(base_url=server.url, timeout=30,
                         transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with other:
        assert other.get("/api/v1/quarantine", headers=BEARER).status_code == 200


def test_a_spoofed_peer_header_changes_nothing(make_server: Callable[..., Server]) -> None:
    server = make_server(config(server_extra="admin_auth_failures = 2"))
    wrong = {"Authorization": "Bearer not-the-admin-token"}
    with server.client() as client:
        for n in range(4):
            spoof = {**wrong, "X-Trackd-Peer": f"10.0.0.{n}"}
            status = client.get("/api/v1/quarantine", headers=spoof).status_code
            assert status == (401 if n < 2 else 429), (n, status)


def test_a_short_admin_token_is_refused_with_one_line(
        make_server: Callable[..., Server]) -> None:
    server = make_server('[server]\nadmin_token = "change-me"\n', start=False)
    result = server.run_cli("serve", check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "server.admin_token: must be at least 16 characters" in lines[0]


def test_wrong_tokens_on_the_console_login_count_with_the_admin_apis(
        make_server: Callable[..., Server]) -> None:
    server = make_server(config(server_extra="admin_auth_failures = 3"))
    with server.client() as client:
        for _ in range(3):
            wrong = client.post("/console/login", data={"token": "not-the-admin-token"})
            assert wrong.status_code == 401
            assert "That is not the admin token." in wrong.text
        refused = client.post("/console/login", data={"token": ADMIN})
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        # One throttle per client, whichever door it knocked on.
        assert client.get("/api/v1/quarantine", headers=BEARER).status_code == 429
    other = httpx.Client(base_url=server.url, timeout=30,
                         transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with other:
        assert other.post("/console/login", data={"token": ADMIN}).status_code == 303


def test_requests_without_any_credential_are_not_counted(
        make_server: Callable[..., Server]) -> None:
    """A console tab whose session expired keeps polling: it must not lock its user out."""
    server = make_server(config(server_extra="admin_auth_failures = 2"))
    with server.client() as client:
        for _ in range(5):
            assert client.get("/api/v1/quarantine").status_code == 401
        assert client.post("/console/login", data={"token": ADMIN}).status_code == 303
        assert client.get("/api/v1/quarantine", headers=BEARER).status_code == 200
