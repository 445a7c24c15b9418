"""Who may see the console: the admin token or its session; never a write key. Over real HTTP
against a real `trackd serve`."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, eventually
from tests.console.conftest import ADMIN_TOKEN, CONSOLE_CONFIG, WRITE_KEY
from tests.gateway.helpers import post, running_server
from trackd.console.session import COOKIE

PAGES = ["/console/", "/console/live", "/console/events", "/console/events/some-id",
         "/console/schema", "/console/schema/event?source=web&type=track&event=x",
         "/console/quarantine", "/console/destinations", "/console/query?sql=select+1",
         "/console/query.csv?sql=select+1", "/console/violations"]
APIS = ["/api/v1/live", "/api/v1/overview", "/api/v1/volume", "/api/v1/lag",
        "/api/v1/destinations", "/api/v1/schema", "/api/v1/violations"]
WRITE_KEY_CREDENTIALS = [{"Authorization": f"Bearer {WRITE_KEY}"},
                         {"Authorization": "Basic d2tfd2ViOg=="},  # wk_web:
                         {"Cookie": f"trackd_session={WRITE_KEY}"}]


def login(server: Server, client: httpx.Client) -> str:
    """Log in with the form; returns the session's CSRF token (read from a page)."""
    response = client.post("/console/login", data={"token": ADMIN_TOKEN})
    assert response.status_code == 303, response.text
    page = client.get("/console/destinations").text
    match = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert match is not None
    return match.group(1)


def test_pages_redirect_to_the_login_and_apis_answer_401_without_a_session(
        console_server: Server) -> None:
    with httpx.Client(base_url=console_server.url, timeout=30) as client:
        for credentials in [{}, *WRITE_KEY_CREDENTIALS]:
            for path in PAGES:
                response = client.get(path, headers=credentials)
                assert response.status_code == 303, (path, credentials)
                assert response.headers["location"].startswith("/console/login")
            for path in APIS:
                response = client.get(path, headers=credentials)
                assert response.status_code == 401, (path, credentials)
        assert client.get("/").headers["location"] == "/console/"


def test_a_write_key_never_logs_in(console_server: Server) -> None:
    with httpx.Client(base_url=console_server.url, timeout=30) as client:
        refused = client.post("/console/login", data={"token": WRITE_KEY})
        assert refused.status_code == 401
        assert "That is not the admin token." in refused.text
        assert "set-cookie" not in refused.headers
        assert client.get("/console/").status_code == 303


def test_the_session_cookie_is_signed_http_only_strict_and_lasts_12_hours(
        console_server: Server) -> None:
    with httpx.Client(base_url=console_server.url, timeout=30) as client:
        response = client.post("/console/login", data={"token": ADMIN_TOKEN,
                                                       "next": "/console/live"})
        assert response.headers["location"] == "/console/live"
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert "Max-Age=43200" in cookie and "Secure" not in cookie
        assert client.get("/console/live").status_code == 200
        value = client.cookies["trackd_session"]
        forged = value[:-4] + ("AAAA" if not value.endswith("AAAA") else "BBBB")
    with httpx.Client(base_url=console_server.url, timeout=30) as other:
        assert other.get("/console/", headers={"Cookie": f"trackd_session={forged}"}
                         ).status_code == 303
        secure = other.post("/console/login", data={"token": ADMIN_TOKEN},
                            headers={"X-Forwarded-Proto": "https"})
        assert "; Secure" in secure.headers["set-cookie"]


def test_the_admin_token_opens_pages_without_a_session(console_server: Server) -> None:
    with httpx.Client(base_url=console_server.url, timeout=30) as client:
        bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        for path in PAGES:
            response = client.get(path, headers=bearer)
            if "event=x" in path:  # an event never sent: a clear line, 404
                assert response.status_code == 404
                assert "has not sent that event" in response.text
            else:
                assert response.status_code == 200, path


def test_an_action_without_its_csrf_token_is_refused(console_server: Server) -> None:
    with httpx.Client(base_url=console_server.url, timeout=30) as client:
        csrf = login(console_server, client)
        action = "/console/destinations/broken-hook/replay"
        assert client.post(action).status_code == 403
        assert client.post(action, data={"csrf": "wrong"}).status_code == 403
        assert client.post("/api/v1/query", json={"sql": "select 1"}).status_code == 403
        assert client.post("/api/v1/query", json={"sql": "select 1"},
                           headers={"X-CSRF-Token": csrf}).status_code == 200
        done = client.post(action, data={"csrf": csrf})
        assert done.status_code == 303
        assert "Replayed" in httpx.URL(done.headers["location"]).params["replayed"]
        # logging out ends the session
        assert client.post("/console/logout", data={"csrf": csrf}).status_code == 303
        assert client.get("/console/").status_code == 303


