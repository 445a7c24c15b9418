"""Write keys open only their own source; the admin and Profile APIs open only to the admin
token, never to a write key."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Server, eventually
from tests.reliability.helpers import ADMIN, basic, log_counts, message_id, track

TRACK_PATHS = ["/v1/track", "/v1/identify", "/v1/page", "/v1/screen", "/v1/group", "/v1/alias",
               "/v1/t", "/v1/batch", "/v1/import", "/v1/b"]
BAD_KEYS: list[tuple[str, dict[str, str], str | None]] = [
    ("missing", {}, None),
    ("wrong basic", basic("wk_nope"), None),
    ("wrong body", {}, "wk_nope"),
    ("empty basic", basic(""), None),
    ("bearer only", {"Authorization": "Bearer wk_web"}, None),
    ("admin token as write key", basic(ADMIN), None),
    ("garbage header", {"Authorization": "Basic !!!not-base64"}, None),
]


def _body(path: str, mid: str, key: str | None) -> dict[str, object]:
    message = {**track(mid), "groupId": "g", "previousId": "p"}
    if key is not None:
        message["writeKey"] = key
    if path in ("/v1/batch", "/v1/import", "/v1/b"):
        envelope: dict[str, object] = {"batch": [message]}
        if key is not None:
            envelope["writeKey"] = key
        return envelope
    return message


@pytest.mark.parametrize("path", TRACK_PATHS)
def test_missing_or_wrong_write_key_gets_401_and_stores_nothing(server: Server,
                                                                path: str) -> None:
    sent: list[str] = []
    with server.client() as client:
        for label, headers, key in BAD_KEYS:
            mid = message_id("denied")
            sent.append(mid)
            response = client.post(path, json=_body(path, mid, key), headers=headers)
            assert response.status_code == 401, (label, response.status_code, response.text)
            assert response.json()["error"]["type"] == "authentication_error", label
        # control: the same request with the right key is stored
        ok = message_id("allowed")
        assert client.post(path, json=_body(path, ok, "wk_web")).status_code == 200
    counts = log_counts(server.data_dir)
    assert not [m for m in sent if counts[m]], "a refused request was stored"
    assert counts[ok] == 1
    quarantine = httpx.get(server.url + "/api/v1/quarantine", timeout=30,
                           headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert not [q for q in quarantine["quarantined"] if str(q).find("denied-") >= 0]


def test_other_sources_key_stores_under_its_own_source_only(server: Server) -> None:
    mid = message_id("backend")
    response = httpx.post(server.url + "/v1/track", json=track(mid),
                          headers=basic("wk_backend"), timeout=30)
    assert response.status_code == 200
    assert log_counts(server.data_dir, "web")[mid] == 0
    assert log_counts(server.data_dir, "backend")[mid] == 1


ADMIN_REQUESTS = [
    ("POST", "/api/v1/query", {"sql": "SELECT 1"}),
    ("GET", "/api/v1/events/some-id", None),
    ("GET", "/api/v1/quarantine", None),
    ("GET", "/api/v1/quarantine?source=web", None),
]
PROFILE_PATHS = [
    "/v1/spaces/web/collections/users/profiles/user_id:u-1/traits",
    "/v1/spaces/web/collections/users/profiles/user_id:u-1/events",
    "/v1/spaces/web/collections/users/profiles/anonymous_id:a/external_ids",
]
REFUSED_CREDENTIALS = {
    "missing": {},
    "wrong bearer": {"Authorization": "Bearer not-the-token"},
    "empty bearer": {"Authorization": "Bearer"},
    "write key bearer": {"Authorization": "Bearer wk_web"},
    "write key basic": basic("wk_web"),
    "other write key basic": basic("wk_backend"),
    "write key as basic password": basic("wk_web", ADMIN + "x"),
    "token prefix": {"Authorization": f"Bearer {ADMIN[:-1]}"},
    "token suffix": {"Authorization": f"Bearer {ADMIN}x"},
    "basic for /api": basic(ADMIN),
}


@pytest.mark.parametrize("label", sorted(REFUSED_CREDENTIALS))
def test_admin_api_refuses_anything_but_the_admin_bearer_token(server: Server,
                                                               label: str) -> None:
    headers = REFUSED_CREDENTIALS[label]
    with server.client() as client:
        for method, path, body in ADMIN_REQUESTS:
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (label, path, response.status_code)


@pytest.mark.parametrize("label", sorted(set(REFUSED_CREDENTIALS) - {"basic for /api"}))
def test_profile_api_refuses_anything_but_the_admin_token(server: Server, label: str) -> None:
    headers = REFUSED_CREDENTIALS[label]
    with server.client() as client:
        for path in PROFILE_PATHS:
            response = client.get(path, headers=headers)
            assert response.status_code == 401, (label, path, response.status_code)


def test_admin_token_opens_admin_api(server: Server) -> None:
    with server.client() as client:
        bearer = {"Authorization": f"Bearer {ADMIN}"}
        assert client.get("/api/v1/quarantine", headers=bearer).json() == {"quarantined": []}
        response = client.post("/api/v1/query", json={"sql": "SELECT 1 AS one"},
                               headers=bearer)
        assert response.status_code == 200, response.text
        assert response.json() == {"columns": ["one"], "rows": [{"one": 1}], "truncated": False}


def test_admin_token_opens_profile_api(server: Server) -> None:
    identify = {"type": "identify", "userId": "u-1", "anonymousId": "a",
                "messageId": message_id("profile"), "traits": {"plan": "pro"}}
    with server.client() as client:
        assert client.post("/v1/identify", json=identify,
                           headers=basic("wk_web")).status_code == 200
        bearer = {"Authorization": f"Bearer {ADMIN}"}
        eventually(lambda: client.get(PROFILE_PATHS[0], headers=bearer).status_code == 200)
        for path in PROFILE_PATHS:
            for headers in (bearer, basic(ADMIN)):
                response = client.get(path, headers=headers)
                assert response.status_code == 200, (path, response.text)
        traits = client.get(PROFILE_PATHS[0], headers=bearer).json()["traits"]
        assert traits == {"plan": "pro"}
        events = client.get(PROFILE_PATHS[1], headers=bearer).json()["data"]
        assert [e["message_id"] for e in events] == [identify["messageId"]]
        ids = client.get(PROFILE_PATHS[2], headers=bearer).json()["data"]
        assert sorted((i["type"], i["id"]) for i in ids) == [("anonymous_id", "a"),
                                                             ("user_id", "u-1")]
        unknown = PROFILE_PATHS[0].replace("user_id:u-1", "user_id:nobody")
        assert client.get(unknown, headers=bearer).status_code == 404
        assert client.get(PROFILE_PATHS[0], headers=basic(ADMIN + "x")).status_code == 401


WRITES = [
    "DELETE FROM web.tracks",
    "DROP TABLE web.tracks",
    "INSERT INTO web.tracks (id) VALUES ('x')",
    "CREATE TABLE web.evil AS SELECT 1",
    "UPDATE web.tracks SET event = 'x'",
    "COPY (SELECT 1) TO '/tmp/trackd-reliability-copy.csv'",
    "ATTACH '/tmp/trackd-reliability-attach.duckdb' AS evil",
    "SELECT 1; DELETE FROM web.tracks",
    "PRAGMA enable_profiling",
    "INSTALL httpfs",
]


def test_admin_query_is_read_only(server: Server) -> None:
    bearer = {"Authorization": f"Bearer {ADMIN}"}
    with server.client() as client:
        mid = message_id("readonly")
        assert client.post("/v1/track", json=track(mid), headers=basic("wk_web")).status_code == 200

        def count() -> int:
            response = client.post("/api/v1/query", headers=bearer, json={
                "sql": f"SELECT count(*) AS n FROM web.tracks WHERE id = '{mid}'"})
            if response.status_code == 400 and "does not exist" in response.text:
                return 0  # the table is made by the first load
            assert response.status_code == 200, response.text
            return int(response.json()["rows"][0]["n"])
        eventually(count)
        for sql in WRITES:
            response = client.post("/api/v1/query", json={"sql": sql}, headers=bearer)
            assert response.status_code == 400, (sql, response.status_code, response.text[:300])
        assert count() == 1
