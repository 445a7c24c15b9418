"""The analytics.js settings endpoint never reflects a client's junk Host header: apiHost comes
from `server.public_url` when it is set, else from a well-formed Host only."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Server
from tests.gateway.helpers import running_server
from tests.reliability.helpers import config
from tests.server.rawhttp import exchange, request

SETTINGS = "/v1/projects/wk_web/settings"


def _segment(server: Server, host: str) -> dict[str, str]:
    answer = exchange(server.port, request(SETTINGS, host=host))
    assert answer is not None and answer.status == 200, answer
    segment: dict[str, str] = answer.json()["integrations"]["Segment.io"]
    return segment


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("settings") / "data") as server:
        yield server


def test_a_well_formed_host_is_used(live: Server) -> None:
    for host in ["track.example.com", "track.example.com:8443", "127.0.0.1:9000",
                 "[::1]:8088", "localhost"]:
        assert _segment(live, host) == {"apiKey": "wk_web", "apiHost": f"{host}/v1",
                                        "protocol": "http"}


def test_a_malformed_host_gives_the_servers_own_address(live: Server) -> None:
    for host in ["evil.example/path?x=", "evil.example\"><script>", "a b",
                 "evil.example@other", "-bad-.example", "x" * 300, "evil.example:99999999",
                 "", "evil.example:80:80", "%65vil.example", "[not-ipv6]"]:
        assert _segment(live, host)["apiHost"] == f"127.0.0.1:{live.port}/v1", host


def test_public_url_wins_over_any_host(make_server: Callable[..., Server]) -> None:
    server = make_server(config(server_extra='public_url = "https://track.example.com/t/"'))
    for host in ["evil.example", "127.0.0.1", "junk/../x"]:
        assert _segment(server, host) == {"apiKey": "wk_web",
                                          "apiHost": "track.example.com/t/v1",
                                          "protocol": "https"}


def test_a_public_url_that_is_not_a_url_stops_the_start(
        make_server: Callable[..., Server]) -> None:
    server = make_server(config(server_extra='public_url = "track.example.com"'),
                         start=False)
    result = server.run_cli("serve", check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "server.public_url: must be an http(s) URL" in lines[0], lines