def test_a_logged_out_session_stays_ended_after_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data, CONSOLE_CONFIG, workers=2) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            csrf = login(server, client)
            cookie = client.cookies[COOKIE]
            assert client.post("/console/logout", data={"csrf": csrf}).status_code == 303
        # the browser forgets the cookie; someone who kept a copy gets the login page
        for _ in range(4):  # whichever worker answers
            with httpx.Client(base_url=server.url, cookies={COOKIE: cookie}) as kept:
                assert kept.get("/console/").status_code == 303
                assert kept.get("/api/v1/overview").status_code == 401
        server.stop(timeout=30)
        server.port = 0
        server.start()
        with httpx.Client(base_url=server.url, cookies={COOKIE: cookie}) as kept:
            assert kept.get("/console/").status_code == 303
            assert kept.get("/api/v1/overview").status_code == 401
        assert (data / "console" / "revoked-sessions").stat().st_mode & 0o777 == 0o600
        with httpx.Client(base_url=server.url, timeout=30) as client:
            login(server, client)  # a new session is fine
            assert client.get("/console/").status_code == 200


def test_dead_letters_are_listed_and_replayed_from_the_destinations_page(
        console_server: Server) -> None:
    assert post(console_server, "/v1/track", {"userId": "dl-user", "event": "Dead Letter",
                                              "messageId": "console-dead-1"}).status_code == 200
    with httpx.Client(base_url=console_server.url, timeout=30) as client:
        csrf = login(console_server, client)
        page = eventually(lambda: (t := client.get("/console/destinations").text)
                          and "console-dead-1" in t and t)
        assert "failing" in page and "Replay" in page
        done = client.post("/console/destinations/broken-hook/replay", data={"csrf": csrf},
                           follow_redirects=True)
        assert "failed" in done.text  # the hook is still down: one clear line says so
        assert "Traceback" not in done.text


def read_stream(server: Server, query: str, seconds: float, sink: list[str],
                headers: dict[str, str]) -> None:
    with httpx.stream("GET", f"{server.url}/api/v1/live?{query}", headers=headers,
                      timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        deadline = time.monotonic() + seconds
        for line in response.iter_lines():
            sink.append(line)
            if time.monotonic() > deadline:
                break


def test_the_live_stream_filters_and_never_carries_the_write_key(console_server: Server) -> None:
    bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    everything: list[str] = []
    only_refused: list[str] = []
    readers = [threading.Thread(target=read_stream, args=(console_server, "", 4, everything,
                                                          bearer)),
               threading.Thread(target=read_stream, args=(
                   console_server, "status=refused&source=web", 4, only_refused, bearer))]
    for reader in readers:
        reader.start()
    eventually(lambda: everything and only_refused)  # both connected
    tag = f"live-{time.time_ns()}"
    assert post(console_server, "/v1/track", {"userId": tag, "event": "Streamed",
                                              "writeKey": WRITE_KEY,
                                              "messageId": f"{tag}-ok"}).status_code == 200
    assert post(console_server, "/v1/track", {"event": "No User", "writeKey": WRITE_KEY,
                                              "messageId": f"{tag}-bad"},
                key=None).status_code == 400
    for reader in readers:
        reader.join(30)
    events = [json.loads(line[6:]) for line in everything if line.startswith("data: ")]
    mine = {e["messageId"]: e for e in events if str(e["messageId"]).startswith(tag)}
    assert mine[f"{tag}-ok"]["status"] == "accepted"
    assert mine[f"{tag}-ok"]["message"]["event"] == "Streamed"
    assert mine[f"{tag}-bad"]["status"] == "refused"
    assert "userId or anonymousId" in mine[f"{tag}-bad"]["reason"]
    refused = [json.loads(line[6:]) for line in only_refused if line.startswith("data: ")]
    assert {e["status"] for e in refused} == {"refused"}
    assert f"{tag}-bad" in {e["messageId"] for e in refused}
    assert WRITE_KEY not in "\n".join(everything + only_refused)


def test_a_message_logged_once_the_stream_answered_is_on_it(console_server: Server) -> None:
    """The server subscribes before it answers: a client that has the headers (the browser's
    `open` event, which the live view shows as "live") misses nothing sent after them."""
    bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for attempt in range(5):
        tag = f"first-{attempt}-{time.time_ns()}"
        with httpx.stream("GET", f"{console_server.url}/api/v1/live?type=track",
                          headers=bearer, timeout=30) as response:
            assert response.status_code == 200
            assert post(console_server, "/v1/track", {"userId": "u", "event": "First",
                                                      "messageId": tag}).status_code == 200
            deadline = time.monotonic() + 20
            for line in response.iter_lines():
                if tag in line or time.monotonic() > deadline:
                    break
            assert tag in line, f"attempt {attempt}: the message never came on the stream"


def test_the_write_key_never_appears_in_a_page(console_server: Server) -> None:
    assert post(console_server, "/v1/track", {"event": "Leaky", "writeKey": WRITE_KEY,
                                              "messageId": "console-leak-1"},
                key=None).status_code == 400
    with httpx.Client(base_url=console_server.url, timeout=30) as client:
        login(console_server, client)
        eventually(lambda: "console-leak-1" in client.get("/console/quarantine").text)
        for path in [*PAGES, "/console/events/console-leak-1", "/api/v1/overview",
                     "/api/v1/schema", "/api/v1/destinations"]:
            text = client.get(path).text
            assert WRITE_KEY not in text, path


def test_health_readiness_and_status(console_server: Server) -> None:
    assert httpx.get(console_server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(console_server.url + "/readyz")
    assert ready.status_code == 200
    stages = {s["name"]: s for s in ready.json()["stages"]}
    assert set(stages) == {"warehouse", "archive", "destination:broken-hook"}
    assert all(s["state"] == "running" and "messages" in s["lag"] for s in stages.values())
    assert ADMIN_TOKEN not in ready.text and WRITE_KEY not in ready.text
    result = console_server.run_cli("status")
    assert "accepting messages" in result.stdout
    assert "pipeline: ready" in result.stdout
    assert "warehouse" in result.stdout and "free" in result.stdout


def test_first_load_of_every_page_is_at_most_300_kb(console_server: Server) -> None:
    with httpx.Client(base_url=console_server.url, timeout=30) as client:
        login(console_server, client)
        for path in PAGES[:-1]:
            page = client.get(path)
            total = len(page.content)
            assets = re.findall(r'(?:src|href)="(/console/static/[^"]+)"', page.text)
            for asset in assets:
                response = client.get(asset)
                assert response.status_code == 200, asset
                total += len(response.content)
            assert total <= 300 * 1024, (path, total)


@pytest.mark.parametrize("disabled", ["false"])
def test_console_false_turns_it_off(make_server, disabled: str) -> None:
    server = make_server(env={"TRACKD_SERVER_CONSOLE": disabled})
    bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert httpx.get(server.url + "/console/", headers=bearer).status_code == 404
    assert httpx.get(server.url + "/api/v1/live", headers=bearer).status_code == 404
    assert httpx.post(server.url + "/api/v1/query", headers=bearer,
                      json={"sql": "select 1"}).status_code == 200


def test_one_visitors_session_never_opens_the_console_for_another(console_server: Server) -> None:
    with httpx.Client(base_url=console_server.url, timeout=30) as visitor:
        login(console_server, visitor)
        assert visitor.get("/console/").status_code == 200
        with httpx.Client(base_url=console_server.url, timeout=30) as stranger:
            for path in ("/console/", "/console/live", "/api/v1/overview"):
                assert stranger.get(path).status_code in (303, 401), path


def test_an_open_live_stream_does_not_hold_up_a_shutdown(make_server) -> None:
    # With shutdown_timeout = 30, a worker waiting for the stream would take 30 s to stop.
    server = make_server(env={"TRACKD_SERVER_SHUTDOWN_TIMEOUT": "30"})
    lines: list[str] = []
    reader = threading.Thread(target=read_stream, args=(
        server, "", 120, lines, {"Authorization": f"Bearer {ADMIN_TOKEN}"}), daemon=True)
    reader.start()
    eventually(lambda: lines)
    assert server.stop(timeout=20) == 0
    reader.join(20)
    assert not reader.is_alive()
